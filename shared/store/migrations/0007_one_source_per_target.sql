-- Two source records are never linked to one target record under a rule: each would
-- overwrite what the other wrote. Until now only the code checked it, and two
-- resolutions applied at the same moment (each under its own record's lease) could
-- both pass. The index makes PostgreSQL hold the line.
--
-- A database that already holds such pairs keeps the earliest link. Each later record
-- is unlinked, gets an open `already_linked` conflict naming the record that keeps the
-- target, and a history line saying why; its next event or rehydration decides again.
WITH ranked AS (
    SELECT rule, source_record_id, target_id,
           first_value(source_record_id) OVER w AS keeper,
           row_number() OVER w AS n
      FROM sync_records
     WHERE target_id IS NOT NULL
    WINDOW w AS (PARTITION BY rule, target_id
                 ORDER BY linked_at NULLS LAST, updated_at, source_record_id)
),
later AS (
    SELECT * FROM ranked WHERE n > 1
),
noted AS (
    INSERT INTO history (rule, source_record_id, kind, summary, detail)
    SELECT rule, source_record_id, 'conflict_opened',
           format('unlinked from %s when upgrading: source record %s was linked to it first; two source records are never linked to one target record',
                  target_id, keeper),
           jsonb_build_object('target_id', target_id, 'linked_to', keeper)
      FROM later
),
opened AS (
    INSERT INTO conflicts (rule, source_record_id, kind, summary, detail)
    SELECT rule, source_record_id, 'already_linked',
           format('target record %s is already linked to source record %s', target_id, keeper),
           jsonb_build_object('target_id', target_id, 'linked_to', keeper)
      FROM later
    ON CONFLICT (rule, source_record_id, kind) WHERE status = 'open' DO NOTHING
)
UPDATE sync_records s
   SET target_id = NULL, matched_by = NULL, updated_at = now()
  FROM later
 WHERE s.rule = later.rule AND s.source_record_id = later.source_record_id;

DROP INDEX sync_records_target;
CREATE UNIQUE INDEX sync_records_one_source_per_target
    ON sync_records (rule, target_id) WHERE target_id IS NOT NULL;
