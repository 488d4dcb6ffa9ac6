-- Parked work is stored as the command it came from (a version-2 queue message). What
-- the store itself reads of it is in columns, so that no SQL depends on the message's
-- shape: its event id, and whether it decides from both systems as they are (a repair
-- or a rehydration), which a later plain change does not replace. Rows parked by an
-- earlier release hold a version-1 event; they are read into the columns here.
ALTER TABLE parked
    ADD COLUMN event_id       text,
    ADD COLUMN decides_afresh boolean NOT NULL DEFAULT false;

UPDATE parked
   SET event_id = COALESCE(event->>'event_id', event->>'id'),
       decides_afresh = COALESCE(event->>'event_type' IN ('repair', 'recordsync.rehydrate'), false);
