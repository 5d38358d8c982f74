-- W3C tracestate beside the traceparent: the relay's publish continues the
-- trace of the transaction that wrote the row, vendor state included.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS tracestate TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox_dead_letters ADD COLUMN IF NOT EXISTS tracestate TEXT NOT NULL DEFAULT '';
