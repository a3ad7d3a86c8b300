-- Transcripts: one job per recording (the transcription journal), the phrases of each
-- channel with their full-text vector, and a per-call summary (sentiment, talking speed).
CREATE TABLE transcript_jobs (
    contact_id  TEXT PRIMARY KEY NOT NULL,
    node        TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at_ms  BIGINT NOT NULL,
    error       TEXT,
    engine      TEXT NOT NULL,
    language    TEXT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
CREATE INDEX transcript_jobs_active ON transcript_jobs (node, next_at_ms)
    WHERE state IN ('queued', 'running');

CREATE TABLE transcripts (
    contact_id     TEXT PRIMARY KEY NOT NULL,
    engine         TEXT NOT NULL,
    language       TEXT NOT NULL,
    phrase_count   INTEGER NOT NULL,
    sentiment_avg  DOUBLE PRECISION,
    customer_wpm   DOUBLE PRECISION,
    agent_wpm      DOUBLE PRECISION,
    created_ms     BIGINT NOT NULL
);

-- The 'simple' configuration folds case and does not stem, like SQLite's unicode61, so a
-- word finds the same calls on both backends whatever the transcript's language.
CREATE TABLE transcript_phrases (
    id          BIGSERIAL PRIMARY KEY,
    contact_id  TEXT NOT NULL,
    speaker     TEXT NOT NULL CHECK (speaker IN ('customer', 'agent')),
    start_ms    BIGINT NOT NULL,
    end_ms      BIGINT NOT NULL,
    text        TEXT NOT NULL,
    sentiment   DOUBLE PRECISION,
    words       JSONB NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED
);
CREATE INDEX transcript_phrases_contact ON transcript_phrases (contact_id, start_ms);
CREATE INDEX transcript_phrases_tsv ON transcript_phrases USING GIN (tsv);

-- A recording whose audio is purged loses its transcript too.
CREATE FUNCTION recordings_purge_transcript() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM transcript_phrases WHERE contact_id = NEW.contact_id;
    DELETE FROM transcripts WHERE contact_id = NEW.contact_id;
    RETURN NEW;
END;
$$;
CREATE TRIGGER recordings_purge_transcript AFTER UPDATE OF purged_at_ms ON recordings
    FOR EACH ROW WHEN (NEW.purged_at_ms IS NOT NULL)
    EXECUTE FUNCTION recordings_purge_transcript();
