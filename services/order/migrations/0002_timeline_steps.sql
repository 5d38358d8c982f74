-- One timeline row per saga step: the event in kind/detail, what it caused
-- (state change, commands sent) in `follow` as [{kind, detail}, ...].
-- Rows without `follow` read as before.
ALTER TABLE saga_events ADD COLUMN follow JSONB;
