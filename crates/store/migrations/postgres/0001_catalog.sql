-- The recordings catalog: one row per contact, its statements, and the webhook outbox.
CREATE TABLE recordings (
    contact_id        TEXT PRIMARY KEY NOT NULL,
    call_id_customer  TEXT,
    call_id_agent     TEXT,
    node              TEXT NOT NULL,
    start_ms          BIGINT NOT NULL,
    answer_ms         BIGINT,
    end_ms            BIGINT,
    duration_ms       BIGINT NOT NULL,
    call_duration_ms  BIGINT NOT NULL,
    direction         TEXT NOT NULL,
    route             TEXT NOT NULL,
    station           TEXT,
    agent             TEXT,
    team              TEXT,
    queue             TEXT,
    skill             TEXT,
    customer_number   TEXT COLLATE "C",
    from_uri          TEXT NOT NULL,
    to_uri            TEXT NOT NULL,
    format            TEXT NOT NULL,
    codecs_customer   JSONB NOT NULL,
    codecs_agent      JSONB NOT NULL,
    segments          JSONB NOT NULL,
    decisions         JSONB,
    stats             JSONB NOT NULL,
    packets_customer  BIGINT NOT NULL,
    lost_customer     BIGINT NOT NULL,
    packets_agent     BIGINT NOT NULL,
    lost_agent        BIGINT NOT NULL,
    tap_drops         BIGINT NOT NULL,
    state             TEXT NOT NULL
        CHECK (state IN ('recording', 'finished', 'interrupted', 'stored', 'deleted')),
    error             TEXT,
    storage_key       TEXT,
    size_bytes        BIGINT,
    sha256            TEXT,
    retention_days    INTEGER,
    retain_until_ms   BIGINT,
    legal_hold        BOOLEAN NOT NULL DEFAULT FALSE,
    deleted_at_ms     BIGINT,
    purged_at_ms      BIGINT,
    has_statement     BOOLEAN NOT NULL DEFAULT FALSE,
    updated_ms        BIGINT NOT NULL
);

-- Each search filter leads an index that also orders by start time, so a filtered page
-- sorted by time reads only the rows it returns.
CREATE INDEX recordings_start ON recordings (start_ms, contact_id);
CREATE INDEX recordings_duration ON recordings (duration_ms, contact_id);
CREATE INDEX recordings_agent ON recordings (agent, start_ms, contact_id);
CREATE INDEX recordings_team ON recordings (team, start_ms, contact_id);
CREATE INDEX recordings_queue ON recordings (queue, start_ms, contact_id);
CREATE INDEX recordings_direction ON recordings (direction, start_ms, contact_id);
CREATE INDEX recordings_state ON recordings (state, start_ms, contact_id);
CREATE INDEX recordings_customer ON recordings (customer_number, start_ms);
CREATE INDEX recordings_statement ON recordings (start_ms, contact_id) WHERE has_statement;
CREATE INDEX recordings_call_id_customer ON recordings (call_id_customer);
CREATE INDEX recordings_call_id_agent ON recordings (call_id_agent);
CREATE INDEX recordings_node_state ON recordings (node, state);
CREATE INDEX recordings_retention ON recordings (retain_until_ms)
    WHERE NOT legal_hold AND purged_at_ms IS NULL;
CREATE INDEX recordings_deleted ON recordings (deleted_at_ms)
    WHERE deleted_at_ms IS NOT NULL AND purged_at_ms IS NULL;

CREATE TABLE statements (
    id            TEXT PRIMARY KEY NOT NULL,
    statement_id  TEXT NOT NULL,
    contact_id    TEXT NOT NULL,
    start_ms      BIGINT NOT NULL,
    duration_ms   BIGINT NOT NULL,
    format        TEXT NOT NULL,
    segments      JSONB NOT NULL,
    state         TEXT NOT NULL
        CHECK (state IN ('recording', 'finished', 'interrupted', 'stored', 'deleted')),
    storage_key   TEXT,
    size_bytes    BIGINT,
    sha256        TEXT,
    updated_ms    BIGINT NOT NULL
);
CREATE INDEX statements_statement_id ON statements (statement_id);
CREATE INDEX statements_contact ON statements (contact_id);

CREATE TABLE webhook_outbox (
    id               BIGSERIAL PRIMARY KEY,
    url              TEXT NOT NULL,
    event            TEXT NOT NULL,
    payload          JSONB NOT NULL,
    created_ms       BIGINT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms  BIGINT NOT NULL,
    last_error       TEXT,
    delivered_ms     BIGINT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_ms) WHERE delivered_ms IS NULL;
