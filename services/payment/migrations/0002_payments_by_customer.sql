-- GET /api/v1/accounts/{customer_id}/payments pages a customer's payments
-- newest first: keyset on (customer_id, order_id).
CREATE INDEX IF NOT EXISTS payments_by_customer_order ON payments (customer_id, order_id DESC);
