-- Each schema-drift check of one app or entity of one system: the schema it read, the
-- drift it found, and the rules it paused. The latest baseline row (no breaking drift,
-- or accepted by an operator) is what the next check compares types and options with.
CREATE TABLE schema_checks (
    id          bigserial   PRIMARY KEY,
    system      text        NOT NULL,
    app         text        NOT NULL,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    schema      jsonb,
    not_checked text,
    drift       jsonb       NOT NULL DEFAULT '[]',
    breaking    integer     NOT NULL DEFAULT 0,
    paused      text[]      NOT NULL DEFAULT '{}',
    baseline    boolean     NOT NULL DEFAULT false
);
CREATE INDEX schema_checks_app ON schema_checks (system, app, id DESC);
CREATE INDEX schema_checks_baseline ON schema_checks (system, app, id DESC) WHERE baseline;
