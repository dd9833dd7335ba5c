-- Policy sets: every version ever uploaded (content-addressed), and the history of which version was
-- made active or shadow, by whom and when. The current active (or shadow) set is the latest such row.

CREATE TABLE policy_versions (
    version    TEXT PRIMARY KEY,
    files      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE policy_activations (
    seq      BIGSERIAL PRIMARY KEY,
    version  TEXT REFERENCES policy_versions (version),
    role     TEXT NOT NULL CHECK (role IN ('active', 'shadow')),
    at       TIMESTAMPTZ NOT NULL,
    by_actor TEXT NOT NULL,
    comment  TEXT NOT NULL
);
