//! Reach (触达) as [`Engine`] methods: templates, campaigns (dry run, plan, report, cancel) and
//! suppression lists, plus what the outbox dispatcher (siyu-outbox) needs: claims, outcomes, and
//! the outcome events it writes to the log.
//!
//! Every send goes through [`Engine::plan_campaign`]'s path: the person checks come from the
//! profile's facts (consent, unsubscribe, authorisation and last inbound message are all events),
//! the caps from the ledger inside the store's queuing transaction. So a dry run and the real plan
//! judge alike, and what the guardrails know is rebuilt from the log like every score.

use std::collections::BTreeMap;
use std::sync::Arc;

use siyu_model::reach::template::{
    CampaignContext, CompiledTemplate, Purpose, RenderContext, StaffContext, TemplateDef, TemplateError,
};
use siyu_model::reach::{
    in_holdout, Audience, CampaignSpec, Guardrails, MessageContent, PersonReach, SendAccount, SendRequest, Verdict,
};
use siyu_model::score::{FanTier, Ownership, PoolStage, RfmMeans};
use siyu_model::time::DAY;
use siyu_model::{Channel, Event, EventType, IdentityKind, Millis, ProfileId, TenantId};
use siyu_store::{
    CampaignRecord, Claimed, EnqueueBatch, EnqueueItem, Enqueued, OutboxRow, Outcome, StoreError, TemplateRecord,
};

pub use siyu_store::{CampaignState, OutboxState, StaffTask, Suppression, TaskState};

use crate::query::{name_of, yuan, ProfileRef};
use crate::state::{AsOf, TenantState};
use crate::{Engine, EngineError, Result};

/// Recipients judged and queued per store transaction.
const PLAN_BATCH: usize = 20_000;

/// A refusal of a reach operation, with the offending field where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    /// The template does not compile; every error carries its field, line and column.
    #[error("invalid template: {}", .0.first().map(|e| e.message.clone()).unwrap_or_default())]
    InvalidTemplate(Vec<TemplateError>),
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("no {kind} {what}")]
    NotFound { kind: &'static str, what: String },
    #[error("a {kind} named {name:?} already exists")]
    NameTaken { kind: &'static str, name: String },
    /// The campaign is not in a state that allows this.
    #[error("campaign {id} is {state}, {wanted}")]
    WrongState { id: i64, state: &'static str, wanted: &'static str },
}

fn invalid(field: &'static str, message: impl Into<String>) -> EngineError {
    ReachError::Invalid { field, message: message.into() }.into()
}

fn not_found(kind: &'static str, what: impl ToString) -> EngineError {
    ReachError::NotFound { kind, what: what.to_string() }.into()
}

fn map_store(kind: &'static str, e: StoreError) -> EngineError {
    match e {
        StoreError::NameTaken { name, .. } => ReachError::NameTaken { kind, name }.into(),
        other => other.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateView {
    pub id: i64,
    pub name: String,
    pub definition: TemplateDef,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CampaignView {
    pub id: i64,
    pub name: String,
    pub spec: CampaignSpec,
    pub state: CampaignState,
    /// When it goes (or went) out.
    pub send_at: Millis,
    pub planned_at: Option<Millis>,
    pub planned: u64,
    pub created_at: Millis,
}

/// What a campaign would do now, without doing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRun {
    pub audience: u64,
    pub holdout: u64,
    pub would_send: u64,
    /// Held back per rule name, largest first.
    pub held: Vec<(String, u64)>,
    /// Sends on this channel become tasks a staff member must confirm.
    pub staff_confirms: bool,
    /// When the first message would go out (quiet hours move it).
    pub first_send_at: Option<Millis>,
}

/// A campaign's progress and results.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignReport {
    pub campaign: CampaignView,
    /// Messages per outbox state.
    pub outbox: Vec<(OutboxState, u64)>,
    pub planned: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Failures per connector error code.
    pub failures: Vec<(String, u64)>,
    /// Held back per rule (the holdout included, as `holdout`).
    pub held: Vec<(String, u64)>,
    pub tasks: Vec<StaffTask>,
    pub conversions: Conversions,
}

/// Orders within the attribution window: receivers against the holdout.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversions {
    pub attribution_days: u32,
    pub receivers: u64,
    pub receivers_converted: u64,
    pub receivers_revenue: f64,
    pub holdout: u64,
    pub holdout_converted: u64,
    /// Conversion rate of receivers minus that of the holdout, in percentage points.
    pub lift_points: Option<f64>,
}

/// The plan of one campaign run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOutcome {
    pub queued: u64,
    pub held: u64,
    pub holdout: u64,
    /// Already queued by an earlier, interrupted run of the plan.
    pub resumed: u64,
}

impl PlanOutcome {
    fn tally(&mut self, results: &[Enqueued]) {
        for result in results {
            match result {
                Enqueued::Queued { .. } => self.queued += 1,
                Enqueued::Held { .. } => self.held += 1,
                Enqueued::Duplicate => self.resumed += 1,
            }
        }
    }
}

