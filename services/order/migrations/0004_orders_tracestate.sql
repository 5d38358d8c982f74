-- W3C tracestate beside the order's traceparent: a step timeout or a cancel
-- continues the order's trace with the caller's vendor state.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS tracestate TEXT NOT NULL DEFAULT '';
