-- Transcripts: one job per recording (the transcription journal), the phrases of each
-- channel, their full-text index, and a per-call summary (sentiment, talking speed).
CREATE TABLE transcript_jobs (
    contact_id  TEXT PRIMARY KEY NOT NULL,
    node        TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at_ms  INTEGER NOT NULL,
    error       TEXT,
    engine      TEXT NOT NULL,
    language    TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);
-- What a restarting node resumes.
CREATE INDEX transcript_jobs_active ON transcript_jobs (node, next_at_ms)
    WHERE state IN ('queued', 'running');

CREATE TABLE transcripts (
    contact_id     TEXT PRIMARY KEY NOT NULL,
    engine         TEXT NOT NULL,
    language       TEXT NOT NULL,
    phrase_count   INTEGER NOT NULL,
    sentiment_avg  REAL,
    customer_wpm   REAL,
    agent_wpm      REAL,
    created_ms     INTEGER NOT NULL
);

CREATE TABLE transcript_phrases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id  TEXT NOT NULL,
    speaker     TEXT NOT NULL CHECK (speaker IN ('customer', 'agent')),
    start_ms    INTEGER NOT NULL,
    end_ms      INTEGER NOT NULL,
    text        TEXT NOT NULL,
    sentiment   REAL,
    words       TEXT NOT NULL
);
CREATE INDEX transcript_phrases_contact ON transcript_phrases (contact_id, start_ms);

-- The full-text index reads the phrases' text (external content) and is kept in step by
-- triggers. unicode61 folds case and splits on anything not a letter or digit.
CREATE VIRTUAL TABLE transcript_fts USING fts5(
    text, content = 'transcript_phrases', content_rowid = 'id', tokenize = 'unicode61'
);
CREATE TRIGGER transcript_phrases_ai AFTER INSERT ON transcript_phrases BEGIN
    INSERT INTO transcript_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER transcript_phrases_ad AFTER DELETE ON transcript_phrases BEGIN
    INSERT INTO transcript_fts (transcript_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;

-- A recording whose audio is purged loses its transcript too.
CREATE TRIGGER recordings_purge_transcript AFTER UPDATE OF purged_at_ms ON recordings
    WHEN new.purged_at_ms IS NOT NULL BEGIN
    DELETE FROM transcript_phrases WHERE contact_id = new.contact_id;
    DELETE FROM transcripts WHERE contact_id = new.contact_id;
END;