fn parse_template(record: &TemplateRecord) -> Result<TemplateDef> {
    serde_json::from_str(&record.definition)
        .map_err(|e| StoreError::Corrupt(format!("template {}: {e}", record.id)).into())
}

fn template_view(record: &TemplateRecord) -> Result<TemplateView> {
    Ok(TemplateView {
        id: record.id,
        name: record.name.clone(),
        definition: parse_template(record)?,
        created_at: record.created_at,
        updated_at: record.updated_at,
    })
}

fn compile(def: &TemplateDef, vars: &[String]) -> Result<CompiledTemplate> {
    def.compile(vars).map_err(|errors| ReachError::InvalidTemplate(errors).into())
}

/// Identity kind → value → the suppression list it is on; looked up for every recipient of a
/// plan, hence hashed.
type SuppressionIndex = rustc_hash::FxHashMap<String, rustc_hash::FxHashMap<String, String>>;

/// The identity kinds a channel addresses people by, best first. A log or webhook account takes
/// any of the general ones after them.
fn address_kinds(channel: Channel) -> &'static [IdentityKind] {
    match channel {
        Channel::Wecom => &[IdentityKind::WecomExternalUserid],
        Channel::Douyin => &[IdentityKind::DouyinOpenId],
        Channel::Kuaishou => &[IdentityKind::KuaishouOpenId],
        Channel::WechatMp | Channel::MiniProgram => &[IdentityKind::WechatOpenid, IdentityKind::WechatUnionid],
        _ => &[IdentityKind::Phone, IdentityKind::UserId, IdentityKind::Email],
    }
}

const ANY_ADDRESS: &[IdentityKind] = &[
    IdentityKind::Phone,
    IdentityKind::UserId,
    IdentityKind::Email,
    IdentityKind::WechatUnionid,
    IdentityKind::AnonymousId,
];

/// What the guardrails need to know about a person, read from the profile's facts.
fn person_reach(
    state: &TenantState,
    id: ProfileId,
    channel: Channel,
    purpose: Purpose,
    loose: bool,
) -> (PersonReach, Option<(String, String)>) {
    let mut person = PersonReach::default();
    let Some(profile) = state.profile(id) else { return (person, None) };
    // The first kind the channel takes that the person has (kinds compared as values: this runs
    // for every recipient of a plan).
    let mut kinds = address_kinds(channel).iter().chain(if loose { ANY_ADDRESS } else { &[] });
    let address = kinds.find_map(|kind| {
        profile
            .identities
            .iter()
            .find(|l| l.identity.kind == *kind)
            .map(|l| (kind.as_str().to_string(), l.identity.value.clone()))
    });
    person.has_address = address.is_some();
    // Consent is per purpose and channel: the latest consent event that applies decides, and
    // one without a purpose applies to every purpose on every channel (docs/reach.md).
    let mut consent = None;
    let (mut opted_out, mut opted_in) = (None, None);
    for fact in &profile.facts {
        let kind = EventType::from_code(fact.code);
        if matches!(kind, Some(EventType::ConsentGranted | EventType::ConsentRevoked))
            && (fact.purpose == Purpose::ANY || (fact.purpose == purpose.code() && fact.channel == channel))
        {
            consent = kind;
        }
        if fact.channel != channel {
            continue;
        }
        let at = Some(fact.ts);
        match kind {
            Some(EventType::Unsubscribe) => opted_out = opted_out.max(at),
            Some(EventType::Subscribe) => opted_in = opted_in.max(at),
            Some(EventType::ConsentGranted) => {
                opted_in = opted_in.max(at);
                person.authorised_at = person.authorised_at.max(at);
            }
            Some(EventType::MessageIn) => person.last_inbound_at = person.last_inbound_at.max(at),
            _ => {}
        }
    }
    person.consent_revoked = consent == Some(EventType::ConsentRevoked);
    person.unsubscribed = opted_out.is_some() && opted_out > opted_in;
    (person, address)
}

/// Which parts of the render context a template reads: a campaign fills only those, since
/// scores, local times, tags and traits cost more per recipient than the rendering itself.
#[derive(Debug, Clone, Copy)]
struct ContextNeeds {
    scores: bool,
    rfm: bool,
    last_order: bool,
    seen: bool,
    tags: bool,
    traits: bool,
}

impl ContextNeeds {
    const ALL: ContextNeeds =
        ContextNeeds { scores: true, rfm: true, last_order: true, seen: true, tags: true, traits: true };

