-- Paused rules and systems: their work is parked, not lost.
CREATE TABLE paused (
    scope     text        NOT NULL CHECK (scope IN ('rule', 'system')),
    name      text        NOT NULL,
    reason    text,
    paused_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name)
);

-- Work parked while a rule or system is paused, or outside the target's write
-- window: one row per record and rule, holding the latest event (the canonical record
-- is fetched again when it is flushed, so the latest state is written once).
CREATE TABLE parked (
    rule             text        NOT NULL,
    source_record_id text        NOT NULL,
    event            jsonb       NOT NULL,
    reason           text        NOT NULL,
    events           integer     NOT NULL DEFAULT 1,
    first_parked_at  timestamptz NOT NULL DEFAULT now(),
    parked_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, source_record_id)
);
