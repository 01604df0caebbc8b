-- Tags and segments (issue 3). Tag groups, tags and segments are operator decisions, not facts
-- about customers, so they are durable records beside the log; a deleted one is only marked, so
-- that its id is never reused and old operations never point at a newer record.
CREATE TABLE tag_groups (
    tenant_id   BIGINT NOT NULL,
    group_id    BIGINT NOT NULL,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT,
    PRIMARY KEY (tenant_id, group_id)
);
CREATE UNIQUE INDEX tag_groups_by_name ON tag_groups (tenant_id, name) WHERE deleted_at IS NULL;

CREATE TABLE tags (
    tenant_id   BIGINT NOT NULL,
    tag_id      BIGINT NOT NULL,
    name        TEXT NOT NULL,
    group_id    BIGINT,
    -- A rule tag's condition (docs/conditions.md); NULL for a manual tag.
    condition   TEXT,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT,
    PRIMARY KEY (tenant_id, tag_id)
);
CREATE UNIQUE INDEX tags_by_name ON tags (tenant_id, name) WHERE deleted_at IS NULL;

-- Manual tag operations, append-only. `after_seq` is the log position the operation followed, so
-- a replay applies it at the same point and reproduces the same tags; the profile is named by
-- its anchor identity (profile ids are derived and may change after an unmerge).
CREATE TABLE tag_ops (
    tenant_id       BIGINT NOT NULL,
    op_id           BIGINT NOT NULL,
    tag_id          BIGINT NOT NULL,
    profile_id      BIGINT NOT NULL,
    identity_kind   TEXT NOT NULL,
    identity_value  TEXT NOT NULL,
    op              TEXT NOT NULL CHECK (op IN ('add', 'remove')),
    actor           TEXT NOT NULL,
    after_seq       BIGINT NOT NULL,
    at              BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, op_id)
);

CREATE TABLE segments (
    tenant_id   BIGINT NOT NULL,
    segment_id  BIGINT NOT NULL,
    name        TEXT NOT NULL,
    condition   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    deleted_at  BIGINT,
    PRIMARY KEY (tenant_id, segment_id)
);
CREATE UNIQUE INDEX segments_by_name ON segments (tenant_id, name) WHERE deleted_at IS NULL;

-- Who entered or left a segment, when, and (if an event caused it) which event: the history
-- journeys and campaigns will trigger on.
CREATE TABLE segment_changes (
    tenant_id   BIGINT NOT NULL,
    change_id   BIGINT NOT NULL,
    segment_id  BIGINT NOT NULL,
    profile_id  BIGINT NOT NULL,
    entered     BOOLEAN NOT NULL,
    at          BIGINT NOT NULL,
    seq         BIGINT,
    PRIMARY KEY (tenant_id, change_id)
);
CREATE INDEX segment_changes_by_profile ON segment_changes (tenant_id, profile_id, change_id);

-- Segment size per day (China Standard Time), the last measurement of the day wins.
CREATE TABLE segment_sizes (
    tenant_id   BIGINT NOT NULL,
    segment_id  BIGINT NOT NULL,
    day         TEXT NOT NULL,
    size        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, segment_id, day)
);
