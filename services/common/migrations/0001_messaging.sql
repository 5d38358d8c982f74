-- Transactional outbox: rows written in the same transaction as the state
-- change that causes them, deleted once the broker has confirmed them.
CREATE TABLE IF NOT EXISTS outbox (
    seq            BIGSERIAL PRIMARY KEY,
    message_id     UUID        NOT NULL,
    message_type   TEXT        NOT NULL,
    routing_key    TEXT        NOT NULL,
    correlation_id TEXT        NOT NULL,
    traceparent    TEXT        NOT NULL,
    payload        BYTEA       NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Inbox: the id of every message handled, written in the same transaction as
-- its effect, so a redelivery or a duplicate has no second effect.
CREATE TABLE IF NOT EXISTS inbox (
    message_id   UUID PRIMARY KEY,
    message_type TEXT        NOT NULL,
    handled_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS inbox_handled_at ON inbox (handled_at);
