//! What operators do with tags and segments, as [`Engine`] methods: define, tag by hand (one
//! profile or a whole segment), preview, list members, export. Each change is made durable in the
//! store and applied to the in-memory state; reads come from memory.

use siyu_model::condition::{compile, parse, ConditionError};
use siyu_model::score::RfmMeans;
use siyu_model::{Millis, ProfileId, ProfileScores, TenantId};
use siyu_store::{AudienceKind, MembershipChange, StoreError, TagOp};

use super::{cheapest_first, cst_day, Entry, Evaluator, Members, Segment};
use crate::query::{channels_of, name_of, yuan, ProfileRef, ProfileRow};
use crate::state::{AsOf, ProfileAt, TenantState};
use crate::{Engine, EngineError, Result};

/// Which record a name clash or a missing id is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    TagGroup,
    Tag,
    Segment,
    Template,
    Campaign,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::TagGroup => "tag group",
            RecordKind::Tag => "tag",
            RecordKind::Segment => "segment",
            RecordKind::Template => "template",
            RecordKind::Campaign => "campaign",
        }
    }
}

impl From<AudienceKind> for RecordKind {
    fn from(kind: AudienceKind) -> RecordKind {
        match kind {
            AudienceKind::TagGroup => RecordKind::TagGroup,
            AudienceKind::Tag => RecordKind::Tag,
            AudienceKind::Segment => RecordKind::Segment,
            AudienceKind::Template => RecordKind::Template,
            AudienceKind::Campaign => RecordKind::Campaign,
        }
    }
}

/// A refusal of a tag or segment operation.
#[derive(Debug, thiserror::Error)]
pub enum SegmentsError {
    /// The condition does not parse or check; every error carries its line and column.
    #[error("invalid condition: {}", .0.first().map(ToString::to_string).unwrap_or_default())]
    InvalidCondition(Vec<ConditionError>),
    #[error("a {} named {name:?} already exists", kind.as_str())]
    NameTaken { kind: RecordKind, name: String },
    #[error("no {} {what}", kind.as_str())]
    NotFound { kind: RecordKind, what: String },
    /// The record is still used (a tag read by a segment's condition).
    #[error("{0}")]
    InUse(String),
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    /// A rule tag is applied and removed by its condition only.
    #[error("tag {0:?} is a rule tag: its condition applies and removes it")]
    RuleTag(String),
    /// A rule tag would read itself, directly or through other rule tags: the path, e.g. A, B, A.
    #[error("the condition makes a cycle of rule tags: {}", .0.join(" → "))]
    Cycle(Vec<String>),
}

fn map_store(e: StoreError) -> EngineError {
    match e {
        StoreError::NameTaken { kind, name } => SegmentsError::NameTaken { kind: kind.into(), name }.into(),
        other => other.into(),
    }
}

fn not_found(kind: RecordKind, what: impl ToString) -> EngineError {
    SegmentsError::NotFound { kind, what: what.to_string() }.into()
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(SegmentsError::Invalid {
            field: "name",
            message: "a name is 1 to 100 characters, without control characters".into(),
        }
        .into());
    }
    Ok(name.to_string())
}

