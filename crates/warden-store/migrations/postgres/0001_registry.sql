-- Warden registry: humans and their API tokens, upstreams, agents with owners, allowed upstreams and
-- lifecycle history. Enumerations are checked here too, as a second line behind the application.

CREATE TABLE humans (
    email        TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    roles        TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    created_by   TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    human_email TEXT NOT NULL REFERENCES humans (email),
    label       TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ,
    revoked_by  TEXT
);
CREATE INDEX api_tokens_human ON api_tokens (human_email);

CREATE TABLE upstreams (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('mcp', 'http', 'postgres')),
    url         TEXT NOT NULL,
    environment TEXT NOT NULL CHECK (environment IN ('prototype', 'staging', 'production')),
    owner_email TEXT NOT NULL REFERENCES humans (email),
    sensitivity TEXT NOT NULL CHECK (sensitivity IN ('public', 'internal', 'confidential', 'regulated')),
    description TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT NOT NULL
);

CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    spiffe_id        TEXT NOT NULL UNIQUE,
    environment      TEXT NOT NULL CHECK (environment IN ('prototype', 'staging', 'production')),
    model            TEXT NOT NULL,
    description      TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending_review', 'active', 'suspended', 'retired')),
    state_changed_at TIMESTAMPTZ NOT NULL,
    state_changed_by TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    created_by       TEXT NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    updated_by       TEXT NOT NULL
);

CREATE TABLE agent_owners (
    agent_id    TEXT NOT NULL REFERENCES agents (id),
    human_email TEXT NOT NULL REFERENCES humans (email),
    position    BIGINT NOT NULL,
    PRIMARY KEY (agent_id, human_email)
);
CREATE INDEX agent_owners_human ON agent_owners (human_email);

-- Upstream names, not foreign keys: a retired agent keeps naming an upstream that was later removed.
CREATE TABLE agent_upstreams (
    agent_id      TEXT NOT NULL REFERENCES agents (id),
    upstream_name TEXT NOT NULL,
    position      BIGINT NOT NULL,
    PRIMARY KEY (agent_id, upstream_name)
);
CREATE INDEX agent_upstreams_upstream ON agent_upstreams (upstream_name);

CREATE TABLE agent_state_changes (
    seq        BIGSERIAL PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    by_actor   TEXT NOT NULL,
    reason     TEXT NOT NULL
);
CREATE INDEX agent_state_changes_agent ON agent_state_changes (agent_id, seq);
