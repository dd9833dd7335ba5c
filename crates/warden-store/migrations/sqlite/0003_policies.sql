-- Policy sets: every version ever uploaded (content-addressed), and the history of which version was
-- made active or shadow, by whom and when. The current active (or shadow) set is the latest such row.

CREATE TABLE policy_versions (
    version    TEXT PRIMARY KEY,
    files      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
) STRICT;

CREATE TABLE policy_activations (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    version  TEXT REFERENCES policy_versions (version),
    role     TEXT NOT NULL CHECK (role IN ('active', 'shadow')),
    at       TEXT NOT NULL,
    by_actor TEXT NOT NULL,
    comment  TEXT NOT NULL
) STRICT;
