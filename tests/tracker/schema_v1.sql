-- The run store schema version 1 (llmflow before thinking, speed and inference_geo),
-- frozen to test the upgrade of stores it created. Never edit.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id             TEXT PRIMARY KEY,
    pipeline           TEXT NOT NULL,
    pipeline_path      TEXT,
    policy             TEXT NOT NULL,
    policy_path        TEXT,
    plan_hash          TEXT,
    status             TEXT NOT NULL CHECK (status IN
        ('running','succeeded','partial','budget_stopped','failed','interrupted')),
    started_at         TEXT NOT NULL,
    ended_at           TEXT,
    sessions           INTEGER NOT NULL DEFAULT 1,
    budget_limit       TEXT,
    plan_cost_expected TEXT,
    plan_cost_max      TEXT,
    plan_cost_baseline TEXT,
    unrecorded_usd     TEXT NOT NULL DEFAULT '0'
);
CREATE INDEX IF NOT EXISTS runs_pipeline ON runs (pipeline, started_at);
CREATE TABLE IF NOT EXISTS run_tags (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX IF NOT EXISTS run_tags_label ON run_tags (key, value);
CREATE TABLE IF NOT EXISTS steps (
    run_id             TEXT NOT NULL REFERENCES runs (run_id),
    step_id            TEXT NOT NULL,
    position           INTEGER NOT NULL,
    requests           INTEGER NOT NULL DEFAULT 0,
    model              TEXT,
    tier               TEXT,
    mode               TEXT,
    plan_cost_expected TEXT,
    plan_cost_max      TEXT,
    PRIMARY KEY (run_id, step_id)
);
CREATE TABLE IF NOT EXISTS requests (
    run_id         TEXT NOT NULL REFERENCES runs (run_id),
    key            TEXT NOT NULL,
    step_id        TEXT NOT NULL,
    item_index     INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN
        ('pending','in_flight','succeeded','failed','skipped')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    model          TEXT,
    tier           TEXT,
    mode           TEXT CHECK (mode IS NULL OR mode IN ('sync','batch')),
    batch_id       TEXT,
    reserved_usd   TEXT,
    request_id     TEXT,
    service_tier   TEXT,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    cache_write_5m INTEGER NOT NULL DEFAULT 0,
    cache_write_1h INTEGER NOT NULL DEFAULT 0,
    cache_read     INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd       TEXT NOT NULL DEFAULT '0',
    stop_reason    TEXT,
    error          TEXT,
    output_json    TEXT,
    dispatched_at  TEXT,
    completed_at   TEXT,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX IF NOT EXISTS requests_step ON requests (run_id, step_id, item_index);
CREATE INDEX IF NOT EXISTS requests_batch ON requests (run_id, batch_id);
CREATE TABLE IF NOT EXISTS usage (
    id             INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL REFERENCES runs (run_id),
    step_id        TEXT NOT NULL,
    key            TEXT NOT NULL,
    item_index     INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    model          TEXT NOT NULL,
    tier           TEXT,
    mode           TEXT NOT NULL CHECK (mode IN ('sync','batch')),
    service_tier   TEXT,
    request_id     TEXT,
    input_tokens   INTEGER NOT NULL,
    cache_write_5m INTEGER NOT NULL,
    cache_write_1h INTEGER NOT NULL,
    cache_read     INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cost_usd       TEXT NOT NULL,
    recorded_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_run ON usage (run_id, step_id);
CREATE INDEX IF NOT EXISTS usage_time ON usage (recorded_at);
CREATE TABLE IF NOT EXISTS batches (
    run_id       TEXT NOT NULL REFERENCES runs (run_id),
    batch_id     TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    status       TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    ended_at     TEXT,
    request_keys TEXT NOT NULL,
    PRIMARY KEY (run_id, batch_id)
);
CREATE TABLE IF NOT EXISTS alerts (
    run_id     TEXT NOT NULL REFERENCES runs (run_id),
    limit_name TEXT NOT NULL,
    limit_usd  TEXT NOT NULL,
    threshold  TEXT NOT NULL,
    spent_usd  TEXT NOT NULL,
    at         TEXT NOT NULL,
    PRIMARY KEY (run_id, limit_name)
);
