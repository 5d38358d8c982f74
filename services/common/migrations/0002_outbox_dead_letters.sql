-- Outbox rows the relay can never publish (too long for an AMQP frame, or no
-- destination), moved here with the reason so the rows behind them flow.
-- Kept for an operator to inspect; nothing reads them automatically.
CREATE TABLE IF NOT EXISTS outbox_dead_letters (
    seq            BIGSERIAL PRIMARY KEY,
    message_id     UUID        NOT NULL,
    message_type   TEXT        NOT NULL,
    routing_key    TEXT        NOT NULL,
    correlation_id TEXT        NOT NULL,
    traceparent    TEXT        NOT NULL,
    payload        BYTEA       NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    reason         TEXT        NOT NULL,
    set_aside_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
