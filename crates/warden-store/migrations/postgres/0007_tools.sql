-- The MCP gateway's tool catalogue. A tool is catalogued when an upstream first lists it, with the
-- digest of its definition (name, description, input schema, annotations): `active` when trusted on
-- first use, else `quarantined` with the definition pending. A later definition with another digest
-- quarantines the tool (hidden and denied) and waits in `pending_*` until an admin approves exactly that
-- digest; it then becomes the approved `digest`/`definition`. `hint_class` comes from the MCP
-- annotations, `class_override` is an admin's classification.
CREATE TABLE tools (
    upstream_name      TEXT NOT NULL REFERENCES upstreams (name),
    name               TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('active', 'quarantined')),
    digest             TEXT,
    definition         TEXT,
    hint_class         TEXT NOT NULL CHECK (hint_class IN ('read', 'write', 'destructive', 'admin')),
    class_override     TEXT CHECK (class_override IN ('read', 'write', 'destructive', 'admin')),
    pending_digest     TEXT,
    pending_definition TEXT,
    pending_hint_class TEXT CHECK (pending_hint_class IN ('read', 'write', 'destructive', 'admin')),
    first_seen         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    approved_by        TEXT,
    approved_at        TIMESTAMPTZ,
    classified_by      TEXT,
    classified_at      TIMESTAMPTZ,
    PRIMARY KEY (upstream_name, name),
    -- Quarantined exactly when a definition is pending; active only with an approved definition.
    CHECK ((state = 'quarantined') = (pending_digest IS NOT NULL)),
    CHECK ((pending_digest IS NULL) = (pending_definition IS NULL)),
    CHECK ((pending_digest IS NULL) = (pending_hint_class IS NULL)),
    CHECK ((digest IS NULL) = (definition IS NULL)),
    CHECK (state = 'quarantined' OR digest IS NOT NULL)
);
