-- When a create still in doubt was sent again. The settle time before a create is
-- made once more counts from its last send, not its first: a target that ignores
-- idempotency keys and whose search lags may hold the copy just sent, still unseen.
ALTER TABLE outbound_ops ADD COLUMN resent_at timestamptz;
