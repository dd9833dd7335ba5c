-- Upstream credentials, sealed by the server (AEAD) before they reach the store: the store holds the
-- nonce and ciphertext and the id of the key that sealed them, never the plaintext or the key. A secret
-- belongs to one upstream and is injected as one header (`header_name`, `header_prefix`) or one
-- environment variable (`env_var`); an upstream gets each header or variable from one secret at most.
-- Rotation replaces the ciphertext and increments `version`.
CREATE TABLE secrets (
    name          TEXT PRIMARY KEY,
    upstream_name TEXT NOT NULL REFERENCES upstreams (name),
    injection     TEXT NOT NULL CHECK (injection IN ('header', 'env')),
    header_name   TEXT,
    header_prefix TEXT,
    env_var       TEXT,
    version       INTEGER NOT NULL CHECK (version >= 1),
    key_id        TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    rotated_at    TEXT,
    rotated_by    TEXT,
    CHECK ((injection = 'header') = (header_name IS NOT NULL AND header_prefix IS NOT NULL AND env_var IS NULL)),
    CHECK ((injection = 'env') = (env_var IS NOT NULL AND header_name IS NULL AND header_prefix IS NULL))
) STRICT;
CREATE UNIQUE INDEX secrets_one_per_header ON secrets (upstream_name, header_name);
CREATE UNIQUE INDEX secrets_one_per_env_var ON secrets (upstream_name, env_var);
