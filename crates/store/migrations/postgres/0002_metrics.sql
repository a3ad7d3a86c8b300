-- Conversation metrics of each recording, and the figures a supervisor searches by
-- ("calls with a silence over 30 s").
ALTER TABLE recordings ADD COLUMN metrics JSONB;
ALTER TABLE recordings ADD COLUMN longest_silence_ms BIGINT;
ALTER TABLE recordings ADD COLUMN talk_to_listen_ratio DOUBLE PRECISION;
ALTER TABLE recordings ADD COLUMN overtalk_ms BIGINT;
CREATE INDEX recordings_silence ON recordings (longest_silence_ms, start_ms)
    WHERE longest_silence_ms IS NOT NULL;
CREATE INDEX recordings_overtalk ON recordings (overtalk_ms, start_ms)
    WHERE overtalk_ms IS NOT NULL;
