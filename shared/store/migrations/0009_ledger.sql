-- The ledger's first side: every (event, rule) a worker saw, written on first sight by
-- the statement that reads the record's memory. The other side is what became of it:
-- processed_events (by outcome), dead_letters, parked. Ingest never touches PostgreSQL,
-- so "accepted" is counted here, where the two sides meet.
CREATE TABLE deliveries (
    event_id         text        NOT NULL,
    rule             text        NOT NULL,
    source_record_id text,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    deliveries       integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (event_id, rule)
);
CREATE INDEX deliveries_rule_seen ON deliveries (rule, first_seen_at);

-- Events processed before the ledger existed were seen too.
INSERT INTO deliveries (event_id, rule, first_seen_at, last_seen_at)
SELECT event_id, rule, processed_at, processed_at FROM processed_events
ON CONFLICT DO NOTHING;

CREATE INDEX dead_letters_event ON dead_letters (event_id) WHERE status = 'dead';