    fn of(template: &CompiledTemplate) -> ContextNeeds {
        let any = |names: &[&str]| names.iter().any(|n| template.reads(n));
        ContextNeeds {
            scores: any(&[
                "tier",
                "tier_label",
                "pool_stage",
                "ownership",
                "rfm_group",
                "affinity",
                "orders",
                "net_revenue",
            ]),
            rfm: any(&["rfm_group"]),
            last_order: any(&["last_order_at", "last_order_amount"]),
            seen: any(&["first_seen_at", "last_seen_at"]),
            tags: any(&["tags"]),
            traits: any(&["traits"]),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn render_context(
    state: &TenantState,
    id: ProfileId,
    means: &RfmMeans,
    campaign: Option<(i64, &str)>,
    vars: &BTreeMap<String, String>,
    staff: Option<&str>,
    tz: chrono_tz::Tz,
    needs: ContextNeeds,
) -> Option<RenderContext> {
    let at = state.at_when(id, AsOf::current(Millis::now()))?;
    let scores = needs.scores.then(|| at.scores(&state.rules));
    let profile = at.profile;
    let local = |t: Millis| {
        use chrono::TimeZone;
        tz.timestamp_millis_opt(t.0).single().map(|l| l.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default()
    };
    let last_order = if needs.last_order {
        at.facts.iter().rev().find(|f| EventType::from_code(f.code) == Some(EventType::OrderPaid))
    } else {
        None
    };
    let seen = |fact: Option<&siyu_model::Fact>| {
        if needs.seen {
            fact.map(|f| local(f.ts)).unwrap_or_default()
        } else {
            String::new()
        }
    };
    Some(RenderContext {
        profile_id: id,
        name: name_of(profile),
        // What no variant reads stays at its lowest value.
        tier: scores.map_or(FanTier::None, |s| s.tier),
        pool_stage: scores.map_or(PoolStage::Public, |s| s.pool_stage),
        ownership: scores.map_or(Ownership::L0, |s| s.ownership),
        rfm_group: scores.filter(|_| needs.rfm).and_then(|s| s.rfm).map(|input| means.group(&input)),
        affinity: scores.map_or(0.0, |s| s.affinity),
        orders: scores.map_or(0, |s| s.net_paid_orders),
        net_revenue: scores.map_or(siyu_model::Fen(0), |s| s.net_revenue),
        last_order_at: last_order.map(|f| local(f.ts)),
        last_order_amount: last_order.map(|f| f.amount),
        first_seen_at: seen(at.facts.first()),
        last_seen_at: seen(at.facts.last()),
        tags: if needs.tags {
            profile.tags.iter().filter_map(|t| state.segments.tag_name(*t).map(str::to_string)).collect()
        } else {
            Vec::new()
        },
        traits: if needs.traits { profile.traits.as_deref().cloned().unwrap_or_default() } else { Default::default() },
        event: None,
        campaign: campaign.map(|(id, name)| CampaignContext { id: id.to_string(), name: name.to_string() }),
        vars: vars.clone(),
        staff: staff.map(|s| StaffContext { name: s.to_string(), userid: s.to_string() }),
    })
}

/// Everything planning needs that does not change from recipient to recipient.
struct Plan {
    campaign: CampaignView,
    account: SendAccount,
    guardrails: Arc<Guardrails>,
    template: CompiledTemplate,
    purpose: Purpose,
    suppressed_list: SuppressionIndex,
}

impl Plan {
    /// The send every recipient of the campaign is judged for.
    fn request(&self, at: Millis) -> SendRequest<'_> {
        let spec = &self.campaign.spec;
        SendRequest {
            channel: spec.channel,
            account_type: self.account.account_type.as_deref(),
            scope: spec.scope,
            purpose: self.purpose,
            staff: spec.sender.as_deref(),
            at,
        }
    }
}

impl Engine {
    fn guardrails(&self, tenant: TenantId) -> Result<Arc<Guardrails>> {
        let settings = self.settings(tenant)?;
        Ok(Arc::new(Guardrails::new(&settings.reach).map_err(|e| invalid("reach", e.to_string()))?))
    }

    pub async fn create_template(&self, tenant: TenantId, name: &str, def: &TemplateDef) -> Result<TemplateView> {
        self.tenant(tenant)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(invalid("name", "a template name has 1 to 100 characters"));
        }
        compile(def, &declared_vars(def))?;
        let json = serde_json::to_string(def).map_err(|e| invalid("definition", e.to_string()))?;
        let record = self.store().create_template(tenant, name, &json).await.map_err(|e| map_store("template", e))?;
        template_view(&record)
    }

    pub async fn update_template(&self, tenant: TenantId, id: i64, def: &TemplateDef) -> Result<TemplateView> {
        compile(def, &declared_vars(def))?;
        let json = serde_json::to_string(def).map_err(|e| invalid("definition", e.to_string()))?;
        if !self.store().update_template(tenant, id, &json).await? {
            return Err(not_found("template", id));
        }
        self.template(tenant, id).await
    }

    pub async fn templates(&self, tenant: TenantId) -> Result<Vec<TemplateView>> {
        self.tenant(tenant)?;
        self.store().templates(tenant).await?.iter().map(template_view).collect()
    }

    pub async fn template(&self, tenant: TenantId, id: i64) -> Result<TemplateView> {
        let records = self.store().templates(tenant).await?;
        let record = records.iter().find(|t| t.id == id).ok_or_else(|| not_found("template", id))?;
        template_view(record)
    }

    pub async fn delete_template(&self, tenant: TenantId, id: i64) -> Result<()> {
        for campaign in self.campaigns(tenant).await? {
            let live = matches!(campaign.state, CampaignState::Scheduled | CampaignState::Planning);
            if live && campaign.spec.template_id == id {
                return Err(invalid("id", format!("template {id} is used by campaign {:?}", campaign.name)));
            }
        }
        if !self.store().delete_template(tenant, id).await? {
            return Err(not_found("template", id));
        }
        Ok(())
    }

    /// Renders a template for one real profile, as the campaign would.
    pub async fn preview_template(
        &self,
        tenant: TenantId,
        id: i64,
        profile: &ProfileRef,
        channel: Channel,
        vars: &BTreeMap<String, String>,
    ) -> Result<MessageContent> {
        let view = self.template(tenant, id).await?;
        let compiled = compile(&view.definition, &vars.keys().cloned().collect::<Vec<_>>())?;
        let runtime = self.tenant(tenant)?;
        let state = runtime.state.read();
        let pid = state.find(profile).ok_or_else(|| not_found("profile", format!("{profile:?}")))?;
        let means = state.rfm_means(Millis::now());
        let tz = self.guardrails(tenant)?.time_zone();
        let ctx = render_context(&state, pid, &means, None, vars, None, tz, ContextNeeds::ALL)
            .ok_or_else(|| not_found("profile", pid))?;
        compiled.render(channel, &ctx).map_err(|e| invalid("template", e.to_string()))
    }

    fn campaign_view(&self, tenant: TenantId, record: &CampaignRecord) -> Result<CampaignView> {
        let spec: CampaignSpec = serde_json::from_str(&record.spec)
            .map_err(|e| StoreError::Corrupt(format!("campaign {}: {e}", record.id)))?;
        let guardrails = self.guardrails(tenant)?;
        let send_at = match &spec.send_at {
            Some(text) => guardrails.parse_local(text).unwrap_or(record.created_at),
            None => record.created_at,
        };
        Ok(CampaignView {
            id: record.id,
            name: record.name.clone(),
            spec,
            state: record.state,
            send_at,
            planned_at: record.planned_at,
            planned: record.planned,
            created_at: record.created_at,
        })
    }

    /// Checks a campaign against the tenant's records: template, audience, account, channel, vars.
    async fn check_campaign(
        &self,
        tenant: TenantId,
        spec: &CampaignSpec,
    ) -> Result<(SendAccount, CompiledTemplate, TemplateDef)> {
        let settings = self.settings(tenant)?;
        let account = settings.send_accounts.get(&spec.account).cloned().ok_or_else(|| {
            invalid("account", format!("no send account {:?} in the tenant's settings", spec.account))
        })?;
        if account.channel != spec.channel {
            return Err(invalid(
                "channel",
                format!("account {:?} sends on {}, not {}", spec.account, account.channel, spec.channel),
            ));
        }
        if spec.scope == siyu_model::reach::SendScope::Welcome {
            return Err(invalid(
                "scope",
                "a welcome message answers one add-contact callback; a campaign sends mass or direct",
            ));
        }
        if spec.holdout_percent > 50 {
            return Err(invalid("holdout_percent", "at most 50"));
        }
        if let Some(text) = &spec.send_at {
            if self.guardrails(tenant)?.parse_local(text).is_none() {
                return Err(invalid("send_at", format!("{text:?} is not a time (2026-12-05 19:30 or RFC 3339)")));
            }
        }
        match &spec.audience {
            Audience::SegmentId(id) => {
                self.segment(tenant, *id).map_err(|_| invalid("audience.segment_id", format!("no segment {id}")))?;
            }
            Audience::ProfileIds(ids) if ids.is_empty() => return Err(invalid("audience.profile_ids", "no profiles")),
            Audience::ProfileIds(_) => {}
        }
        let record = self.store().templates(tenant).await?.into_iter().find(|t| t.id == spec.template_id);
        let record = record.ok_or_else(|| invalid("template_id", format!("no template {}", spec.template_id)))?;
        let def = parse_template(&record)?;
        let compiled = compile(&def, &spec.vars.keys().cloned().collect::<Vec<_>>())?;
        // The default variant was checked as a plain message; now the channel is known.
        compiled.preview(spec.channel).map_err(|e| invalid("template_id", format!("{}: {}", e.field, e.message)))?;
        Ok((account, compiled, def))
    }

    pub async fn create_campaign(&self, tenant: TenantId, name: &str, spec: &CampaignSpec) -> Result<CampaignView> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(invalid("name", "a campaign name has 1 to 100 characters"));
        }
        self.check_campaign(tenant, spec).await?;
        let json = serde_json::to_string(spec).map_err(|e| invalid("spec", e.to_string()))?;
        let record = self
            .store()
            .create_campaign(tenant, name, &json, CampaignState::Scheduled)
            .await
            .map_err(|e| map_store("campaign", e))?;
        self.campaign_view(tenant, &record)
    }

