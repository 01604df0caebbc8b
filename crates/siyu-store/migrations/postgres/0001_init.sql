-- Tenants first: every table's key starts with tenant_id, so the schema can be distributed by
-- tenant (Citus) without change.
CREATE TABLE tenants (
    tenant_id   BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    industry    TEXT NOT NULL,
    settings    TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    next_seq    BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE api_keys (
    tenant_id   BIGINT NOT NULL REFERENCES tenants (tenant_id),
    key_hash    TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('write', 'secret')),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key_hash)
);
CREATE UNIQUE INDEX api_keys_by_hash ON api_keys (key_hash);

-- The append-only event log: the only ground truth.
CREATE TABLE events (
    tenant_id    BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    message_id   TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    channel      TEXT NOT NULL,
    account      TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    received_at  BIGINT NOT NULL,
    amount_fen   BIGINT,
    currency     TEXT,
    identities   TEXT NOT NULL,
    source_kind  TEXT,
    source_id    TEXT,
    group_id     TEXT,
    properties   JSONB,
    traits       JSONB,
    context      JSONB,
    PRIMARY KEY (tenant_id, seq)
);
CREATE UNIQUE INDEX events_by_message_id ON events (tenant_id, message_id);
