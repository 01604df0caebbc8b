//! [`AudienceStore`] on SQLite: tag groups, tags, segments, tag operations, membership history.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use siyu_model::{Millis, TenantId};

use crate::audience::{AudienceKind, AudienceStore, MembershipChange, SegmentRecord, TagGroupRecord, TagOp, TagRecord};
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError};

/// The next per-tenant id of a table (ids of deleted rows are never reused: rows stay, marked).
fn next_id(conn: &Connection, table: &str, column: &str, tenant: TenantId) -> rusqlite::Result<i64> {
    conn.query_row(
        &format!("SELECT COALESCE(MAX({column}), 0) + 1 FROM {table} WHERE tenant_id = ?1"),
        [tenant.0],
        |r| r.get(0),
    )
}

fn name_taken(conn: &Connection, table: &str, tenant: TenantId, name: &str, except: Option<i64>) -> Result<bool> {
    let id_column = match table {
        "tag_groups" => "group_id",
        "tags" => "tag_id",
        _ => "segment_id",
    };
    let found: Option<i64> = conn
        .query_row(
            &format!("SELECT {id_column} FROM {table} WHERE tenant_id = ?1 AND name = ?2 AND deleted_at IS NULL"),
            params![tenant.0, name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(found.is_some_and(|id| Some(id) != except))
}

fn tag_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TagRecord> {
    Ok(TagRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        group_id: r.get(2)?,
        condition: r.get(3)?,
        created_at: Millis(r.get(4)?),
    })
}

fn segment_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SegmentRecord> {
    Ok(SegmentRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        condition: r.get(2)?,
        created_at: Millis(r.get(3)?),
        updated_at: Millis(r.get(4)?),
    })
}

fn mark_deleted(conn: &Connection, table: &str, id_column: &str, tenant: TenantId, id: i64) -> Result<bool> {
    let changed = conn.execute(
        &format!("UPDATE {table} SET deleted_at = ?3 WHERE tenant_id = ?1 AND {id_column} = ?2 AND deleted_at IS NULL"),
        params![tenant.0, id, Millis::now().0],
    )?;
    Ok(changed == 1)
}

const SEGMENT_COLUMNS: &str = "segment_id, name, condition, created_at, updated_at";

