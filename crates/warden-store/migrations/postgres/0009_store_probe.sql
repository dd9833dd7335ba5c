-- One row that the store's write probe updates: a write that proves the database can be written
-- (used after a disk-full or I/O error, and by the health check while the store is failed).
CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n BIGINT NOT NULL
);