    pub async fn campaigns(&self, tenant: TenantId) -> Result<Vec<CampaignView>> {
        self.tenant(tenant)?;
        self.store().campaigns(tenant).await?.iter().map(|r| self.campaign_view(tenant, r)).collect()
    }

    pub async fn campaign(&self, tenant: TenantId, id: i64) -> Result<CampaignView> {
        let record = self.store().campaign(tenant, id).await?.ok_or_else(|| not_found("campaign", id))?;
        self.campaign_view(tenant, &record)
    }

    fn audience(&self, state: &TenantState, audience: &Audience) -> Result<Vec<ProfileId>> {
        Ok(match audience {
            Audience::SegmentId(id) => {
                let segment = state.segments.segment(*id).ok_or_else(|| not_found("segment", id))?;
                segment.members.iter().collect()
            }
            Audience::ProfileIds(ids) => {
                let mut live: Vec<ProfileId> = ids.iter().filter_map(|id| state.resolve(*id)).collect();
                live.sort_unstable();
                live.dedup();
                live
            }
        })
    }

    async fn suppression_index(&self, tenant: TenantId) -> Result<SuppressionIndex> {
        let mut index = SuppressionIndex::default();
        for s in self.store().suppressions(tenant).await? {
            index.entry(s.identity_kind).or_default().insert(s.identity_value, s.list);
        }
        Ok(index)
    }

