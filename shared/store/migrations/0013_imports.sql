-- Each import of a partner file under a rule, by the file's SHA-256: how many of its
-- records are queued (the cursor a crashed import resumes from), and its summary.
CREATE TABLE import_runs (
    id          bigserial   PRIMARY KEY,
    rule        text        NOT NULL,
    file        text        NOT NULL,
    sha256      text        NOT NULL,
    records     integer     NOT NULL,
    queued      integer     NOT NULL DEFAULT 0,
    summary     jsonb       NOT NULL DEFAULT '{}',
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (rule, sha256)
);
