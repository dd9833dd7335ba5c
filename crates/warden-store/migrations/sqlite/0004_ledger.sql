-- The tamper-evident ledger (see crates/warden-ledger). Append-only: Warden never updates or deletes
-- a row of ledger_entries, ledger_nodes or ledger_checkpoints; ledger_head is the one row that moves.
--
-- ledger_head: the tree's size and frontier (the perfect-subtree hashes of [0, size)), changed in the
-- same transaction as the entries it covers. Appends lock it (PostgreSQL: FOR UPDATE), so every node
-- of a deployment extends one log.
CREATE TABLE ledger_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    size     INTEGER NOT NULL CHECK (size >= 0),
    frontier TEXT NOT NULL
) STRICT;
INSERT INTO ledger_head (id, size, frontier) VALUES (1, 0, '{"size":0,"nodes":[]}');

-- One row per entry: its canonical bytes (the Merkle leaf data) and leaf hash. `at` and `agent` are
-- copies of envelope fields, for filtering exports; verification reads only seq, canonical and
-- leaf_hash, and the bytes are what is proven.
CREATE TABLE ledger_entries (
    seq       INTEGER PRIMARY KEY CHECK (seq >= 0),
    at        TEXT NOT NULL,
    agent     TEXT,
    canonical BLOB NOT NULL,
    leaf_hash BLOB NOT NULL
) STRICT;
CREATE INDEX ledger_entries_at ON ledger_entries (at);
CREATE INDEX ledger_entries_agent ON ledger_entries (agent, seq);

-- Interior nodes of perfect subtrees at level >= 8 (subtrees of 256 leaves and up), for proofs without
-- rehashing the log; a proof's lower nodes are hashed from at most 256 stored leaf hashes.
CREATE TABLE ledger_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) STRICT;

-- Signed checkpoints (C2SP signed notes) of tree sizes.
CREATE TABLE ledger_checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL,
    at   TEXT NOT NULL
) STRICT;

-- The verifier keys (C2SP vkey strings) of the nodes that sign checkpoints.
CREATE TABLE ledger_keys (
    vkey       TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;