    async fn plan_for(&self, tenant: TenantId, campaign: CampaignView) -> Result<Plan> {
        let (account, template, def) = self.check_campaign(tenant, &campaign.spec).await?;
        let suppressed_list = self.suppression_index(tenant).await?;
        Ok(Plan {
            campaign,
            account,
            guardrails: self.guardrails(tenant)?,
            template,
            purpose: def.purpose,
            suppressed_list,
        })
    }

    fn suppressed_by(plan: &Plan, state: &TenantState, id: ProfileId) -> Option<String> {
        let profile = state.profile(id)?;
        profile
            .identities
            .iter()
            .find_map(|l| plan.suppressed_list.get(l.identity.kind.as_str())?.get(&l.identity.value).cloned())
    }

    /// What a campaign would do now: recipients, the holdout, and who each rule holds back.
    pub async fn dry_run(&self, tenant: TenantId, spec: &CampaignSpec) -> Result<DryRun> {
        let campaign = CampaignView {
            id: 0,
            name: String::new(),
            spec: spec.clone(),
            state: CampaignState::Scheduled,
            send_at: Millis::now(),
            planned_at: None,
            planned: 0,
            created_at: Millis::now(),
        };
        let plan = self.plan_for(tenant, campaign).await?;
        let at = match &spec.send_at {
            Some(text) => plan.guardrails.parse_local(text).unwrap_or_else(Millis::now),
            None => Millis::now(),
        };
        let request = plan.request(at);
        let loose = matches!(
            plan.account.connector,
            siyu_model::reach::ConnectorKind::Log | siyu_model::reach::ConnectorKind::Webhook
        );
        let (mut judged, audience) = {
            let runtime = self.tenant(tenant)?;
            let state = runtime.state.read();
            let audience = self.audience(&state, &spec.audience)?;
            let mut judged = Vec::with_capacity(audience.len());
            for &id in &audience {
                let (mut person, _) = person_reach(&state, id, spec.channel, plan.purpose, loose);
                person.suppressed_by = Self::suppressed_by(&plan, &state, id);
                judged.push((id, person));
            }
            (judged, audience.len() as u64)
        };
        let seed = spec.holdout_seed();
        let holdout = judged.iter().filter(|(id, _)| in_holdout(seed, *id, spec.holdout_percent)).count() as u64;
        judged.retain(|(id, _)| !in_holdout(seed, *id, spec.holdout_percent));
        let ids: Vec<ProfileId> = judged.iter().map(|(id, _)| *id).collect();
        let ledgers = self.store().ledgers(tenant, plan.guardrails.horizon(at), &ids).await?;
        let mut held: BTreeMap<String, u64> = BTreeMap::new();
        let (mut would_send, mut first) = (0, None::<Millis>);
        for ((_, person), ledger) in judged.iter().zip(ledgers) {
            match plan.guardrails.judge(person, &ledger, &request) {
                Verdict::Send { at } => {
                    would_send += 1;
                    first = Some(first.map_or(at, |f| f.min(at)));
                }
                Verdict::Hold { rule } => *held.entry(rule).or_default() += 1,
            }
        }
        let mut held: Vec<(String, u64)> = held.into_iter().collect();
        held.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(DryRun {
            audience,
            holdout,
            would_send,
            held,
            staff_confirms: plan.guardrails.staff_confirms(&request),
            first_send_at: first,
        })
    }