#[async_trait]
impl AudienceStore for SqliteStore {
    async fn create_tag_group(&self, tenant: TenantId, name: &str) -> Result<TagGroupRecord> {
        let name = name.to_string();
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            if name_taken(&tx, "tag_groups", tenant, &name, None)? {
                return Err(StoreError::NameTaken { kind: AudienceKind::TagGroup, name });
            }
            let id = next_id(&tx, "tag_groups", "group_id", tenant)?;
            let now = Millis::now();
            tx.execute(
                "INSERT INTO tag_groups (tenant_id, group_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![tenant.0, id, name, now.0],
            )?;
            tx.commit()?;
            Ok(TagGroupRecord { id, name, created_at: now })
        })
        .await
    }

    async fn tag_groups(&self, tenant: TenantId) -> Result<Vec<TagGroupRecord>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT group_id, name, created_at FROM tag_groups WHERE tenant_id = ?1 AND deleted_at IS NULL \
                 ORDER BY group_id",
            )?;
            let rows = stmt
                .query_map([tenant.0], |r| {
                    Ok(TagGroupRecord { id: r.get(0)?, name: r.get(1)?, created_at: Millis(r.get(2)?) })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_tag_group(&self, tenant: TenantId, id: i64) -> Result<bool> {
        self.write(move |w| mark_deleted(&w.conn, "tag_groups", "group_id", tenant, id)).await
    }

    async fn create_tag(
        &self,
        tenant: TenantId,
        name: &str,
        group_id: Option<i64>,
        condition: Option<&str>,
    ) -> Result<TagRecord> {
        let name = name.to_string();
        let condition = condition.map(str::to_string);
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            if name_taken(&tx, "tags", tenant, &name, None)? {
                return Err(StoreError::NameTaken { kind: AudienceKind::Tag, name });
            }
            let id = next_id(&tx, "tags", "tag_id", tenant)?;
            let now = Millis::now();
            tx.execute(
                "INSERT INTO tags (tenant_id, tag_id, name, group_id, condition, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![tenant.0, id, name, group_id, condition, now.0],
            )?;
            tx.commit()?;
            Ok(TagRecord { id, name, group_id, condition, created_at: now })
        })
        .await
    }

    async fn tags(&self, tenant: TenantId) -> Result<Vec<TagRecord>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT tag_id, name, group_id, condition, created_at FROM tags \
                 WHERE tenant_id = ?1 AND deleted_at IS NULL ORDER BY tag_id",
            )?;
            let rows = stmt.query_map([tenant.0], tag_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_tag(&self, tenant: TenantId, id: i64) -> Result<bool> {
        self.write(move |w| mark_deleted(&w.conn, "tags", "tag_id", tenant, id)).await
    }

    async fn update_tag_condition(&self, tenant: TenantId, id: i64, condition: &str) -> Result<bool> {
        let condition = condition.to_string();
        self.write(move |w| {
            let changed = w.conn.execute(
                "UPDATE tags SET condition = ?3 WHERE tenant_id = ?1 AND tag_id = ?2 AND deleted_at IS NULL \
                 AND condition IS NOT NULL",
                params![tenant.0, id, condition],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn append_tag_ops(&self, tenant: TenantId, ops: &[TagOp]) -> Result<Vec<TagOp>> {
        let mut ops = ops.to_vec();
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            let mut id = next_id(&tx, "tag_ops", "op_id", tenant)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO tag_ops (tenant_id, op_id, tag_id, profile_id, identity_kind, identity_value, op, \
                     actor, after_seq, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                for op in &mut ops {
                    op.op_id = id;
                    id += 1;
                    insert.execute(params![
                        tenant.0,
                        op.op_id,
                        op.tag_id,
                        op.profile_id,
                        op.identity_kind,
                        op.identity_value,
                        if op.add { "add" } else { "remove" },
                        op.actor,
                        op.after_seq,
                        op.at.0,
                    ])?;
                }
            }
            tx.commit()?;
            Ok(ops)
        })
        .await
    }

    async fn tag_ops(&self, tenant: TenantId) -> Result<Vec<TagOp>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT op_id, tag_id, profile_id, identity_kind, identity_value, op, actor, after_seq, at \
                 FROM tag_ops WHERE tenant_id = ?1 ORDER BY op_id",
            )?;
            let rows = stmt
                .query_map([tenant.0], |r| {
                    Ok(TagOp {
                        op_id: r.get(0)?,
                        tag_id: r.get(1)?,
                        profile_id: r.get(2)?,
                        identity_kind: r.get(3)?,
                        identity_value: r.get(4)?,
                        add: r.get::<_, String>(5)? == "add",
                        actor: r.get(6)?,
                        after_seq: r.get(7)?,
                        at: Millis(r.get(8)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn create_segment(&self, tenant: TenantId, name: &str, condition: &str) -> Result<SegmentRecord> {
        let name = name.to_string();
        let condition = condition.to_string();
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            if name_taken(&tx, "segments", tenant, &name, None)? {
                return Err(StoreError::NameTaken { kind: AudienceKind::Segment, name });
            }
            let id = next_id(&tx, "segments", "segment_id", tenant)?;
            let now = Millis::now();
            tx.execute(
                "INSERT INTO segments (tenant_id, segment_id, name, condition, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![tenant.0, id, name, condition, now.0],
            )?;
            tx.commit()?;
            Ok(SegmentRecord { id, name, condition, created_at: now, updated_at: now })
        })
        .await
    }

    async fn update_segment(
        &self,
        tenant: TenantId,
        id: i64,
        name: &str,
        condition: &str,
    ) -> Result<Option<SegmentRecord>> {
        let name = name.to_string();
        let condition = condition.to_string();
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            if name_taken(&tx, "segments", tenant, &name, Some(id))? {
                return Err(StoreError::NameTaken { kind: AudienceKind::Segment, name });
            }
            let changed = tx.execute(
                "UPDATE segments SET name = ?3, condition = ?4, updated_at = ?5 \
                 WHERE tenant_id = ?1 AND segment_id = ?2 AND deleted_at IS NULL",
                params![tenant.0, id, name, condition, Millis::now().0],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            let record = tx.query_row(
                &format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant_id = ?1 AND segment_id = ?2"),
                params![tenant.0, id],
                segment_from_row,
            )?;
            tx.commit()?;
            Ok(Some(record))
        })
        .await
    }

    async fn segments(&self, tenant: TenantId) -> Result<Vec<SegmentRecord>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant_id = ?1 AND deleted_at IS NULL ORDER BY segment_id"
            ))?;
            let rows = stmt.query_map([tenant.0], segment_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_segment(&self, tenant: TenantId, id: i64) -> Result<bool> {
        self.write(move |w| mark_deleted(&w.conn, "segments", "segment_id", tenant, id)).await
    }

    async fn append_membership_changes(&self, tenant: TenantId, changes: &[MembershipChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let changes = changes.to_vec();
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            let mut id = next_id(&tx, "segment_changes", "change_id", tenant)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO segment_changes (tenant_id, change_id, segment_id, profile_id, entered, at, seq) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for change in &changes {
                    insert.execute(params![
                        tenant.0,
                        id,
                        change.segment_id,
                        change.profile_id,
                        change.entered,
                        change.at.0,
                        change.seq
                    ])?;
                    id += 1;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn membership_changes(
        &self,
        tenant: TenantId,
        profile_id: Option<i64>,
        segment_id: Option<i64>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<MembershipChange>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT change_id, segment_id, profile_id, entered, at, seq FROM segment_changes \
                 WHERE tenant_id = ?1 AND (?2 IS NULL OR profile_id = ?2) AND (?3 IS NULL OR segment_id = ?3) \
                 AND (?4 IS NULL OR change_id < ?4) ORDER BY change_id DESC LIMIT ?5",
            )?;
            let rows = stmt
                .query_map(params![tenant.0, profile_id, segment_id, before, limit], |r| {
                    Ok(MembershipChange {
                        change_id: r.get(0)?,
                        segment_id: r.get(1)?,
                        profile_id: r.get(2)?,
                        entered: r.get(3)?,
                        at: Millis(r.get(4)?),
                        seq: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn record_segment_sizes(&self, tenant: TenantId, day: &str, sizes: &[(i64, u64)]) -> Result<()> {
        let day = day.to_string();
        let sizes = sizes.to_vec();
        self.write(move |w| {
            let tx = w.conn.transaction()?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO segment_sizes (tenant_id, segment_id, day, size) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (tenant_id, segment_id, day) DO UPDATE SET size = excluded.size",
                )?;
                for (segment, size) in &sizes {
                    upsert.execute(params![tenant.0, segment, day, *size as i64])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn segment_sizes(&self, tenant: TenantId, segment_id: i64) -> Result<Vec<(String, u64)>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT day, size FROM segment_sizes WHERE tenant_id = ?1 AND segment_id = ?2 ORDER BY day",
            )?;
            let rows = stmt
                .query_map(params![tenant.0, segment_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}
