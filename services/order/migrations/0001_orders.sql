CREATE TABLE orders (
    id             UUID PRIMARY KEY,          -- UUIDv7: time-ordered, used as the list cursor
    customer_id    TEXT        NOT NULL,
    status         TEXT        NOT NULL,      -- PENDING | COMPLETED | FAILED | CANCELLED
    saga           JSONB       NOT NULL,      -- the saga state machine (see src/saga)
    items          JSONB       NOT NULL,      -- [{sku, quantity, unit_price_cents}]
    total_cents    BIGINT,
    failure_reason TEXT,
    correlation_id TEXT        NOT NULL,
    traceparent    TEXT        NOT NULL,
    deadline       TIMESTAMPTZ,               -- when the awaited reply times out; NULL when none is awaited
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_by_customer ON orders (customer_id, id DESC);
CREATE INDEX orders_by_status ON orders (status, id DESC);
CREATE INDEX orders_by_deadline ON orders (deadline) WHERE deadline IS NOT NULL;

-- The saga timeline: every step, command, reply and compensation.
CREATE TABLE saga_events (
    seq      BIGSERIAL PRIMARY KEY,
    order_id UUID        NOT NULL REFERENCES orders (id),
    at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    kind     TEXT        NOT NULL,
    detail   JSONB       NOT NULL
);
CREATE INDEX saga_events_by_order ON saga_events (order_id, seq);

CREATE TABLE idempotency_keys (
    customer_id  TEXT        NOT NULL,
    key          TEXT        NOT NULL,
    request_hash BYTEA       NOT NULL,
    order_id     UUID        NOT NULL REFERENCES orders (id),
    response     JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, key)
);
