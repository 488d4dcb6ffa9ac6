-- Events already processed, per rule: a delivery of one of these is a duplicate.
CREATE TABLE processed_events (
    event_id     text        NOT NULL,
    rule         text        NOT NULL,
    outcome      text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, rule)
);

-- What is known of each source record under each rule: its link to the target, the
-- last source revision fully synced, and the mapped values last written.
CREATE TABLE sync_records (
    rule             text        NOT NULL,
    source_record_id text        NOT NULL,
    target_id        text,
    matched_by       jsonb,
    source_revision  bigint,
    sent             jsonb       NOT NULL DEFAULT '{}',
    linked_at        timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, source_record_id)
);
CREATE INDEX sync_records_target ON sync_records (rule, target_id);

-- The append-only history every timeline is rendered from.
CREATE TABLE history (
    id               bigserial   PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    rule             text        NOT NULL,
    source_record_id text        NOT NULL,
    event_id         text,
    correlation_id   text,
    kind             text        NOT NULL,
    summary          text        NOT NULL,
    detail           jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX history_record ON history (rule, source_record_id, id);
CREATE INDEX history_kind ON history (kind, id);

CREATE FUNCTION history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'history is append-only: % is not allowed', TG_OP;
END;
$$;
CREATE TRIGGER history_append_only BEFORE UPDATE OR DELETE ON history
    FOR EACH ROW EXECUTE FUNCTION history_is_append_only();

-- Data-quality conflicts a person resolves. At most one open conflict per record,
-- rule and kind: a repeat counts an occurrence instead of piling up.
CREATE TABLE conflicts (
    id               bigserial   PRIMARY KEY,
    rule             text        NOT NULL,
    source_record_id text        NOT NULL,
    kind             text        NOT NULL,
    summary          text        NOT NULL,
    detail           jsonb       NOT NULL DEFAULT '{}',
    status           text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'dismissed')),
    occurrences      integer     NOT NULL DEFAULT 1,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    closed_at        timestamptz
);
CREATE UNIQUE INDEX conflicts_one_open ON conflicts (rule, source_record_id, kind) WHERE status = 'open';
