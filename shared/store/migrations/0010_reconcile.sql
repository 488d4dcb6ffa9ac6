-- Each reconcile run, with its figures and the differences it found (a sample), for
-- the CLI and the admin API.
CREATE TABLE reconcile_runs (
    id          bigserial   PRIMARY KEY,
    rule        text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    dry_run     boolean     NOT NULL,
    summary     jsonb       NOT NULL,
    differences jsonb       NOT NULL DEFAULT '[]'
);
CREATE INDEX reconcile_runs_rule ON reconcile_runs (rule, id DESC);
