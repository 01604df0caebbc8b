-- The guardrail ledger is derived from the outbox (ledger.rs): each message counts towards the
-- caps from `reserved_at` (NULL on older rows: their `due_at`), with its purpose. The separate
-- ledger table goes; everything it held is in the outbox rows it was written beside.
ALTER TABLE outbox ADD COLUMN reserved_at INTEGER;
ALTER TABLE outbox ADD COLUMN marketing INTEGER NOT NULL DEFAULT 1;
DROP TABLE reach_ledger;
-- Outcomes whose event the log still owes (a crash between the two): found without walking the
-- outbox, since a row normally gets its outcome and `logged` in one statement.
CREATE INDEX outbox_unlogged ON outbox (tenant_id, outbox_id)
    WHERE logged = 0 AND state IN ('sent', 'task', 'delivered', 'failed');
-- The recipients of a staff-confirmed task.
CREATE INDEX outbox_tasks ON outbox (tenant_id, remote_id) WHERE state = 'task';