    /// Plans a campaign: judges every recipient and queues the messages in the outbox. Safe to
    /// call again after a crash (`planning` resumes: keys already queued are left as they were).
    pub async fn plan_campaign(&self, tenant: TenantId, id: i64) -> Result<PlanOutcome> {
        let campaign = self.campaign(tenant, id).await?;
        match campaign.state {
            CampaignState::Scheduled => {
                if !self
                    .store()
                    .move_campaign(tenant, id, &[CampaignState::Scheduled], CampaignState::Planning, None)
                    .await?
                {
                    return Err(
                        ReachError::WrongState { id, state: "taken", wanted: "another planner started it" }.into()
                    );
                }
            }
            CampaignState::Planning => {}
            other => {
                return Err(ReachError::WrongState {
                    id,
                    state: other.as_str(),
                    wanted: "only a scheduled campaign can be planned",
                }
                .into())
            }
        }
        let plan = self.plan_for(tenant, campaign).await?;
        let spec = &plan.campaign.spec;
        let at = plan.campaign.send_at.max(Millis::now());
        let loose = matches!(
            plan.account.connector,
            siyu_model::reach::ConnectorKind::Log | siyu_model::reach::ConnectorKind::Webhook
        );
        let audience = {
            let runtime = self.tenant(tenant)?;
            let state = runtime.state.read();
            self.audience(&state, &spec.audience)?
        };
        let mut outcome = PlanOutcome { queued: 0, held: 0, holdout: 0, resumed: 0 };
        let seed = spec.holdout_seed();
        let holdouts: Vec<(ProfileId, String)> = audience
            .iter()
            .filter(|p| in_holdout(seed, **p, spec.holdout_percent))
            .map(|p| (*p, "holdout".to_string()))
            .collect();
        outcome.holdout = holdouts.len() as u64;
        self.store().record_holds(tenant, id, &holdouts).await?;
        let recipients: Vec<ProfileId> =
            audience.into_iter().filter(|p| !in_holdout(seed, *p, spec.holdout_percent)).collect();
        // Rendering a chunk overlaps with the store writing the one before (two cores: the
        // writer's and this one); chunks are written in order, one at a time.
        let mut writing: Option<tokio::task::JoinHandle<std::result::Result<Vec<Enqueued>, StoreError>>> = None;
        let needs = ContextNeeds::of(&plan.template);
        let means =
            if needs.rfm { self.tenant(tenant)?.state.read().rfm_means(Millis::now()) } else { RfmMeans::default() };
        let request = plan.request(at);
        for chunk in recipients.chunks(PLAN_BATCH) {
            let items = {
                let runtime = self.tenant(tenant)?;
                let state = runtime.state.read();
                let mut items = Vec::with_capacity(chunk.len());
                for &pid in chunk {
                    let (mut person, address) = person_reach(&state, pid, spec.channel, plan.purpose, loose);
                    person.suppressed_by = Self::suppressed_by(&plan, &state, pid);
                    // Someone the person checks hold (the store judges them again) needs no message.
                    let held = plan.guardrails.check_person(&person, &request).is_some();
                    let context = || {
                        render_context(
                            &state,
                            pid,
                            &means,
                            Some((id, &plan.campaign.name)),
                            &spec.vars,
                            spec.sender.as_deref(),
                            plan.guardrails.time_zone(),
                            needs,
                        )
                    };
                    let content = match (&address, if held { None } else { context() }) {
                        (Some(_), Some(ctx)) => match plan.template.render(spec.channel, &ctx) {
                            Ok(content) => serde_json::to_string(&content).unwrap_or_default(),
                            Err(_) => {
                                person.has_address = false;
                                String::new()
                            }
                        },
                        _ => String::new(),
                    };
                    let (kind, value) = address.unwrap_or_default();
                    items.push(EnqueueItem {
                        profile_id: pid,
                        key: format!("c{id}-p{pid}"),
                        person,
                        recipient_kind: kind,
                        recipient_value: value,
                        content,
                    });
                }
                items
            };
            let batch = EnqueueBatch {
                campaign_id: id,
                channel: spec.channel,
                account: spec.account.clone(),
                account_type: plan.account.account_type.clone(),
                scope: spec.scope,
                purpose: plan.purpose,
                sender: spec.sender.clone(),
                at,
                guardrails: plan.guardrails.clone(),
                items,
                plan_size: recipients.len(),
            };
            if let Some(previous) = writing.take() {
                outcome.tally(&previous.await.map_err(StoreError::from)??);
            }
            let store = self.store().clone();
            writing = Some(tokio::spawn(async move { store.enqueue(tenant, batch).await }));
        }
        if let Some(last) = writing {
            outcome.tally(&last.await.map_err(StoreError::from)??);
        }
        let planned = outcome.queued + outcome.resumed;
        self.store()
            .move_campaign(tenant, id, &[CampaignState::Planning], CampaignState::Sending, Some(planned))
            .await?;
        Ok(outcome)
    }

    /// Campaigns whose time has come (scheduled and due) or whose planning was interrupted.
    pub async fn due_campaigns(&self, tenant: TenantId, now: Millis) -> Result<Vec<i64>> {
        Ok(self
            .campaigns(tenant)
            .await?
            .into_iter()
            .filter(|c| c.state == CampaignState::Planning || (c.state == CampaignState::Scheduled && c.send_at <= now))
            .map(|c| c.id)
            .collect())
    }

