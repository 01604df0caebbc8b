//! [`AudienceStore`] on PostgreSQL. Per-tenant ids are taken under a transaction-scoped advisory
//! lock of the tenant, so concurrent writers of one tenant never pick the same id and writers of
//! different tenants never wait on each other.

use async_trait::async_trait;
use siyu_model::{Millis, TenantId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::audience::{AudienceKind, AudienceStore, MembershipChange, SegmentRecord, TagGroupRecord, TagOp, TagRecord};
use crate::postgres::PostgresStore;
use crate::{Result, StoreError};

/// Base of the advisory lock keys of audience writes ("SY" in the top bytes), plus the tenant id.
const AUDIENCE_LOCK: i64 = 0x5359_0000_0000_0000;

async fn lock_tenant(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(AUDIENCE_LOCK + tenant.0).execute(conn).await?;
    Ok(())
}

async fn next_id(conn: &mut PgConnection, table: &str, column: &str, tenant: TenantId) -> Result<i64> {
    Ok(sqlx::query_scalar(&format!("SELECT COALESCE(MAX({column}), 0) + 1 FROM {table} WHERE tenant_id = $1"))
        .bind(tenant.0)
        .fetch_one(conn)
        .await?)
}

async fn name_taken(
    conn: &mut PgConnection,
    table: &str,
    tenant: TenantId,
    name: &str,
    except: Option<i64>,
) -> Result<bool> {
    let id_column = match table {
        "tag_groups" => "group_id",
        "tags" => "tag_id",
        _ => "segment_id",
    };
    let found: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT {id_column} FROM {table} WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL"
    ))
    .bind(tenant.0)
    .bind(name)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some_and(|id| Some(id) != except))
}

fn segment_from_row(r: &PgRow) -> Result<SegmentRecord> {
    Ok(SegmentRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        condition: r.try_get(2)?,
        created_at: Millis(r.try_get(3)?),
        updated_at: Millis(r.try_get(4)?),
    })
}

const SEGMENT_COLUMNS: &str = "segment_id, name, condition, created_at, updated_at";

