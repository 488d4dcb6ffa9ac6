-- The fleet-wide limiter: GCRA state per system (the theoretical arrival time of the
-- next request, and a block set by a 429's Retry-After), and leased concurrency slots.
CREATE TABLE limiter_state (
    system        text        PRIMARY KEY,
    tat           timestamptz NOT NULL DEFAULT clock_timestamp(),
    blocked_until timestamptz NOT NULL DEFAULT '-infinity'
);

CREATE TABLE limiter_slots (
    system     text        NOT NULL,
    slot       integer     NOT NULL,
    holder     text,
    expires_at timestamptz,
    PRIMARY KEY (system, slot)
);
