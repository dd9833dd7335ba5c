-- Why a catalogued tool is quarantined (issue 16): `first_seen` (new tools held for an admin),
-- `definition_changed` (its digest differs from the approved one), `renamed` (a new name with the
-- definition, without name, title and `_meta`, of a tool already catalogued on the upstream: a
-- rename or a copy) or `shadows` (a new name whose description is, or nearly is, an approved
-- tool's). `resembles` names the tool a rename or a shadow resembles. Both are cleared when an
-- admin approves the tool. Tools quarantined before this migration get the cause their row shows.
ALTER TABLE tools ADD COLUMN quarantine_cause TEXT
    CHECK (quarantine_cause IN ('first_seen', 'definition_changed', 'renamed', 'shadows'));
ALTER TABLE tools ADD COLUMN resembles TEXT;
UPDATE tools SET quarantine_cause = CASE WHEN digest IS NULL THEN 'first_seen' ELSE 'definition_changed' END
    WHERE state = 'quarantined';
