-- The nodes sharing this catalog, each with the last time it said it was alive. A node whose
-- heartbeat is old is gone; another node takes up its transcription jobs.
CREATE TABLE nodes (
    node     TEXT PRIMARY KEY NOT NULL,
    seen_ms  INTEGER NOT NULL
);
