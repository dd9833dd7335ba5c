-- Human approval gates. A request is opened when a decision is `needs_approval`; identical pending
-- requests (same agent, task, action, resource and argument digest: `request_key`) are reused. Votes
-- are one per human (primary key); the request row is locked while a vote is counted. An approved
-- request is a grant until `grant_expires_at` (and, when single use, until `used_at`). The agent's owners
-- may not vote unless `owners_may_approve` (the policy said `@self_approval("allowed")`).
CREATE TABLE approvals (
    id               TEXT PRIMARY KEY,
    request_key      TEXT NOT NULL,
    agent_name       TEXT NOT NULL,
    task_id          TEXT NOT NULL REFERENCES tasks (id),
    action           TEXT NOT NULL,
    resource         TEXT NOT NULL,
    upstream         TEXT,
    args_digest      TEXT,
    arguments        TEXT,
    reason           TEXT NOT NULL,
    policies         TEXT NOT NULL,
    policy_version   TEXT NOT NULL,
    quorum           INTEGER NOT NULL CHECK (quorum >= 1),
    single_use       INTEGER NOT NULL,
    owners_may_approve INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    approvals        INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    decided_at       TEXT,
    grant_expires_at TEXT,
    used_at          TEXT
) STRICT;
CREATE UNIQUE INDEX approvals_one_pending ON approvals (request_key) WHERE state = 'pending';
CREATE INDEX approvals_by_key ON approvals (request_key, state);
CREATE INDEX approvals_by_state ON approvals (state, expires_at);

CREATE TABLE approval_votes (
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    approver    TEXT NOT NULL REFERENCES humans (email),
    vote        TEXT NOT NULL CHECK (vote IN ('approve', 'deny')),
    comment     TEXT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (approval_id, approver)
) STRICT;
