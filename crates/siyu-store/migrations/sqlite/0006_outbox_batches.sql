-- The outbox in two parts (issue 11, planning speed): what the messages queued together share,
-- one row per batch, and the messages themselves, narrow and indexed by their primary key only.
-- Every secondary index on the message table was paid on every message planned (≈ 7 µs a
-- message, against ≈ 1.2 µs for the row alone); the questions they answered — what is due, what
-- belongs to a campaign, what the log still owes — are now asked of the batches, which are few,
-- and then of the messages of a batch, a range of the primary key.

-- A batch is the messages of one enqueue call: ids `batch_id` (its first message) to `last_id`.
-- `open`, `next_due` and `unlogged` summarise its messages and are recomputed from them by every
-- statement that changes one (claim, outcome, cancellation, logging).
CREATE TABLE outbox_batches (
    tenant_id   INTEGER NOT NULL,
    batch_id    INTEGER NOT NULL,
    last_id     INTEGER NOT NULL,
    campaign_id INTEGER NOT NULL,
    channel     TEXT NOT NULL,
    account     TEXT NOT NULL,
    sender      TEXT,
    scope       TEXT NOT NULL,
    marketing   INTEGER NOT NULL,
    -- Messages without a final outcome (queued, attempting, task).
    open        INTEGER NOT NULL,
    -- When the batch next has work: its earliest queued message's due time or the earliest lease
    -- of an attempt that may lapse. NULL when neither.
    next_due    INTEGER,
    -- Outcomes whose event the log still owes.
    unlogged    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, batch_id)
) WITHOUT ROWID;
CREATE INDEX outbox_batches_due ON outbox_batches (tenant_id, next_due) WHERE next_due IS NOT NULL;
CREATE INDEX outbox_batches_by_campaign ON outbox_batches (tenant_id, campaign_id);
CREATE INDEX outbox_batches_open ON outbox_batches (tenant_id, campaign_id) WHERE open > 0;
CREATE INDEX outbox_batches_unlogged ON outbox_batches (tenant_id, batch_id) WHERE unlogged > 0;
-- The rows after a given id (the guardrail ledger's tail, a campaign's keys).
CREATE INDEX outbox_batches_by_last ON outbox_batches (tenant_id, last_id);

CREATE TABLE outbox_messages (
    tenant_id       INTEGER NOT NULL,
    outbox_id       INTEGER NOT NULL,
    msg_key         TEXT NOT NULL,
    profile_id      INTEGER NOT NULL,
    recipient_kind  TEXT NOT NULL,
    recipient_value TEXT NOT NULL,
    content         TEXT NOT NULL,
    state           TEXT NOT NULL,
    due_at          INTEGER NOT NULL,
    reserved_at     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    attempted_at    INTEGER,
    lease_until     INTEGER,
    remote_id       TEXT,
    error_code      TEXT,
    error_message   TEXT,
    logged          INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, outbox_id)
) WITHOUT ROWID;

-- Earlier messages keep their ids; each becomes a batch of one (what they share was per row).
INSERT INTO outbox_messages (tenant_id, outbox_id, msg_key, profile_id, recipient_kind, recipient_value, content,
    state, due_at, reserved_at, attempts, attempted_at, lease_until, remote_id, error_code, error_message, logged,
    updated_at)
SELECT tenant_id, outbox_id, msg_key, profile_id, recipient_kind, recipient_value, content, state, due_at,
    COALESCE(reserved_at, due_at), attempts, attempted_at, lease_until, remote_id, error_code, error_message, logged,
    updated_at
FROM outbox;
INSERT INTO outbox_batches (tenant_id, batch_id, last_id, campaign_id, channel, account, sender, scope, marketing,
    open, next_due, unlogged, created_at)
SELECT tenant_id, outbox_id, outbox_id, campaign_id, channel, account, sender, scope, marketing,
    state IN ('queued', 'attempting', 'task'),
    CASE state WHEN 'queued' THEN due_at WHEN 'attempting' THEN lease_until END,
    logged = 0 AND state IN ('sent', 'task', 'delivered', 'failed'),
    updated_at
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_messages RENAME TO outbox;
-- The recipients of a staff-confirmed task (a partial index costs nothing for other messages).
CREATE INDEX outbox_tasks ON outbox (tenant_id, remote_id) WHERE state = 'task';
