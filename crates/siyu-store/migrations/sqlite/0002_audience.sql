-- Tags and segments (issue 3). Tag groups, tags and segments are operator decisions, not facts
-- about customers, so they are durable records beside the log; a deleted one is only marked, so
-- that its id is never reused and old operations never point at a newer record.
CREATE TABLE tag_groups (
    tenant_id   INTEGER NOT NULL,
    group_id    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    PRIMARY KEY (tenant_id, group_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX tag_groups_by_name ON tag_groups (tenant_id, name) WHERE deleted_at IS NULL;

CREATE TABLE tags (
    tenant_id   INTEGER NOT NULL,
    tag_id      INTEGER NOT NULL,
    name        TEXT NOT NULL,
    group_id    INTEGER,
    -- A rule tag's condition (docs/conditions.md); NULL for a manual tag.
    condition   TEXT,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    PRIMARY KEY (tenant_id, tag_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX tags_by_name ON tags (tenant_id, name) WHERE deleted_at IS NULL;

-- Manual tag operations, append-only. `after_seq` is the log position the operation followed, so
-- a replay applies it at the same point and reproduces the same tags; the profile is named by
-- its anchor identity (profile ids are derived and may change after an unmerge).
CREATE TABLE tag_ops (
    tenant_id       INTEGER NOT NULL,
    op_id           INTEGER NOT NULL,
    tag_id          INTEGER NOT NULL,
    profile_id      INTEGER NOT NULL,
    identity_kind   TEXT NOT NULL,
    identity_value  TEXT NOT NULL,
    op              TEXT NOT NULL CHECK (op IN ('add', 'remove')),
    actor           TEXT NOT NULL,
    after_seq       INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, op_id)
) WITHOUT ROWID;

CREATE TABLE segments (
    tenant_id   INTEGER NOT NULL,
    segment_id  INTEGER NOT NULL,
    name        TEXT NOT NULL,
    condition   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    PRIMARY KEY (tenant_id, segment_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX segments_by_name ON segments (tenant_id, name) WHERE deleted_at IS NULL;

-- Who entered or left a segment, when, and (if an event caused it) which event: the history
-- journeys and campaigns will trigger on.
CREATE TABLE segment_changes (
    tenant_id   INTEGER NOT NULL,
    change_id   INTEGER NOT NULL,
    segment_id  INTEGER NOT NULL,
    profile_id  INTEGER NOT NULL,
    entered     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    seq         INTEGER,
    PRIMARY KEY (tenant_id, change_id)
) WITHOUT ROWID;
CREATE INDEX segment_changes_by_profile ON segment_changes (tenant_id, profile_id, change_id);

-- Segment size per day (China Standard Time), the last measurement of the day wins.
CREATE TABLE segment_sizes (
    tenant_id   INTEGER NOT NULL,
    segment_id  INTEGER NOT NULL,
    day         TEXT NOT NULL,
    size        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, segment_id, day)
) WITHOUT ROWID;
