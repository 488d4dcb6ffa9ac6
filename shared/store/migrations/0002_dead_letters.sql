-- Dead letters, drained from the <prefix>.dead queue so that operators can list,
-- inspect, replay and purge them with filters.
CREATE TABLE dead_letters (
    id          bigserial   PRIMARY KEY,
    dead_id     text        NOT NULL UNIQUE,
    event_id    text,
    rule        text,
    system      text,
    app         text,
    record_id   text,
    class       text        NOT NULL,
    reason      text        NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    history     jsonb       NOT NULL DEFAULT '[]',
    body        bytea       NOT NULL,
    dead_at     timestamptz NOT NULL DEFAULT now(),
    status      text        NOT NULL DEFAULT 'dead' CHECK (status IN ('dead', 'replayed')),
    replayed_at timestamptz
);
CREATE INDEX dead_letters_filter ON dead_letters (status, rule, system, class, dead_at);
