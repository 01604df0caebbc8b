-- WeCom contact ways (渠道活码) siyu created: an operator decision beside the log. Customers who add
-- through one arrive (callback or sync) with its `state` as their source, `contact_way:<state>`,
-- which is how their adds, orders and revenue are attributed to it.
CREATE TABLE contact_ways (
    tenant_id   BIGINT NOT NULL,
    state       TEXT NOT NULL,
    config_id   TEXT NOT NULL,
    qr_code     TEXT,
    account     TEXT NOT NULL,
    -- The staff userids, a JSON array of strings.
    staff       TEXT NOT NULL,
    campaign_id BIGINT,
    remark      TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, state)
);