#[derive(Debug, Clone, PartialEq)]
pub struct TagGroupView {
    pub id: i64,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TagView {
    pub id: i64,
    pub name: String,
    pub group_id: Option<i64>,
    /// `manual` (set by operators, imports and bulk actions) or `rule` (set by its condition).
    pub kind: String,
    /// A rule tag's condition, in canonical form.
    pub condition: Option<String>,
    /// Profiles carrying the tag now.
    pub profiles: u64,
    pub created_at: String,
}

/// One manual tag operation on a profile: who, when, after which log position.
#[derive(Debug, Clone, PartialEq)]
pub struct TagHistoryEntry {
    pub tag: String,
    /// `added` | `removed`
    pub action: String,
    /// Who: `api`, `cli`, `segment:<id>` (bulk by segment), `rule:<tag id>` (a rule tag), …
    pub actor: String,
    pub at: String,
    /// The last event in the log when it happened (for a rule tag: the event that caused it).
    pub after_seq: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileTags {
    pub profile_id: ProfileId,
    pub tags: Vec<String>,
    /// Newest first.
    pub history: Vec<TagHistoryEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentView {
    pub id: i64,
    pub name: String,
    /// The condition in canonical form.
    pub condition: String,
    pub size: u64,
    /// Whether time alone can change membership (windows, `ago`, decaying scores): such segments
    /// are re-evaluated by the periodic sweep.
    pub time_dependent: bool,
    /// Set when the stored condition no longer checks (it then matches nobody).
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentPreview {
    /// The condition in canonical form.
    pub condition: String,
    pub size: u64,
    /// Up to `sample` members, in id order.
    pub sample: Vec<ProfileRow>,
    pub time_dependent: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MembershipChangeView {
    pub id: i64,
    pub segment_id: i64,
    pub profile_id: i64,
    /// `entered` | `exited`
    pub change: String,
    pub at: String,
    /// The event that caused it (null when time passing or a definition change did).
    pub seq: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentMembers {
    pub items: Vec<ProfileRow>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SizePoint {
    /// China Standard Time day.
    pub day: String,
    pub size: u64,
}

/// What a tag operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagAction {
    Add,
    Remove,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

/// Fields an export may contain (besides `traits.KEY` and identity kinds).
pub const EXPORT_FIELDS: [&str; 14] = [
    "id",
    "name",
    "tier",
    "pool_stage",
    "ownership",
    "rfm",
    "affinity",
    "reachable",
    "net_revenue",
    "paid_orders",
    "first_seen",
    "last_seen",
    "tags",
    "channels",
];

fn segment_view(segment: &Segment) -> SegmentView {
    SegmentView {
        id: segment.record.id,
        name: segment.record.name.clone(),
        condition: segment.record.condition.clone(),
        size: segment.members.size(),
        time_dependent: segment.deps.time_dependent || segment.deps.tenant_wide,
        error: segment.error.clone(),
        created_at: segment.record.created_at.to_rfc3339(),
        updated_at: segment.record.updated_at.to_rfc3339(),
    }
}

fn change_view(c: &MembershipChange) -> MembershipChangeView {
    MembershipChangeView {
        id: c.change_id,
        segment_id: c.segment_id,
        profile_id: c.profile_id,
        change: if c.entered { "entered" } else { "exited" }.to_string(),
        at: c.at.to_rfc3339(),
        seq: c.seq,
    }
}

/// Checks a rule tag's condition: it parses and checks (the tag may name itself, so that a
/// self-reference is reported as a cycle) and makes no cycle through other rule tags. Returns the
/// canonical text.
fn check_rule(state: &TenantState, name: &str, text: &str) -> Result<String> {
    let mut schema = state.schema();
    schema.tags.insert(name.to_string());
    let condition = compile(text, &schema).map_err(SegmentsError::InvalidCondition)?;
    let canonical = parse(text).map_err(|e| SegmentsError::InvalidCondition(vec![e]))?.to_string();
    let mut rules: Vec<(String, std::collections::BTreeSet<String>)> = state
        .segments
        .entries
        .iter()
        .filter(|s| s.rule_tag.is_some() && s.record.name != name)
        .map(|s| (s.record.name.clone(), s.deps.tags.clone()))
        .collect();
    // First, so that a cycle (which must pass through it) is named from it.
    rules.insert(0, (name.to_string(), condition.references_tags()));
    super::dependency_order(&rules).map_err(SegmentsError::Cycle)?;
    Ok(canonical)
}

/// Parses and checks a condition against the tenant's state; returns it with its canonical text.
fn checked(state: &TenantState, text: &str) -> Result<(siyu_model::condition::Condition, String)> {
    let schema = state.schema();
    let condition = compile(text, &schema).map_err(SegmentsError::InvalidCondition)?;
    let canonical = parse(text).map_err(|e| SegmentsError::InvalidCondition(vec![e]))?.to_string();
    Ok((condition, canonical))
}

impl Engine {
    // --- tag groups -----------------------------------------------------------------------

    pub async fn create_tag_group(&self, tenant: TenantId, name: &str) -> Result<TagGroupView> {
        let name = check_name(name)?;
        let runtime = self.tenant(tenant)?;
        let record = self.store().create_tag_group(tenant, &name).await.map_err(map_store)?;
        runtime.state.write().segments.groups.push(record.clone());
        Ok(TagGroupView { id: record.id, name: record.name, created_at: record.created_at.to_rfc3339() })
    }

    pub fn tag_groups(&self, tenant: TenantId) -> Result<Vec<TagGroupView>> {
        let runtime = self.tenant(tenant)?;
        let state = runtime.state.read();
        Ok(state
            .segments
            .groups
            .iter()
            .map(|g| TagGroupView { id: g.id, name: g.name.clone(), created_at: g.created_at.to_rfc3339() })
            .collect())
    }

    /// Deletes a group; its tags stay, without a group.
    pub async fn delete_tag_group(&self, tenant: TenantId, id: i64) -> Result<()> {
        let runtime = self.tenant(tenant)?;
        if !self.store().delete_tag_group(tenant, id).await? {
            return Err(not_found(RecordKind::TagGroup, id));
        }
        runtime.state.write().segments.groups.retain(|g| g.id != id);
        Ok(())
    }

    // --- tags -----------------------------------------------------------------------------

    /// Creates a tag; with a condition, a rule tag, applied and removed by the condition as
    /// profiles change (refused when it would read itself through rule tags).
    pub async fn create_tag(
        &self,
        tenant: TenantId,
        name: &str,
        group_id: Option<i64>,
        condition: Option<&str>,
    ) -> Result<TagView> {
        let name = check_name(name)?;
        let runtime = self.tenant(tenant)?;
        if let Some(group) = group_id {
            if !runtime.state.read().segments.groups.iter().any(|g| g.id == group) {
                return Err(
                    SegmentsError::Invalid { field: "group_id", message: format!("no tag group {group}") }.into()
                );
            }
        }
        let canonical = match condition {
            Some(text) => Some(check_rule(&runtime.state.read(), &name, text)?),
            None => None,
        };
        let record = self.store().create_tag(tenant, &name, group_id, canonical.as_deref()).await.map_err(map_store)?;
        // For a rule tag: the event types whose properties its condition newly needs.
        let rule = {
            let mut state = runtime.state.write();
            let mut tags = state.segments.tags.clone();
            tags.push(record.clone());
            state.segments.set_tags(tags);
            match &record.condition {
                None => None,
                Some(text) => {
                    let schema = state.schema();
                    let compiled = compile(text, &schema)
                        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
                    let entry = Segment::rule(&state, &record, compiled);
                    state.segments.entries.push(entry);
                    state.segments.order();
                    Some(state.recount_property_types())
                }
            }
        };
        if let Some(new_types) = rule {
            self.load_properties(tenant, &new_types).await?;
            let changes = self.evaluate_fully(&runtime, Entry::RuleTag(record.id as u32)).await?;
            self.store_derived(tenant, Vec::new(), &changes).await;
        }
        let view = self.tags(tenant)?.into_iter().find(|t| t.id == record.id);
        view.ok_or_else(|| not_found(RecordKind::Tag, record.id))
    }

    /// Redefines a rule tag: checked (and refused on a cycle) as at creation; profiles that now
    /// match get the tag, those that no longer do lose it, each recorded in the tag history.
    pub async fn update_rule_tag(&self, tenant: TenantId, id: i64, text: &str) -> Result<TagView> {
        let runtime = self.tenant(tenant)?;
        let canonical = {
            let state = runtime.state.read();
            let tag = state.segments.tags.iter().find(|t| t.id == id).ok_or_else(|| not_found(RecordKind::Tag, id))?;
            if tag.condition.is_none() {
                return Err(SegmentsError::Invalid {
                    field: "condition",
                    message: format!("tag {:?} is a manual tag; only a rule tag's condition can change", tag.name),
                }
                .into());
            }
            check_rule(&state, &tag.name.clone(), text)?
        };
        if !self.store().update_tag_condition(tenant, id, &canonical).await? {
            return Err(not_found(RecordKind::Tag, id));
        }
        let new_types = {
            let mut state = runtime.state.write();
            let mut tags = state.segments.tags.clone();
            let Some(record) = tags.iter_mut().find(|t| t.id == id) else {
                return Err(not_found(RecordKind::Tag, id));
            };
            record.condition = Some(canonical.clone());
            let record = record.clone();
            state.segments.set_tags(tags);
            let schema = state.schema();
            let compiled = compile(&canonical, &schema)
                .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
            let mut entry = Segment::rule(&state, &record, compiled);
            if let Some(old) = state.segments.entries.iter_mut().find(|s| s.rule_tag == Some(id as u32)) {
                entry.members = std::mem::take(&mut old.members);
                *old = entry;
            } else {
                state.segments.entries.push(entry);
            }
            state.segments.order();
            state.recount_property_types()
        };
        self.load_properties(tenant, &new_types).await?;
        let changes = self.evaluate_fully(&runtime, Entry::RuleTag(id as u32)).await?;
        self.store_derived(tenant, Vec::new(), &changes).await;
        let view = self.tags(tenant)?.into_iter().find(|t| t.id == id);
        view.ok_or_else(|| not_found(RecordKind::Tag, id))
    }

    /// Stores rule-tag operations and segment membership changes (best effort: both are derived,
    /// a failure is logged).
    pub(crate) async fn store_derived(&self, tenant: TenantId, mut ops: Vec<TagOp>, changes: &[MembershipChange]) {
        if let Ok(runtime) = self.tenant(tenant) {
            ops.extend(runtime.state.write().segments.take_rule_ops());
        }
        if !ops.is_empty() {
            if let Err(e) = self.store().append_tag_ops(tenant, &ops).await {
                tracing::warn!(tenant = %tenant, error = %e, "failed to record rule tag operations");
            }
        }
        if !changes.is_empty() {
            if let Err(e) = self.store().append_membership_changes(tenant, changes).await {
                tracing::warn!(tenant = %tenant, error = %e, "failed to record segment membership changes");
            }
        }
    }

    pub fn tags(&self, tenant: TenantId) -> Result<Vec<TagView>> {
        let runtime = self.tenant(tenant)?;
        let state = runtime.state.read();
        let mut counts = rustc_hash::FxHashMap::<u32, u64>::default();
        for id in state.profile_ids() {
            for tag in &state.profile(id).expect("live").tags {
                *counts.entry(*tag).or_default() += 1;
            }
        }
        Ok(state
            .segments
            .tags
            .iter()
            .map(|t| TagView {
                id: t.id,
                name: t.name.clone(),
                group_id: t.group_id,
                kind: if t.condition.is_some() { "rule" } else { "manual" }.into(),
                condition: t.condition.clone(),
                profiles: counts.get(&(t.id as u32)).copied().unwrap_or(0),
                created_at: t.created_at.to_rfc3339(),
            })
            .collect())
    }

    /// Deletes a tag (and takes it off every profile); refused while a segment reads it.
    pub async fn delete_tag(&self, tenant: TenantId, id: i64) -> Result<()> {
        let runtime = self.tenant(tenant)?;
        {
            let state = runtime.state.read();
            let tag = state.segments.tags.iter().find(|t| t.id == id).ok_or_else(|| not_found(RecordKind::Tag, id))?;
            if let Some(user) =
                state.segments.entries.iter().find(|s| s.deps.tags.contains(&tag.name) && s.rule_tag != Some(id as u32))
            {
                let what = if user.rule_tag.is_some() { "rule tag" } else { "segment" };
                return Err(SegmentsError::InUse(format!(
                    "tag {:?} is used by {what} {:?} (id {}); change that {what} first",
                    tag.name, user.record.name, user.record.id
                ))
                .into());
            }
        }
        if !self.store().delete_tag(tenant, id).await? {
            return Err(not_found(RecordKind::Tag, id));
        }
        let mut state = runtime.state.write();
        let tags = state.segments.tags.iter().filter(|t| t.id != id).cloned().collect();
        state.segments.set_tags(tags);
        state.segments.entries.retain(|s| s.rule_tag != Some(id as u32));
        let ids: Vec<ProfileId> = state.profile_ids().collect();
        for profile in ids {
            let tags = &mut state.profile_mut(profile).expect("live").tags;
            tags.retain(|t| i64::from(*t) != id);
        }
        Ok(())
    }

    /// Adds or removes tags (by name) on profiles. Applied in memory first — at the log position
    /// the state is at, which is recorded with the operation so a replay applies it at the same
    /// point — then made durable; if that fails, the tenant is re-derived and the error returned.
    pub async fn tag_profiles(
        &self,
        tenant: TenantId,
        profiles: &[ProfileId],
        changes: &[(String, TagAction)],
        actor: &str,
    ) -> Result<u64> {
        let runtime = self.tenant(tenant)?;
        let now = Millis::now();
        let (ops, membership) = {
            let mut state = runtime.state.write();
            let mut resolved = Vec::with_capacity(changes.len());
            for (name, action) in changes {
                let tag = state.segments.tag_id(name).ok_or_else(|| not_found(RecordKind::Tag, format!("{name:?}")))?;
                if state.segments.is_rule_tag(i64::from(tag)) {
                    return Err(SegmentsError::RuleTag(name.clone()).into());
                }
                resolved.push((tag, *action));
            }
            let mut ops = Vec::new();
            let mut touched = Vec::new();
            for &id in profiles {
                let live = state.resolve(id).ok_or(EngineError::NoSuchProfile(id))?;
                let anchor = state
                    .profile(live)
                    .and_then(|p| p.identities.iter().min_by_key(|l| (l.identity.kind.rank(), l.seq)))
                    .map(|l| l.identity.clone())
                    .ok_or(EngineError::NoSuchProfile(id))?;
                for &(tag, action) in &resolved {
                    let op = TagOp {
                        op_id: 0,
                        tag_id: i64::from(tag),
                        profile_id: i64::from(live),
                        identity_kind: anchor.kind.as_str().to_string(),
                        identity_value: anchor.value.clone(),
                        add: action == TagAction::Add,
                        actor: actor.to_string(),
                        after_seq: state.applied_seq,
                        at: now,
                    };
                    ops.push(op.clone());
                    if let Some(changed) = state.apply_tag_op(op) {
                        touched.push(changed);
                    }
                }
            }
            touched.sort_unstable();
            touched.dedup();
            let membership = state.refresh_for_tags(&touched, now);
            (ops, membership)
        };
        let changed = ops.len() as u64;
        if let Err(e) = self.store().append_tag_ops(tenant, &ops).await {
            tracing::error!(tenant = %tenant, error = %e, "tag operations not stored; re-deriving the tenant");
            self.rebuild(tenant).await?;
            return Err(e.into());
        }
        self.store_derived(tenant, Vec::new(), &membership).await;
        Ok(changed)
    }

    /// A profile's tags and their history.
    pub fn profile_tags(&self, tenant: TenantId, reference: &ProfileRef) -> Result<ProfileTags> {
        let runtime = self.tenant(tenant)?;
        let state = runtime.state.read();
        let id = state.find(reference).ok_or_else(|| match reference {
            ProfileRef::Id(id) => EngineError::NoSuchProfile(*id),
            ProfileRef::Identity(_) => EngineError::NoSuchProfile(0),
        })?;
        let profile = state.profile(id).ok_or(EngineError::NoSuchProfile(id))?;
        let tags = profile.tags.iter().filter_map(|t| state.segments.tag_name(*t)).map(str::to_string).collect();
        let mine = |op: &&TagOp| state.tag_op_concerns(op, id);
        let history = state
            .segments
            .tag_ops
            .iter()
            .rev()
            .filter(mine)
            .take(500)
            .map(|op| TagHistoryEntry {
                tag: state.segments.tag_name(op.tag_id as u32).unwrap_or("(deleted tag)").to_string(),
                action: if op.add { "added" } else { "removed" }.into(),
                actor: op.actor.clone(),
                at: op.at.to_rfc3339(),
                after_seq: op.after_seq,
            })
            .collect();
        Ok(ProfileTags { profile_id: id, tags, history })
    }

    // --- segments -------------------------------------------------------------------------

    /// Checks a condition and evaluates it over every profile now (or as of a past time),
    /// without saving anything.
    pub fn preview_segment(
        &self,
        tenant: TenantId,
        text: &str,
        sample: usize,
        as_of: Option<Millis>,
    ) -> Result<SegmentPreview> {
        let runtime = self.tenant(tenant)?;
        // A scan of every profile (and, as of a past time, a fold of their prefixes).
        siyu_store::blocking_in_place(|| {
            let state = runtime.state.read();
            let (condition, canonical) = checked(&state, text)?;
            let when = AsOf::of(as_of);
            let means = state.rfm_means(when.t);
            let members = Evaluator::as_of(&state, when, &means).select(&cheapest_first(&condition));
            let size = members.size();
            let rows = members.iter().take(sample).filter_map(|id| state.row_at(id, when, &means)).collect();
            let time_dependent = condition.is_time_dependent() || condition.dependencies().tenant_wide;
            Ok(SegmentPreview { condition: canonical, size, sample: rows, time_dependent })
        })
    }

    pub async fn create_segment(&self, tenant: TenantId, name: &str, text: &str) -> Result<SegmentView> {
        let name = check_name(name)?;
        let runtime = self.tenant(tenant)?;
        let (_, canonical) = checked(&runtime.state.read(), text)?;
        let record = self.store().create_segment(tenant, &name, &canonical).await.map_err(map_store)?;
        self.install_segment(tenant, record, None).await
    }

    pub async fn update_segment(
        &self,
        tenant: TenantId,
        id: i64,
        name: Option<&str>,
        text: Option<&str>,
    ) -> Result<SegmentView> {
        let runtime = self.tenant(tenant)?;
        let (old_name, old_condition) = {
            let state = runtime.state.read();
            let segment = state.segments.segment(id).ok_or_else(|| not_found(RecordKind::Segment, id))?;
            (segment.record.name.clone(), segment.record.condition.clone())
        };
        let name = check_name(name.unwrap_or(&old_name))?;
        let text = text.unwrap_or(&old_condition);
        let (_, canonical) = checked(&runtime.state.read(), text)?;
        let record = self
            .store()
            .update_segment(tenant, id, &name, &canonical)
            .await
            .map_err(map_store)?
            .ok_or_else(|| not_found(RecordKind::Segment, id))?;
        self.install_segment(tenant, record, Some(id)).await
    }

    /// Puts a (new or changed) segment into the state and evaluates it; a changed one records who
    /// entered and left because of the change.
    async fn install_segment(
        &self,
        tenant: TenantId,
        record: siyu_store::SegmentRecord,
        replaces: Option<i64>,
    ) -> Result<SegmentView> {
        let runtime = self.tenant(tenant)?;
        let new_types = {
            let mut state = runtime.state.write();
            let schema = state.schema();
            let checked = compile(&record.condition, &schema)
                .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
            let mut segment = Segment::new(&state, record.clone(), checked);
            if let Some(old) = replaces.and_then(|id| state.segments.segment_index(id)) {
                segment.members = std::mem::take(&mut state.segments.entries[old].members);
                state.segments.entries[old] = segment;
            } else {
                state.segments.entries.push(segment);
            }
            state.recount_property_types()
        };
        // A filter on properties of a type not kept so far: read them from the log.
        self.load_properties(tenant, &new_types).await?;
        let changes = self.evaluate_fully(&runtime, Entry::Segment(record.id)).await?;
        // A new segment's first members are not changes; a redefined one's are.
        if replaces.is_some() {
            if let Err(e) = self.store().append_membership_changes(tenant, &changes).await {
                tracing::warn!(tenant = %tenant, error = %e, "failed to record segment membership changes");
            }
        }
        let state = runtime.state.read();
        state.segments.segment(record.id).map(segment_view).ok_or_else(|| not_found(RecordKind::Segment, record.id))
    }

    /// Evaluates an entry (just saved) over every profile, with fresh RFM means if it reads
    /// them, without holding up ingestion (see [`evaluate_in_chunks`]).
    async fn evaluate_fully(
        &self,
        runtime: &std::sync::Arc<crate::TenantRuntime>,
        entry: Entry,
    ) -> Result<Vec<MembershipChange>> {
        let now = Millis::now();
        let Some((_, tenant_wide)) = runtime.state.read().entry_condition(entry) else { return Ok(Vec::new()) };
        let means = if tenant_wide { runtime.state.write().refresh_means(now) } else { RfmMeans::default() };
        evaluate_in_chunks(runtime.clone(), entry, now, means).await
    }

    /// Reads the properties of events of `types` from the log into the segments' side table.
    pub(crate) async fn load_properties(&self, tenant: TenantId, types: &[String]) -> Result<()> {
        if types.is_empty() {
            return Ok(());
        }
        let runtime = self.tenant(tenant)?;
        let mut after = 0;
        loop {
            let page = self.store().scan(tenant, after, 10_000, siyu_store::ScanDetail::Full).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let mut state = runtime.state.write();
            for stored in &page {
                let name = stored.event.kind.as_str();
                if !types.iter().any(|t| t == name) {
                    continue;
                }
                if let (Some(code), Some(props)) = (state.type_code_of(name), &stored.event.properties) {
                    state.segments.keep_properties(stored.seq, code, props.get());
                }
            }
        }
        Ok(())
    }

    pub async fn delete_segment(&self, tenant: TenantId, id: i64) -> Result<()> {
        let runtime = self.tenant(tenant)?;
        if !self.store().delete_segment(tenant, id).await? {
            return Err(not_found(RecordKind::Segment, id));
        }
        runtime.state.write().segments.entries.retain(|s| s.rule_tag.is_some() || s.record.id != id);
        Ok(())
    }

    pub fn segments(&self, tenant: TenantId) -> Result<Vec<SegmentView>> {
        let runtime = self.tenant(tenant)?;
        let state = runtime.state.read();
        Ok(state.segments.entries.iter().filter(|s| s.rule_tag.is_none()).map(segment_view).collect())
    }

    pub fn segment(&self, tenant: TenantId, id: i64) -> Result<SegmentView> {
        let runtime = self.tenant(tenant)?;
        let state = runtime.state.read();
        state.segments.segment(id).map(segment_view).ok_or_else(|| not_found(RecordKind::Segment, id))
    }

    /// A page of members in id order after `cursor`: the members kept current now, or with
    /// `as_of` those who met the condition at that time (evaluated afresh).
    pub fn segment_members(
        &self,
        tenant: TenantId,
        id: i64,
        cursor: Option<ProfileId>,
        limit: usize,
        as_of: Option<Millis>,
    ) -> Result<SegmentMembers> {
        self.with_members(tenant, id, as_of, |state, members, when, means| {
            let mut ids = members.iter().filter(|m| cursor.is_none_or(|c| *m > c));
            let page: Vec<ProfileId> = ids.by_ref().take(limit).collect();
            let more = ids.next().is_some();
            let items: Vec<ProfileRow> = page.iter().filter_map(|m| state.row_at(*m, when, means)).collect();
            let next_cursor = if more { page.last().map(ToString::to_string) } else { None };
            Ok(SegmentMembers { items, next_cursor })
        })
    }

    /// Calls `f` with a segment's members — kept current, or evaluated afresh at `as_of` — under
    /// one read lock, off the async workers (a scan of every profile, and as of a past time a
    /// fold of their prefixes).
    fn with_members<T>(
        &self,
        tenant: TenantId,
        id: i64,
        as_of: Option<Millis>,
        f: impl FnOnce(&TenantState, &Members, AsOf, &RfmMeans) -> Result<T>,
    ) -> Result<T> {
        let runtime = self.tenant(tenant)?;
        siyu_store::blocking_in_place(|| {
            let state = runtime.state.read();
            let segment = state.segments.segment(id).ok_or_else(|| not_found(RecordKind::Segment, id))?;
            let when = AsOf::of(as_of);
            let means = state.rfm_means(when.t);
            let members = members_at(&state, segment, as_of, &means);
            f(&state, &members, when, &means)
        })
    }

    /// Member ids of a segment (for bulk actions).
    pub fn segment_member_ids(&self, tenant: TenantId, id: i64) -> Result<Vec<ProfileId>> {
        let runtime = self.tenant(tenant)?;
        let state = runtime.state.read();
        let segment = state.segments.segment(id).ok_or_else(|| not_found(RecordKind::Segment, id))?;
        Ok(segment.members.iter().collect())
    }

    pub async fn segment_sizes(&self, tenant: TenantId, id: i64) -> Result<Vec<SizePoint>> {
        self.segment(tenant, id)?;
        let sizes = self.store().segment_sizes(tenant, id).await?;
        Ok(sizes.into_iter().map(|(day, size)| SizePoint { day, size }).collect())
    }

    /// Entered/exited records, newest first, of a profile and/or a segment.
    pub async fn membership_changes(
        &self,
        tenant: TenantId,
        profile: Option<ProfileId>,
        segment: Option<i64>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<MembershipChangeView>> {
        let changes = self.store().membership_changes(tenant, profile.map(i64::from), segment, before, limit).await?;
        Ok(changes.iter().map(change_view).collect())
    }

    /// The segments a profile is in now.
    pub fn profile_segments(&self, tenant: TenantId, id: ProfileId) -> Result<Vec<SegmentView>> {
        let runtime = self.tenant(tenant)?;
        let state = runtime.state.read();
        let live = state.resolve(id).ok_or(EngineError::NoSuchProfile(id))?;
        Ok(state
            .segments
            .entries
            .iter()
            .filter(|s| s.rule_tag.is_none() && s.members.contains(live))
            .map(segment_view)
            .collect())
    }

    /// Checks the fields of an export: the fixed ones, identity kinds and `traits.KEY`.
    pub fn check_export_fields(fields: &[String]) -> Result<()> {
        for field in fields {
            let known = EXPORT_FIELDS.contains(&field.as_str())
                || field.strip_prefix("traits.").is_some_and(|k| !k.is_empty())
                || siyu_model::IdentityKind::parse(field)
                    .is_ok_and(|k| !matches!(k, siyu_model::IdentityKind::Custom(_)));
            if !known {
                return Err(SegmentsError::Invalid {
                    field: "fields",
                    message: format!(
                        "unknown export field {field:?}; use {}, an identity kind (phone, user_id, …) or traits.KEY",
                        EXPORT_FIELDS.join(", ")
                    ),
                }
                .into());
            }
        }
        Ok(())
    }

    /// The members of a segment with the chosen fields, as CSV (with a header) or NDJSON: now,
    /// or as of a past time (see [`Engine::segment_members`]).
    pub fn export_segment(
        &self,
        tenant: TenantId,
        id: i64,
        format: ExportFormat,
        fields: &[String],
        as_of: Option<Millis>,
    ) -> Result<String> {
        Engine::check_export_fields(fields)?;
        self.with_members(tenant, id, as_of, |state, members, when, means| {
            let mut out = String::new();
            if format == ExportFormat::Csv {
                out.push_str(&fields.iter().map(|f| csv_cell(f)).collect::<Vec<_>>().join(","));
                out.push('\n');
            }
            for member in members.iter() {
                let Some(at) = state.at_when(member, when) else { continue };
                let scores = at.scores(&state.rules);
                let values: Vec<serde_json::Value> =
                    fields.iter().map(|f| export_value(state, &at, &scores, f, means)).collect();
                match format {
                    ExportFormat::Csv => {
                        let cells: Vec<String> = values
                            .iter()
                            .map(|v| match v {
                                serde_json::Value::Null => String::new(),
                                serde_json::Value::String(s) => csv_cell(s),
                                other => csv_cell(&other.to_string()),
                            })
                            .collect();
                        out.push_str(&cells.join(","));
                    }
                    ExportFormat::Ndjson => {
                        let object: serde_json::Map<String, serde_json::Value> =
                            fields.iter().cloned().zip(values).collect();
                        out.push_str(&serde_json::Value::Object(object).to_string());
                    }
                }
                out.push('\n');
            }
            Ok(out)
        })
    }

    /// Re-evaluates time-dependent segments of every tenant and records today's sizes.
    ///
    /// Each entry is evaluated in chunks under short read locks ([`Engine::evaluate_in_chunks`]),
    /// so ingestion goes on meanwhile.
    pub async fn sweep_segments(&self) -> Result<u64> {
        let mut total = 0;
        for tenant in self.tenant_ids() {
            let runtime = self.tenant(tenant)?;
            let now = Millis::now();
            let (mut changes, entries, tenant_wide) = {
                let mut state = runtime.state.write();
                let entries = state.segments.swept_entries();
                let tenant_wide = entries.iter().any(|e| state.entry_condition(*e).is_some_and(|(_, wide)| wide));
                (state.refresh_memberships(now), entries, tenant_wide)
            };
            let mut means = RfmMeans::default();
            if tenant_wide {
                means = runtime.state.write().refresh_means(now);
            }
            for entry in entries {
                changes.extend(evaluate_in_chunks(runtime.clone(), entry, now, means).await?);
            }
            let (sizes, ops) = {
                let mut state = runtime.state.write();
                (state.segments.segment_sizes(), state.segments.take_rule_ops())
            };
            total += changes.len() as u64;
            if !ops.is_empty() {
                self.store().append_tag_ops(tenant, &ops).await?;
            }
            self.store().append_membership_changes(tenant, &changes).await?;
            self.store().record_segment_sizes(tenant, &cst_day(now), &sizes).await?;
        }
        Ok(total)
    }
}

/// Profiles one read lock covers in a full evaluation, in 64-id words (8 192 profiles: about a
/// millisecond of work for a heavy condition), so that ingestion, which needs the write lock,
/// never waits long behind a sweep or a new segment.
const CHUNK_WORDS: usize = 128;

/// Evaluates an entry over every profile at `t`, chunk by chunk under short read locks on a
/// blocking thread, then merges the result under one write lock (deciding again, on the state
/// then, the profiles whose events arrived meanwhile: see `TenantState::merge_evaluation`).
async fn evaluate_in_chunks(
    runtime: std::sync::Arc<crate::TenantRuntime>,
    entry: Entry,
    t: Millis,
    means: RfmMeans,
) -> Result<Vec<MembershipChange>> {
    crate::blocking(move || {
        let (condition, version) = {
            let state = runtime.state.read();
            let Some((condition, _)) = state.entry_condition(entry) else { return Vec::new() };
            (condition, state.version())
        };
        let mut selected = Members::default();
        in_chunks(&runtime, |state, chunk| {
            selected.union_with(&Evaluator::new(state, t, &means).select_in(&condition, chunk));
        });
        runtime.state.write().merge_evaluation(entry, &selected, version, t)
    })
    .await
}

/// Calls `f` with the live profiles chunk by chunk, each chunk under a read lock of its own.
fn in_chunks(runtime: &crate::TenantRuntime, mut f: impl FnMut(&TenantState, &Members)) {
    let mut word = 0;
    loop {
        let state = runtime.state.read();
        f(&state, &state.live().word_range(word, CHUNK_WORDS));
        word += CHUNK_WORDS;
        if word >= state.live().word_len() {
            return;
        }
    }
}

/// A segment's members: kept current (no `as_of`), or evaluated afresh at `as_of`.
fn members_at<'s>(
    state: &TenantState,
    segment: &'s super::Segment,
    as_of: Option<Millis>,
    means: &RfmMeans,
) -> std::borrow::Cow<'s, Members> {
    match (as_of, &segment.condition) {
        (Some(t), Some(condition)) => {
            std::borrow::Cow::Owned(Evaluator::as_of(state, AsOf::past(t), means).select(condition))
        }
        (Some(_), None) => std::borrow::Cow::Owned(Members::default()),
        (None, _) => std::borrow::Cow::Borrowed(&segment.members),
    }
}

fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// One field of an exported member, as of the time `at` was taken at.
fn export_value(
    state: &TenantState,
    at: &ProfileAt<'_>,
    scores: &ProfileScores,
    field: &str,
    means: &RfmMeans,
) -> serde_json::Value {
    use serde_json::Value;
    let profile = at.profile;
    if let Some(key) = field.strip_prefix("traits.") {
        return profile.traits.as_ref().and_then(|tr| tr.get(key)).cloned().unwrap_or(Value::Null);
    }
    match field {
        "id" => Value::from(at.id),
        "name" => name_of(profile).map_or(Value::Null, Value::from),
        "tier" => Value::from(scores.tier.to_string()),
        "pool_stage" => Value::from(scores.pool_stage.to_string()),
        "ownership" => Value::from(scores.ownership.to_string()),
        "rfm" => scores.rfm.map_or(Value::Null, |input| Value::from(means.group(&input).to_string())),
        "affinity" => Value::from(scores.affinity),
        "reachable" => Value::from(scores.reachable),
        "net_revenue" => Value::from(yuan(scores.net_revenue.0)),
        "paid_orders" => Value::from(scores.paid_orders),
        "first_seen" => at.facts.first().map_or(Value::Null, |f| Value::from(f.ts.to_rfc3339())),
        "last_seen" => at.facts.last().map_or(Value::Null, |f| Value::from(f.ts.to_rfc3339())),
        "tags" => {
            Value::from(profile.tags.iter().filter_map(|t| state.segments.tag_name(*t)).collect::<Vec<_>>().join("|"))
        }
        "channels" => Value::from(channels_of(at.fold.channels).join("|")),
        kind => profile
            .identities
            .iter()
            .find(|l| l.identity.kind.as_str() == kind)
            .map_or(Value::Null, |l| Value::from(l.identity.value.as_str())),
    }
}
