-- Indexes for the filters of GET /api/v1/orders and /api/v1/orders/counts
-- (the explorer's search). Customer and status have theirs since 0001; an
-- id prefix is a range of the primary key.
CREATE INDEX IF NOT EXISTS orders_by_correlation ON orders (correlation_id);
CREATE INDEX IF NOT EXISTS orders_by_created ON orders (created_at);
-- Only FAILED orders have a reason: a small partial index.
CREATE INDEX IF NOT EXISTS orders_by_failure ON orders (failure_reason, id DESC) WHERE failure_reason IS NOT NULL;
