-- Field authority: the record's state across systems (canonical values, version
-- vector, per-field versions, what each system holds and has seen), and every
-- outbound operation with the version it carried.
ALTER TABLE sync_records ADD COLUMN state jsonb;

CREATE TABLE outbound_ops (
    id               bigserial   PRIMARY KEY,
    rule             text        NOT NULL,
    source_record_id text        NOT NULL,
    system           text        NOT NULL,
    idempotency_key  text        NOT NULL,
    fields           jsonb       NOT NULL,
    vv               jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'sent' CHECK (status IN ('pending', 'sent', 'confirmed', 'failed')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    confirmed_at     timestamptz
);
CREATE INDEX outbound_ops_record ON outbound_ops (rule, source_record_id, system, status);
