-- Agent identity and task credentials: join tokens, enrolled agent keys, replay memory for assertion
-- ids, tasks (with delegation links), Warden's published signing keys, and humans that left.

ALTER TABLE humans ADD COLUMN disabled_at TIMESTAMPTZ;
ALTER TABLE humans ADD COLUMN disabled_by TEXT;

-- One-time enrollment secrets, stored as SHA-256 hashes.
CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);
CREATE INDEX join_tokens_agent ON join_tokens (agent_id);

-- Public keys agents enrolled with. At most one active (revoked_at IS NULL) key per agent.
CREATE TABLE agent_keys (
    kid        TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    public_x   TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX agent_keys_active ON agent_keys (agent_id) WHERE revoked_at IS NULL;

-- Assertion and proof ids seen, kept until they expire, so a replay is refused on every node.
CREATE TABLE used_jtis (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX used_jtis_expiry ON used_jtis (expires_at);

CREATE TABLE tasks (
    id         TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    parent_id  TEXT REFERENCES tasks (id),
    depth      BIGINT NOT NULL CHECK (depth >= 0),
    intent     TEXT NOT NULL,
    act        TEXT,
    cnf_jkt    TEXT,
    state      TEXT NOT NULL CHECK (state IN ('active', 'ended', 'revoked')),
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    ended_at   TIMESTAMPTZ,
    ended_by   TEXT,
    end_reason TEXT
);
CREATE INDEX tasks_agent ON tasks (agent_id, state);
CREATE INDEX tasks_parent ON tasks (parent_id);

-- Public halves of the keys Warden nodes sign task tokens with (private halves stay on the node).
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    public_x     TEXT NOT NULL,
    node         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    retire_after TIMESTAMPTZ
);