impl PostgresStore {
    async fn mark_deleted(&self, table: &str, id_column: &str, tenant: TenantId, id: i64) -> Result<bool> {
        let changed = sqlx::query(&format!(
            "UPDATE {table} SET deleted_at = $3 WHERE tenant_id = $1 AND {id_column} = $2 AND deleted_at IS NULL"
        ))
        .bind(tenant.0)
        .bind(id)
        .bind(Millis::now().0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }
}

#[async_trait]
impl AudienceStore for PostgresStore {
    async fn create_tag_group(&self, tenant: TenantId, name: &str) -> Result<TagGroupRecord> {
        let mut tx = self.pool.begin().await?;
        lock_tenant(&mut tx, tenant).await?;
        if name_taken(&mut tx, "tag_groups", tenant, name, None).await? {
            return Err(StoreError::NameTaken { kind: AudienceKind::TagGroup, name: name.to_string() });
        }
        let id = next_id(&mut tx, "tag_groups", "group_id", tenant).await?;
        let now = Millis::now();
        sqlx::query("INSERT INTO tag_groups (tenant_id, group_id, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.0)
            .bind(id)
            .bind(name)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(TagGroupRecord { id, name: name.to_string(), created_at: now })
    }

    async fn tag_groups(&self, tenant: TenantId) -> Result<Vec<TagGroupRecord>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT group_id, name, created_at FROM tag_groups WHERE tenant_id = $1 AND deleted_at IS NULL \
             ORDER BY group_id",
        )
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id, name, at)| TagGroupRecord { id, name, created_at: Millis(at) }).collect())
    }

    async fn delete_tag_group(&self, tenant: TenantId, id: i64) -> Result<bool> {
        self.mark_deleted("tag_groups", "group_id", tenant, id).await
    }

    async fn create_tag(
        &self,
        tenant: TenantId,
        name: &str,
        group_id: Option<i64>,
        condition: Option<&str>,
    ) -> Result<TagRecord> {
        let mut tx = self.pool.begin().await?;
        lock_tenant(&mut tx, tenant).await?;
        if name_taken(&mut tx, "tags", tenant, name, None).await? {
            return Err(StoreError::NameTaken { kind: AudienceKind::Tag, name: name.to_string() });
        }
        let id = next_id(&mut tx, "tags", "tag_id", tenant).await?;
        let now = Millis::now();
        sqlx::query(
            "INSERT INTO tags (tenant_id, tag_id, name, group_id, condition, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.0)
        .bind(id)
        .bind(name)
        .bind(group_id)
        .bind(condition)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TagRecord {
            id,
            name: name.to_string(),
            group_id,
            condition: condition.map(str::to_string),
            created_at: now,
        })
    }

    async fn tags(&self, tenant: TenantId) -> Result<Vec<TagRecord>> {
        let rows: Vec<(i64, String, Option<i64>, Option<String>, i64)> = sqlx::query_as(
            "SELECT tag_id, name, group_id, condition, created_at FROM tags \
             WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY tag_id",
        )
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, group_id, condition, at)| TagRecord {
                id,
                name,
                group_id,
                condition,
                created_at: Millis(at),
            })
            .collect())
    }

    async fn delete_tag(&self, tenant: TenantId, id: i64) -> Result<bool> {
        self.mark_deleted("tags", "tag_id", tenant, id).await
    }

    async fn update_tag_condition(&self, tenant: TenantId, id: i64, condition: &str) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE tags SET condition = $3 WHERE tenant_id = $1 AND tag_id = $2 AND deleted_at IS NULL \
             AND condition IS NOT NULL",
        )
        .bind(tenant.0)
        .bind(id)
        .bind(condition)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn append_tag_ops(&self, tenant: TenantId, ops: &[TagOp]) -> Result<Vec<TagOp>> {
        let mut ops = ops.to_vec();
        if ops.is_empty() {
            return Ok(ops);
        }
        let mut tx = self.pool.begin().await?;
        lock_tenant(&mut tx, tenant).await?;
        let first = next_id(&mut tx, "tag_ops", "op_id", tenant).await?;
        for (i, op) in ops.iter_mut().enumerate() {
            op.op_id = first + i as i64;
        }
        sqlx::query(
            "INSERT INTO tag_ops (tenant_id, op_id, tag_id, profile_id, identity_kind, identity_value, op, actor, \
             after_seq, at) SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::bigint[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[])",
        )
        .bind(tenant.0)
        .bind(ops.iter().map(|o| o.op_id).collect::<Vec<_>>())
        .bind(ops.iter().map(|o| o.tag_id).collect::<Vec<_>>())
        .bind(ops.iter().map(|o| o.profile_id).collect::<Vec<_>>())
        .bind(ops.iter().map(|o| o.identity_kind.as_str()).collect::<Vec<_>>())
        .bind(ops.iter().map(|o| o.identity_value.as_str()).collect::<Vec<_>>())
        .bind(ops.iter().map(|o| if o.add { "add" } else { "remove" }).collect::<Vec<_>>())
        .bind(ops.iter().map(|o| o.actor.as_str()).collect::<Vec<_>>())
        .bind(ops.iter().map(|o| o.after_seq).collect::<Vec<_>>())
        .bind(ops.iter().map(|o| o.at.0).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ops)
    }

    async fn tag_ops(&self, tenant: TenantId) -> Result<Vec<TagOp>> {
        let rows = sqlx::query(
            "SELECT op_id, tag_id, profile_id, identity_kind, identity_value, op, actor, after_seq, at \
             FROM tag_ops WHERE tenant_id = $1 ORDER BY op_id",
        )
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TagOp {
                    op_id: r.try_get(0)?,
                    tag_id: r.try_get(1)?,
                    profile_id: r.try_get(2)?,
                    identity_kind: r.try_get(3)?,
                    identity_value: r.try_get(4)?,
                    add: r.try_get::<String, _>(5)? == "add",
                    actor: r.try_get(6)?,
                    after_seq: r.try_get(7)?,
                    at: Millis(r.try_get(8)?),
                })
            })
            .collect()
    }

    async fn create_segment(&self, tenant: TenantId, name: &str, condition: &str) -> Result<SegmentRecord> {
        let mut tx = self.pool.begin().await?;
        lock_tenant(&mut tx, tenant).await?;
        if name_taken(&mut tx, "segments", tenant, name, None).await? {
            return Err(StoreError::NameTaken { kind: AudienceKind::Segment, name: name.to_string() });
        }
        let id = next_id(&mut tx, "segments", "segment_id", tenant).await?;
        let now = Millis::now();
        sqlx::query(
            "INSERT INTO segments (tenant_id, segment_id, name, condition, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(tenant.0)
        .bind(id)
        .bind(name)
        .bind(condition)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SegmentRecord {
            id,
            name: name.to_string(),
            condition: condition.to_string(),
            created_at: now,
            updated_at: now,
        })
    }

    async fn update_segment(
        &self,
        tenant: TenantId,
        id: i64,
        name: &str,
        condition: &str,
    ) -> Result<Option<SegmentRecord>> {
        let mut tx = self.pool.begin().await?;
        lock_tenant(&mut tx, tenant).await?;
        if name_taken(&mut tx, "segments", tenant, name, Some(id)).await? {
            return Err(StoreError::NameTaken { kind: AudienceKind::Segment, name: name.to_string() });
        }
        let row = sqlx::query(&format!(
            "UPDATE segments SET name = $3, condition = $4, updated_at = $5 \
             WHERE tenant_id = $1 AND segment_id = $2 AND deleted_at IS NULL RETURNING {SEGMENT_COLUMNS}"
        ))
        .bind(tenant.0)
        .bind(id)
        .bind(name)
        .bind(condition)
        .bind(Millis::now().0)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(segment_from_row).transpose()
    }

    async fn segments(&self, tenant: TenantId) -> Result<Vec<SegmentRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY segment_id"
        ))
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(segment_from_row).collect()
    }

    async fn delete_segment(&self, tenant: TenantId, id: i64) -> Result<bool> {
        self.mark_deleted("segments", "segment_id", tenant, id).await
    }

    async fn append_membership_changes(&self, tenant: TenantId, changes: &[MembershipChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        lock_tenant(&mut tx, tenant).await?;
        let first = next_id(&mut tx, "segment_changes", "change_id", tenant).await?;
        sqlx::query(
            "INSERT INTO segment_changes (tenant_id, change_id, segment_id, profile_id, entered, at, seq) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::bigint[], $5::boolean[], $6::bigint[], $7::bigint[])",
        )
        .bind(tenant.0)
        .bind((0..changes.len() as i64).map(|i| first + i).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.segment_id).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.profile_id).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.entered).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.at.0).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.seq).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
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
        let rows = sqlx::query(
            "SELECT change_id, segment_id, profile_id, entered, at, seq FROM segment_changes \
             WHERE tenant_id = $1 AND ($2::bigint IS NULL OR profile_id = $2) \
             AND ($3::bigint IS NULL OR segment_id = $3) AND ($4::bigint IS NULL OR change_id < $4) \
             ORDER BY change_id DESC LIMIT $5",
        )
        .bind(tenant.0)
        .bind(profile_id)
        .bind(segment_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MembershipChange {
                    change_id: r.try_get(0)?,
                    segment_id: r.try_get(1)?,
                    profile_id: r.try_get(2)?,
                    entered: r.try_get(3)?,
                    at: Millis(r.try_get(4)?),
                    seq: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn record_segment_sizes(&self, tenant: TenantId, day: &str, sizes: &[(i64, u64)]) -> Result<()> {
        if sizes.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO segment_sizes (tenant_id, segment_id, day, size) \
             SELECT $1, s, $2, n FROM UNNEST($3::bigint[], $4::bigint[]) AS t (s, n) \
             ON CONFLICT (tenant_id, segment_id, day) DO UPDATE SET size = excluded.size",
        )
        .bind(tenant.0)
        .bind(day)
        .bind(sizes.iter().map(|(s, _)| *s).collect::<Vec<_>>())
        .bind(sizes.iter().map(|(_, n)| *n as i64).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn segment_sizes(&self, tenant: TenantId, segment_id: i64) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT day, size FROM segment_sizes WHERE tenant_id = $1 AND segment_id = $2 ORDER BY day")
                .bind(tenant.0)
                .bind(segment_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(day, size)| (day, size as u64)).collect())
    }
}
