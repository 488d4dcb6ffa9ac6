-- Requests made to each system with a daily budget, per hour: today's use and the
-- recent pace, for every worker together.
CREATE TABLE api_usage (
    system   text        NOT NULL,
    hour     timestamptz NOT NULL,
    requests bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (system, hour)
);