    /// Marks sending campaigns done once nothing of theirs is queued or being attempted.
    pub async fn finish_campaigns(&self, tenant: TenantId) -> Result<()> {
        for c in self.campaigns(tenant).await?.into_iter().filter(|c| c.state == CampaignState::Sending) {
            if !self.store().has_pending(tenant, c.id).await? {
                self.store().move_campaign(tenant, c.id, &[CampaignState::Sending], CampaignState::Done, None).await?;
            }
        }
        Ok(())
    }

    pub async fn cancel_campaign(&self, tenant: TenantId, id: i64) -> Result<u64> {
        let campaign = self.campaign(tenant, id).await?;
        let from = [CampaignState::Scheduled, CampaignState::Planning, CampaignState::Sending];
        if !self.store().move_campaign(tenant, id, &from, CampaignState::Cancelled, None).await? {
            return Err(ReachError::WrongState {
                id,
                state: campaign.state.as_str(),
                wanted: "only an unfinished campaign can be cancelled",
            }
            .into());
        }
        Ok(self.store().cancel_queued(tenant, id).await?)
    }

    pub async fn campaign_report(&self, tenant: TenantId, id: i64) -> Result<CampaignReport> {
        let campaign = self.campaign(tenant, id).await?;
        let store = self.store();
        let outbox = store.outbox_counts(tenant, id).await?;
        let count =
            |states: &[OutboxState]| outbox.iter().filter(|(s, _)| states.contains(s)).map(|(_, n)| n).sum::<u64>();
        let planned = outbox.iter().filter(|(s, _)| *s != OutboxState::Cancelled).map(|(_, n)| n).sum();
        let sent = count(&[OutboxState::Sent, OutboxState::Task, OutboxState::Delivered]);
        let delivered = count(&[OutboxState::Delivered]);
        let failed = count(&[OutboxState::Failed]);
        let failures = store.failure_counts(tenant, id).await?;
        let held = store.hold_counts(tenant, id).await?;
        let tasks = store.tasks(tenant, Some(id)).await?;
        let days = match campaign.spec.attribution_days {
            Some(d) => d,
            None => self.settings(tenant)?.reach.attribution_days,
        };
        let mut receivers = Vec::new();
        let mut after = 0;
        loop {
            let rows = store.outbox_rows(tenant, id, after, 10_000).await?;
            let Some(last) = rows.last() else { break };
            after = last.id;
            receivers.extend(
                rows.iter()
                    .filter(|r| matches!(r.state, OutboxState::Sent | OutboxState::Delivered | OutboxState::Task))
                    .map(|r| (r.profile_id, r.attempted_at.unwrap_or(r.due_at))),
            );
        }
        let holdout = store.holds_for(tenant, id, "holdout").await?;
        let since = campaign.planned_at.unwrap_or(campaign.send_at);
        let conversions = {
            let runtime = self.tenant(tenant)?;
            let state = runtime.state.read();
            let window = i64::from(days) * DAY;
            let converted = |pid: ProfileId, from: Millis| -> Option<i64> {
                let live = state.resolve(pid)?;
                let facts = state.profile(live)?.facts.as_slice();
                let orders: Vec<_> = facts
                    .iter()
                    .filter(|f| {
                        EventType::from_code(f.code) == Some(EventType::OrderPaid)
                            && f.ts >= from
                            && f.ts.0 <= from.0 + window
                    })
                    .collect();
                (!orders.is_empty()).then(|| orders.iter().map(|f| f.amount.0).sum())
            };
            let mut rc = 0;
            let mut revenue = 0;
            for (pid, at) in &receivers {
                if let Some(fen) = converted(*pid, *at) {
                    rc += 1;
                    revenue += fen;
                }
            }
            let hc = holdout.iter().filter(|p| converted(**p, since).is_some()).count() as u64;
            let rate = |c: u64, n: usize| (n > 0).then(|| c as f64 * 100.0 / n as f64);
            Conversions {
                attribution_days: days,
                receivers: receivers.len() as u64,
                receivers_converted: rc,
                receivers_revenue: yuan(revenue),
                holdout: holdout.len() as u64,
                holdout_converted: hc,
                lift_points: match (rate(rc, receivers.len()), rate(hc, holdout.len())) {
                    (Some(a), Some(b)) => Some(((a - b) * 100.0).round() / 100.0),
                    _ => None,
                },
            }
        };
        Ok(CampaignReport { campaign, outbox, planned, sent, delivered, failed, failures, held, tasks, conversions })
    }

