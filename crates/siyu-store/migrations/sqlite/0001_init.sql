-- Tenants first: every table's key starts with tenant_id.
CREATE TABLE tenants (
    tenant_id   INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    industry    TEXT NOT NULL,
    settings    TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    tenant_id   INTEGER NOT NULL REFERENCES tenants (tenant_id),
    key_hash    TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('write', 'secret')),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key_hash)
);
CREATE UNIQUE INDEX api_keys_by_hash ON api_keys (key_hash);

-- The append-only event log: the only ground truth. Clustered by (tenant, seq) so a tenant's
-- replay is one sequential range scan; message_id makes a retry idempotent.
CREATE TABLE events (
    tenant_id    INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    message_id   TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    channel      TEXT NOT NULL,
    account      TEXT NOT NULL,
    ts           INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    amount_fen   INTEGER,
    currency     TEXT,
    identities   TEXT NOT NULL,
    source_kind  TEXT,
    source_id    TEXT,
    group_id     TEXT,
    properties   TEXT,
    traits       TEXT,
    context      TEXT,
    PRIMARY KEY (tenant_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX events_by_message_id ON events (tenant_id, message_id);
