-- The relay deletes the rows it published from memory by message id.
CREATE INDEX IF NOT EXISTS outbox_message_id ON outbox (message_id);
