-- The ledger's unaccounted events of the last 24 hours per rule, recounted every
-- RECORDSYNC_LEDGER_ROLLUP_MS by one worker of the fleet. A metrics scrape reads this
-- table (one row per rule) instead of classifying every recent delivery, so that its
-- cost does not grow with the deliveries table or with the number of scrapers.
CREATE TABLE ledger_rollup (
    rule        text        PRIMARY KEY,
    unaccounted bigint      NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now()
);
