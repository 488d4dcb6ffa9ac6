-- Per-record leases: fleet-wide exclusivity without holding a connection. A lease has
-- an owner, a fencing token (from one sequence, so a newer lease always has a larger
-- token) and an expiry; a commit checks the token, so a holder whose lease expired
-- cannot commit late.
CREATE SEQUENCE lease_tokens;
CREATE TABLE record_leases (
    rule             text        NOT NULL,
    source_record_id text        NOT NULL,
    owner            text        NOT NULL,
    token            bigint      NOT NULL,
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (rule, source_record_id)
);

-- Outbound operations are committed as intents ('pending') before they are sent
-- (transactional outbox). A create's intent that is still pending is in doubt: whoever
-- finds it resolves it before creating anything.
ALTER TABLE outbound_ops ADD COLUMN kind text NOT NULL DEFAULT 'update';
ALTER TABLE outbound_ops ADD COLUMN target_id text;
ALTER TABLE outbound_ops ADD COLUMN resolved_by text;
CREATE INDEX outbound_ops_pending ON outbound_ops (rule, source_record_id) WHERE status = 'pending';
