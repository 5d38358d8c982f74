-- Where notifications go. One table for both channels: a webhook (target =
-- its URL, secret = its signing secret) or an e-mail address. `owner` is the
-- customer who registered it (a token's sub); an admin endpoint
-- (all_customers) receives every customer's events, a customer's only theirs.
CREATE TABLE IF NOT EXISTS endpoints (
    id                       UUID        PRIMARY KEY,
    owner                    TEXT        NOT NULL CHECK (char_length(owner) BETWEEN 1 AND 255),
    all_customers            BOOLEAN     NOT NULL DEFAULT false,
    channel                  TEXT        NOT NULL CHECK (channel IN ('webhook', 'email')),
    target                   TEXT        NOT NULL CHECK (char_length(target) BETWEEN 1 AND 2048),
    description              TEXT        NOT NULL DEFAULT '',
    event_types              TEXT[]      NOT NULL,
    secret                   TEXT,
    -- After a rotation the previous secret keeps signing until it expires.
    previous_secret          TEXT,
    previous_secret_until    TIMESTAMPTZ,
    enabled                  BOOLEAN     NOT NULL DEFAULT true,
    disabled_reason          TEXT,
    disabled_at              TIMESTAMPTZ,
    -- Failed attempts in a row, and since when (reset by a success).
    consecutive_failures     INT         NOT NULL DEFAULT 0,
    failing_since            TIMESTAMPTZ,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((channel = 'webhook') = (secret IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS endpoints_by_owner ON endpoints (owner, id);
-- The handler's lookup: enabled endpoints of a customer, and admin ones.
CREATE INDEX IF NOT EXISTS endpoints_all_customers ON endpoints (id) WHERE all_customers AND enabled;

-- One delivery per endpoint and event, whatever the broker redelivers.
-- `id` is the webhook-id: stable across retries and redeliveries. A claimed
-- delivery's lease is its `next_attempt_at` pushed into the future with a
-- fresh `lease`: a dispatcher that dies mid-send leaves it to be claimed
-- again when the lease runs out (at least once).
CREATE TABLE IF NOT EXISTS deliveries (
    id               UUID        PRIMARY KEY,
    endpoint_id      UUID        NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    event_id         UUID        NOT NULL,
    event_type       TEXT        NOT NULL,
    order_id         UUID        NOT NULL,
    customer_id      TEXT        NOT NULL,
    -- The webhook body, fixed once: every attempt sends the same bytes.
    body             TEXT        NOT NULL,
    status           TEXT        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    -- Attempts since the delivery was created or last redelivered.
    attempts         INT         NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease            UUID,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_endpoint ON deliveries (endpoint_id, id DESC);

-- Every attempt, as sent: when, how long, what came back.
CREATE TABLE IF NOT EXISTS attempts (
    id               BIGSERIAL   PRIMARY KEY,
    delivery_id      UUID        NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    endpoint_id      UUID        NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    started_at       TIMESTAMPTZ NOT NULL,
    duration_ms      BIGINT      NOT NULL,
    succeeded        BOOLEAN     NOT NULL,
    status_code      INT,
    error            TEXT,
    response_excerpt TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_endpoint ON attempts (endpoint_id, id DESC);
CREATE INDEX IF NOT EXISTS attempts_by_delivery ON attempts (delivery_id, id);
