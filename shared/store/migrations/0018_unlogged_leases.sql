-- Leases need no WAL. A lease is only ever checked against a fencing token from the
-- `lease_tokens` sequence (which is WAL-logged, so tokens never go back), and a commit
-- deletes the lease by its token: a lease row lost in a crash (PostgreSQL truncates an
-- unlogged table when it recovers) makes its holder's commit fail with LeaseLost, as
-- an expired and taken lease does, and the record is decided again by whoever takes it
-- next. Unlogged, the lease statement that starts every step writes no WAL and so does
-- not wait for a WAL flush.
ALTER TABLE record_leases SET UNLOGGED;
