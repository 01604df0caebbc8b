-- Reach (issue 11): templates, campaigns, the outbox, the guardrail ledger, suppression lists and
-- staff-confirmed tasks. Operator decisions and the record of what was sent; the sends' effects on
-- customers also enter the event log (message_out, message_delivered, message_failed).
CREATE TABLE templates (
    tenant_id   BIGINT NOT NULL,
    template_id BIGINT NOT NULL,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    deleted_at  BIGINT,
    PRIMARY KEY (tenant_id, template_id)
);
CREATE UNIQUE INDEX templates_by_name ON templates (tenant_id, name) WHERE deleted_at IS NULL;

CREATE TABLE campaigns (
    tenant_id   BIGINT NOT NULL,
    campaign_id BIGINT NOT NULL,
    name        TEXT NOT NULL,
    -- The campaign as the operator asked for it (siyu_model::reach::CampaignSpec, JSON).
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    -- When planning started and ended; planned = recipients queued.
    planned_at  BIGINT,
    planned     BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id)
);
CREATE UNIQUE INDEX campaigns_by_name ON campaigns (tenant_id, name);

-- Who a campaign did not send to, and which rule (or the holdout) kept them.
CREATE TABLE campaign_holds (
    tenant_id   BIGINT NOT NULL,
    campaign_id BIGINT NOT NULL,
    profile_id  BIGINT NOT NULL,
    rule        TEXT NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, profile_id)
);

-- One row per message, written before any attempt. `msg_key` is the idempotency key that travels
-- with the message; a row is never deleted.
CREATE TABLE outbox (
    tenant_id       BIGINT NOT NULL,
    outbox_id       BIGINT NOT NULL,
    msg_key         TEXT NOT NULL,
    campaign_id     BIGINT NOT NULL,
    profile_id      BIGINT NOT NULL,
    channel         TEXT NOT NULL,
    account         TEXT NOT NULL,
    sender          TEXT,
    scope           TEXT NOT NULL,
    recipient_kind  TEXT NOT NULL,
    recipient_value TEXT NOT NULL,
    content         TEXT NOT NULL,
    state           TEXT NOT NULL,
    due_at          BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    attempted_at    BIGINT,
    lease_until     BIGINT,
    remote_id       TEXT,
    error_code      TEXT,
    error_message   TEXT,
    -- The outcome's event was appended to the log (so a crash in between is repaired on start).
    logged          BIGINT NOT NULL DEFAULT 0,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, outbox_id)
);
CREATE UNIQUE INDEX outbox_by_key ON outbox (tenant_id, msg_key);
CREATE INDEX outbox_due ON outbox (tenant_id, state, due_at);
CREATE INDEX outbox_by_campaign ON outbox (tenant_id, campaign_id, state);

-- What was reserved for each person (siyu_model::reach::Sent, a JSON array), read and written
-- inside the transaction that queues a send, so that concurrent senders never exceed a cap.
CREATE TABLE reach_ledger (
    tenant_id   BIGINT NOT NULL,
    profile_id  BIGINT NOT NULL,
    sends       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, profile_id)
);

CREATE TABLE suppressions (
    tenant_id       BIGINT NOT NULL,
    list            TEXT NOT NULL,
    identity_kind   TEXT NOT NULL,
    identity_value  TEXT NOT NULL,
    reason          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, list, identity_kind, identity_value)
);

-- Sends a staff member must confirm in the channel's app (WeCom mass messages).
CREATE TABLE staff_tasks_out (
    tenant_id    BIGINT NOT NULL,
    task_id      TEXT NOT NULL,
    campaign_id  BIGINT NOT NULL,
    account      TEXT NOT NULL,
    sender       TEXT NOT NULL,
    state        TEXT NOT NULL,
    recipients   BIGINT NOT NULL,
    delivered    BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    deadline     BIGINT NOT NULL,
    chased_at    BIGINT,
    reassigned_to TEXT,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, task_id)
);
