-- The outbox in three parts (issue 11, planning and dispatch speed):
-- - outbox_batches: what the messages queued together share, and a summary of their states;
-- - outbox: the messages as planned, narrow and never rewritten;
-- - outbox_attempts: a message's state from its first claim on (state, attempts, lease, outcome).
-- Every secondary index on the message table was paid on every message planned (≈ 7 µs a
-- message, against ≈ 1.2 µs for the row alone), and every claim and outcome rewrote the whole
-- row, content included. The questions the indexes answered — what is due, what belongs to a
-- campaign, what the log still owes — are now asked of the batches, which are few, and then of a
-- batch's messages, a range of the primary key; a claim writes a narrow attempt row.

-- A batch is the messages of one enqueue call: ids `batch_id` (its first message) to `last_id`.
-- They share one due time (the guardrails give one per call). Messages after `claimed_through`
-- were never claimed: they are queued, due at `due_at`, and have no attempt row.
-- `open`, `retry_due`, `next_due` and `unlogged` summarise the messages and are recomputed by every
-- statement that changes one (claim, outcome, cancellation, logging).
CREATE TABLE outbox_batches (
    tenant_id       INTEGER NOT NULL,
    batch_id        INTEGER NOT NULL,
    last_id         INTEGER NOT NULL,
    campaign_id     INTEGER NOT NULL,
    channel         TEXT NOT NULL,
    account         TEXT NOT NULL,
    sender          TEXT,
    scope           TEXT NOT NULL,
    marketing       INTEGER NOT NULL,
    -- When the messages were due and reserved for (the guardrail ledger counts them from then).
    due_at          INTEGER NOT NULL,
    reserved_at     INTEGER NOT NULL,
    claimed_through INTEGER NOT NULL,
    -- Messages without a final outcome (queued, attempting, task).
    open            INTEGER NOT NULL,
    -- The earliest retry due or lease that may lapse among the attempt rows (NULL when none).
    retry_due       INTEGER,
    -- When the batch next has work: `retry_due`, or `due_at` while messages are unclaimed.
    next_due        INTEGER,
    -- Outcomes whose event the log still owes.
    unlogged        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, batch_id)
) WITHOUT ROWID;
CREATE INDEX outbox_batches_due ON outbox_batches (tenant_id, next_due) WHERE next_due IS NOT NULL;
CREATE INDEX outbox_batches_by_campaign ON outbox_batches (tenant_id, campaign_id);
CREATE INDEX outbox_batches_open ON outbox_batches (tenant_id, campaign_id) WHERE open > 0;
CREATE INDEX outbox_batches_unlogged ON outbox_batches (tenant_id, batch_id) WHERE unlogged > 0;
-- The batches after a given message id (the guardrail ledger's tail).
CREATE INDEX outbox_batches_by_last ON outbox_batches (tenant_id, last_id);

CREATE TABLE outbox_messages (
    tenant_id       INTEGER NOT NULL,
    outbox_id       INTEGER NOT NULL,
    msg_key         TEXT NOT NULL,
    profile_id      INTEGER NOT NULL,
    recipient_kind  TEXT NOT NULL,
    recipient_value TEXT NOT NULL,
    content         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, outbox_id)
) WITHOUT ROWID;

CREATE TABLE outbox_attempts (
    tenant_id     INTEGER NOT NULL,
    outbox_id     INTEGER NOT NULL,
    state         TEXT NOT NULL,
    due_at        INTEGER NOT NULL,
    attempts      INTEGER NOT NULL,
    attempted_at  INTEGER,
    lease_until   INTEGER,
    remote_id     TEXT,
    error_code    TEXT,
    error_message TEXT,
    -- The outcome's event was appended to the log (so a crash in between is repaired on start).
    logged        INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, outbox_id)
) WITHOUT ROWID;

-- Earlier messages keep their ids; each becomes a batch of one, claimed (its state an attempt row).
INSERT INTO outbox_messages (tenant_id, outbox_id, msg_key, profile_id, recipient_kind, recipient_value, content)
SELECT tenant_id, outbox_id, msg_key, profile_id, recipient_kind, recipient_value, content FROM outbox;
INSERT INTO outbox_attempts (tenant_id, outbox_id, state, due_at, attempts, attempted_at, lease_until, remote_id,
    error_code, error_message, logged, updated_at)
SELECT tenant_id, outbox_id, state, due_at, attempts, attempted_at, lease_until, remote_id, error_code,
    error_message, logged, updated_at
FROM outbox;
INSERT INTO outbox_batches (tenant_id, batch_id, last_id, campaign_id, channel, account, sender, scope, marketing,
    due_at, reserved_at, claimed_through, open, retry_due, next_due, unlogged, created_at)
SELECT tenant_id, outbox_id, outbox_id, campaign_id, channel, account, sender, scope, marketing,
    due_at, COALESCE(reserved_at, due_at), outbox_id,
    state IN ('queued', 'attempting', 'task'),
    CASE state WHEN 'queued' THEN due_at WHEN 'attempting' THEN lease_until END,
    CASE state WHEN 'queued' THEN due_at WHEN 'attempting' THEN lease_until END,
    logged = 0 AND state IN ('sent', 'task', 'delivered', 'failed'),
    updated_at
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_messages RENAME TO outbox;
-- The recipients of a staff-confirmed task (a partial index costs nothing for other rows; created
-- last, since the old table's index of that name went with it).
CREATE INDEX outbox_tasks ON outbox_attempts (tenant_id, remote_id) WHERE state = 'task';

-- Who a campaign did not send to, a run per rule and enqueue call rather than a row per person
-- (a row each was ≈ 1.3 µs of the writer's time per held person). `profiles` lists the people,
-- comma-separated; a person held twice (a plan resumed) counts once, by their first run.
CREATE TABLE campaign_hold_runs (
    tenant_id   INTEGER NOT NULL,
    campaign_id INTEGER NOT NULL,
    run_id      INTEGER NOT NULL,
    rule        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    profiles    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, run_id)
) WITHOUT ROWID;
INSERT INTO campaign_hold_runs (tenant_id, campaign_id, run_id, rule, at, profiles)
SELECT tenant_id, campaign_id, ROW_NUMBER() OVER (PARTITION BY tenant_id, campaign_id ORDER BY profile_id), rule, at,
    CAST(profile_id AS TEXT)
FROM campaign_holds;
DROP TABLE campaign_holds;
