//! The durable records of tags and segments (issue 3): what operators decide and what is not
//! derivable from events — tag groups, tags, segment definitions and manual tag operations — plus
//! the segment membership history and daily sizes, which journeys and reports read back.
//!
//! A separate trait (a supertrait of [`Store`](crate::Store)) so that the event-log methods and
//! these stay apart; both back-ends implement it in `sqlite_audience.rs` / `postgres_audience.rs`.

use async_trait::async_trait;
use siyu_model::{Millis, Seq, TenantId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagGroupRecord {
    pub id: i64,
    pub name: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    pub id: i64,
    pub name: String,
    pub group_id: Option<i64>,
    /// A rule tag's condition text (canonical form); `None` for a manual tag.
    pub condition: Option<String>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecord {
    pub id: i64,
    pub name: String,
    /// The condition in canonical form.
    pub condition: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A manual tag operation. `op_id` is assigned by the store (0 on the way in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagOp {
    pub op_id: i64,
    pub tag_id: i64,
    /// The profile id at the time (for display; replays resolve `identity_*`).
    pub profile_id: i64,
    pub identity_kind: String,
    pub identity_value: String,
    pub add: bool,
    /// Who did it: `api`, `cli`, `segment:7`, … free text, never a secret.
    pub actor: String,
    /// The log position the operation followed.
    pub after_seq: Seq,
    pub at: Millis,
}

/// A profile entering (`entered`) or leaving a segment. `change_id` is assigned by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub change_id: i64,
    pub segment_id: i64,
    pub profile_id: i64,
    pub entered: bool,
    pub at: Millis,
    /// The event that caused it; `None` when time passing (or a definition change) did.
    pub seq: Option<Seq>,
}

/// Which audience record a name clash or a missing id is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceKind {
    TagGroup,
    Tag,
    Segment,
    Template,
    Campaign,
}

impl AudienceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AudienceKind::TagGroup => "tag group",
            AudienceKind::Tag => "tag",
            AudienceKind::Segment => "segment",
            AudienceKind::Template => "template",
            AudienceKind::Campaign => "campaign",
        }
    }
}

/// Tags, segments and their histories. Every method takes the tenant first.
#[async_trait]
pub trait AudienceStore: Send + Sync {
    /// Fails with [`StoreError::NameTaken`](crate::StoreError::NameTaken) when a live group has the name.
    async fn create_tag_group(&self, tenant: TenantId, name: &str) -> Result<TagGroupRecord>;
    /// Live groups in id order.
    async fn tag_groups(&self, tenant: TenantId) -> Result<Vec<TagGroupRecord>>;
    /// Marks a group deleted; false when there was no such live group.
    async fn delete_tag_group(&self, tenant: TenantId, id: i64) -> Result<bool>;

    async fn create_tag(
        &self,
        tenant: TenantId,
        name: &str,
        group_id: Option<i64>,
        condition: Option<&str>,
    ) -> Result<TagRecord>;
    /// Live tags in id order.
    async fn tags(&self, tenant: TenantId) -> Result<Vec<TagRecord>>;
    async fn delete_tag(&self, tenant: TenantId, id: i64) -> Result<bool>;
    /// Replaces a live rule tag's condition; false when there is no such live rule tag (a manual
    /// tag never gets a condition).
    async fn update_tag_condition(&self, tenant: TenantId, id: i64, condition: &str) -> Result<bool>;

    /// Appends manual tag operations in order, assigning `op_id`s; returns them.
    async fn append_tag_ops(&self, tenant: TenantId, ops: &[TagOp]) -> Result<Vec<TagOp>>;
    /// Every tag operation of the tenant in `op_id` order.
    async fn tag_ops(&self, tenant: TenantId) -> Result<Vec<TagOp>>;

    async fn create_segment(&self, tenant: TenantId, name: &str, condition: &str) -> Result<SegmentRecord>;
    /// Renames and/or redefines a live segment; `None` when there is no such live segment.
    async fn update_segment(
        &self,
        tenant: TenantId,
        id: i64,
        name: &str,
        condition: &str,
    ) -> Result<Option<SegmentRecord>>;
    /// Live segments in id order.
    async fn segments(&self, tenant: TenantId) -> Result<Vec<SegmentRecord>>;
    async fn delete_segment(&self, tenant: TenantId, id: i64) -> Result<bool>;

    /// Appends membership changes in order, assigning `change_id`s.
    async fn append_membership_changes(&self, tenant: TenantId, changes: &[MembershipChange]) -> Result<()>;
    /// Changes newest first, of one profile and/or one segment, with `change_id < before`.
    async fn membership_changes(
        &self,
        tenant: TenantId,
        profile_id: Option<i64>,
        segment_id: Option<i64>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<MembershipChange>>;

    /// Records the sizes of segments on `day` (`YYYY-MM-DD`), replacing that day's earlier figure.
    async fn record_segment_sizes(&self, tenant: TenantId, day: &str, sizes: &[(i64, u64)]) -> Result<()>;
    /// `(day, size)` of a segment, oldest first.
    async fn segment_sizes(&self, tenant: TenantId, segment_id: i64) -> Result<Vec<(String, u64)>>;
}
