-- The recordings catalog: one row per contact, its statements, and the webhook outbox.
CREATE TABLE recordings (
    contact_id        TEXT PRIMARY KEY NOT NULL,
    call_id_customer  TEXT,
    call_id_agent     TEXT,
    node              TEXT NOT NULL,
    start_ms          INTEGER NOT NULL,
    answer_ms         INTEGER,
    end_ms            INTEGER,
    duration_ms       INTEGER NOT NULL,
    call_duration_ms  INTEGER NOT NULL,
    direction         TEXT NOT NULL,
    route             TEXT NOT NULL,
    station           TEXT,
    agent             TEXT,
    team              TEXT,
    queue             TEXT,
    skill             TEXT,
    customer_number   TEXT,
    from_uri          TEXT NOT NULL,
    to_uri            TEXT NOT NULL,
    format            TEXT NOT NULL,
    codecs_customer   TEXT NOT NULL,
    codecs_agent      TEXT NOT NULL,
    segments          TEXT NOT NULL,
    decisions         TEXT,
    stats             TEXT NOT NULL,
    packets_customer  INTEGER NOT NULL,
    lost_customer     INTEGER NOT NULL,
    packets_agent     INTEGER NOT NULL,
    lost_agent        INTEGER NOT NULL,
    tap_drops         INTEGER NOT NULL,
    state             TEXT NOT NULL
        CHECK (state IN ('recording', 'finished', 'interrupted', 'stored', 'deleted')),
    error             TEXT,
    storage_key       TEXT,
    size_bytes        INTEGER,
    sha256            TEXT,
    retention_days    INTEGER,
    retain_until_ms   INTEGER,
    legal_hold        INTEGER NOT NULL DEFAULT 0,
    deleted_at_ms     INTEGER,
    purged_at_ms      INTEGER,
    has_statement     INTEGER NOT NULL DEFAULT 0,
    updated_ms        INTEGER NOT NULL
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
CREATE INDEX recordings_statement ON recordings (start_ms, contact_id) WHERE has_statement = 1;
CREATE INDEX recordings_call_id_customer ON recordings (call_id_customer);
CREATE INDEX recordings_call_id_agent ON recordings (call_id_agent);
CREATE INDEX recordings_node_state ON recordings (node, state);
CREATE INDEX recordings_retention ON recordings (retain_until_ms)
    WHERE legal_hold = 0 AND purged_at_ms IS NULL;
CREATE INDEX recordings_deleted ON recordings (deleted_at_ms)
    WHERE deleted_at_ms IS NOT NULL AND purged_at_ms IS NULL;

CREATE TABLE statements (
    id            TEXT PRIMARY KEY NOT NULL,
    statement_id  TEXT NOT NULL,
    contact_id    TEXT NOT NULL,
    start_ms      INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    format        TEXT NOT NULL,
    segments      TEXT NOT NULL,
    state         TEXT NOT NULL
        CHECK (state IN ('recording', 'finished', 'interrupted', 'stored', 'deleted')),
    storage_key   TEXT,
    size_bytes    INTEGER,
    sha256        TEXT,
    updated_ms    INTEGER NOT NULL
);
CREATE INDEX statements_statement_id ON statements (statement_id);
CREATE INDEX statements_contact ON statements (contact_id);

CREATE TABLE webhook_outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    url              TEXT NOT NULL,
    event            TEXT NOT NULL,
    payload          TEXT NOT NULL,
    created_ms       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms  INTEGER NOT NULL,
    last_error       TEXT,
    delivered_ms     INTEGER
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_ms) WHERE delivered_ms IS NULL;
