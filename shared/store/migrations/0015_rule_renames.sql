-- Rules renamed by `worker rename-rule`: what was stored under the old name moved to
-- the new one, except the history, which is append-only and is read under every name
-- the rule had.
CREATE TABLE rule_renames (
    old_name   text        PRIMARY KEY,
    new_name   text        NOT NULL,
    renamed_at timestamptz NOT NULL DEFAULT now()
);