    pub async fn add_suppressions(
        &self,
        tenant: TenantId,
        list: &str,
        identities: &[siyu_model::Identity],
        reason: &str,
    ) -> Result<u64> {
        self.tenant(tenant)?;
        if list.trim().is_empty() || list.len() > 64 {
            return Err(invalid("list", "a list name has 1 to 64 characters"));
        }
        let now = Millis::now();
        let entries: Vec<Suppression> = identities
            .iter()
            .map(|i| Suppression {
                list: list.to_string(),
                identity_kind: i.kind.as_str().to_string(),
                identity_value: i.value.clone(),
                reason: reason.to_string(),
                created_at: now,
            })
            .collect();
        Ok(self.store().add_suppressions(tenant, &entries).await?)
    }

    pub async fn suppressions(&self, tenant: TenantId) -> Result<Vec<Suppression>> {
        self.tenant(tenant)?;
        Ok(self.store().suppressions(tenant).await?)
    }

    pub async fn remove_suppression(
        &self,
        tenant: TenantId,
        list: &str,
        identity: &siyu_model::Identity,
    ) -> Result<bool> {
        Ok(self.store().remove_suppression(tenant, list, identity.kind.as_str(), &identity.value).await?)
    }

    /// The tenant's send account of that name (credentials included: for connectors only).
    pub fn send_account(&self, tenant: TenantId, name: &str) -> Result<Option<SendAccount>> {
        Ok(self.settings(tenant)?.send_accounts.get(name).cloned())
    }

    // The dispatcher's side.

    pub async fn claim_outbox(
        &self,
        tenant: TenantId,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Claimed>> {
        Ok(self.store().claim(tenant, now, lease_until, limit).await?)
    }

    /// Writes the events of claimed messages' outcomes to the log (`message_out`,
    /// `message_delivered`, `message_failed`, with `message_id` derived from the outbox key, so a
    /// repeat is a no-op), then records the outcomes as logged. A crash in between leaves the
    /// messages attempting: their lease runs out and they come back in doubt, never as an outcome
    /// without its event.
    pub async fn complete_outbox(&self, tenant: TenantId, done: &[(OutboxRow, Outcome)]) -> Result<()> {
        let now = Millis::now();
        let events: Vec<Event> =
            done.iter().filter_map(|(row, outcome)| outcome_event(&row.settled(outcome, now))).collect();
        if !events.is_empty() {
            self.ingest(tenant, "outbox", events).await?;
        }
        let outcomes: Vec<(i64, Outcome)> = done.iter().map(|(row, outcome)| (row.id, outcome.clone())).collect();
        Ok(self.store().complete_logged(tenant, &outcomes).await?)
    }

    /// Appends the events of recorded outcomes that are not in the log yet (after a crash too).
    pub async fn log_outcomes(&self, tenant: TenantId) -> Result<()> {
        loop {
            let rows = self.store().unlogged(tenant, 5_000).await?;
            if rows.is_empty() {
                return Ok(());
            }
            let events: Vec<Event> = rows.iter().filter_map(outcome_event).collect();
            if !events.is_empty() {
                self.ingest(tenant, "outbox", events).await?;
            }
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            self.store().mark_logged(tenant, &ids).await?;
        }
    }

    pub async fn task_rows(&self, tenant: TenantId, task_id: &str) -> Result<Vec<OutboxRow>> {
        Ok(self.store().task_rows(tenant, task_id).await?)
    }

    pub async fn upsert_task(&self, tenant: TenantId, task: &StaffTask) -> Result<()> {
        Ok(self.store().upsert_task(tenant, task).await?)
    }

    pub async fn staff_tasks(&self, tenant: TenantId, campaign: Option<i64>) -> Result<Vec<StaffTask>> {
        self.tenant(tenant)?;
        Ok(self.store().tasks(tenant, campaign).await?)
    }
}

fn declared_vars(def: &TemplateDef) -> Vec<String> {
    let _ = def;
    // At save time any `vars.*` is accepted; a campaign must then supply each one it uses.
    vec!["*".to_string()]
}

/// The log event of a recorded outcome.
fn outcome_event(row: &OutboxRow) -> Option<Event> {
    let (kind, when) = match row.state {
        OutboxState::Sent | OutboxState::Task => ("message_out", row.attempted_at.unwrap_or(row.updated_at)),
        OutboxState::Delivered => ("message_delivered", row.updated_at),
        OutboxState::Failed => ("message_failed", row.updated_at),
        _ => return None,
    };
    let identity = siyu_model::Identity::parse(&row.recipient_kind, &row.recipient_value).ok()?;
    let properties = serde_json::json!({
        "campaign_id": row.campaign_id,
        "outbox_key": row.key,
        "remote_id": row.remote_id,
        "error_code": row.error_code,
        "state": row.state.as_str(),
    });
    Some(Event {
        message_id: format!("outbox:{}:{kind}", row.key),
        kind: siyu_model::event::EventKind::parse(kind)?,
        channel: row.channel,
        account: row.account.clone(),
        identities: vec![identity],
        timestamp: when,
        received_at: Millis::now(),
        amount: None,
        currency: None,
        source: Some(siyu_model::Source { kind: "campaign".into(), id: row.campaign_id.to_string() }),
        group_id: None,
        properties: serde_json::value::to_raw_value(&properties).ok(),
        traits: None,
        context: None,
    })
}
