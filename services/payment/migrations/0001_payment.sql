-- Customer balances. The CHECK is the last line of defence against a charge
-- taking a balance below zero.
CREATE TABLE IF NOT EXISTS accounts (
    customer_id   TEXT        PRIMARY KEY CHECK (char_length(customer_id) BETWEEN 1 AND 255),
    balance_cents BIGINT      NOT NULL CHECK (balance_cents >= 0),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per order that ever reached payment. A VOIDED row (amount 0, no
-- customer) is a tombstone: the refund arrived before the charge, so a late
-- charge must be declined rather than captured.
CREATE TABLE IF NOT EXISTS payments (
    order_id     UUID        PRIMARY KEY,
    customer_id  TEXT,
    amount_cents BIGINT      NOT NULL CHECK (amount_cents >= 0),
    status       TEXT        NOT NULL
                 CHECK (status IN ('CAPTURED', 'REFUNDED', 'DECLINED', 'VOIDED')),
    reason       TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (status = 'VOIDED' OR customer_id IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS payments_customer ON payments (customer_id);
