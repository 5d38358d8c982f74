-- The product catalogue. on_hand = units free to sell; reserved = units held
-- by running sagas. The CHECKs are the last line of defence against overselling.
-- Quantities are INTEGER: the API caps on_hand at 10^9 and order lines at
-- 10^4 units, far below 2^31 even with every reservation returned.
CREATE TABLE IF NOT EXISTS products (
    sku              TEXT        PRIMARY KEY CHECK (char_length(sku) BETWEEN 1 AND 64),
    name             TEXT        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    unit_price_cents BIGINT      NOT NULL CHECK (unit_price_cents >= 0),
    on_hand          INTEGER     NOT NULL CHECK (on_hand >= 0),
    reserved         INTEGER     NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per order that ever reached inventory. A RELEASED row with no lines
-- is a tombstone: the saga was compensated before its reserve command arrived,
-- so a late reserve must not hold stock.
CREATE TABLE IF NOT EXISTS reservations (
    order_id      UUID        PRIMARY KEY,
    status        TEXT        NOT NULL
                  CHECK (status IN ('RESERVED', 'CONFIRMED', 'RELEASED', 'REJECTED')),
    -- Priced lines: [{"sku","quantity","unit_price_cents"}], one per SKU.
    lines         JSONB       NOT NULL DEFAULT '[]'::jsonb,
    reject_reason TEXT        CHECK (reject_reason IN ('out_of_stock', 'unknown_sku')),
    reject_sku    TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (status <> 'REJECTED' OR (reject_reason IS NOT NULL AND reject_sku IS NOT NULL))
);
