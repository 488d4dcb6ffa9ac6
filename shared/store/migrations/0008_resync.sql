-- Resync: per rule, a cursor over the source's changed records. `since` is where the
-- next scan starts (the previous scan's start; NULL: never completed, so the next
-- scan is a full backfill). A scan in progress has `scan_started_at`, its lower bound
-- `scan_since`, and `after_id`, the last record id whose page is queued: a scan that
-- stopped (a crash, an outage) resumes after it. `total` is how many records the scan
-- matched when it began (for its progress and ETA).
CREATE TABLE resync_cursors (
    rule              text        PRIMARY KEY,
    since             timestamptz,
    scan_started_at   timestamptz,
    scan_since        timestamptz,
    after_id          text,
    total             bigint,
    pages             bigint      NOT NULL DEFAULT 0,
    listed            bigint      NOT NULL DEFAULT 0,
    queued            bigint      NOT NULL DEFAULT 0,
    last_completed_at timestamptz,
    last_summary      jsonb,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The ids a full scan (a backfill) has listed so far. When the scan completes, a
-- linked record it never listed is gone from the source unannounced; a scan that does
-- not complete concludes nothing.
CREATE TABLE resync_seen (
    rule             text NOT NULL,
    source_record_id text NOT NULL,
    PRIMARY KEY (rule, source_record_id)
);
