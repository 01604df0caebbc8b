//! `reach`: campaigns at scale (issue 11). On `--people` WeCom contacts loaded through
//! `Engine::ingest` (some unsubscribed, some with consent revoked, some on a suppression list):
//! - planning a campaign to a segment of everyone, every guardrail evaluated (person checks,
//!   quiet hours, frequency caps, the WeCom quotas, a holdout), and a second one the same day to
//!   the same segment, which the daily marketing cap holds back for everyone the first reached
//!   (the ledger path);
//! - the dry run of the same campaign without a holdout (person checks and ledger reads only);
//! - the outbox dispatcher delivering the first campaign, durably, to the log connector;
//! - the dispatcher delivering to the WeCom stand-in at a configured rate limit: one API call per
//!   person (a per-person variable in the text) and identical text (≤ 10 000 recipients a call).
//!
//! Every figure is gated: the plan's counts per rule equal the known crowd (given the holdout the
//! plan recorded), nobody gets two marketing messages a day, the log holds each message's key exactly once, and the stand-in
//! received each customer exactly once.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use siyu_connect::wecom::stand_in::{self, StandInConfig, StandInState};
use siyu_engine::reach::{CampaignReport, CampaignState};
use siyu_engine::{Engine, Ingested};
use siyu_model::event::EventKind;
use siyu_model::reach::template::TemplateDef;
use siyu_model::reach::{Audience, CampaignSpec, ConnectorKind, QuietHours, SendAccount, SendScope};
use siyu_model::{Channel, Event, Identity, Industry, Millis, ProfileId, TenantId};
use siyu_outbox::{Dispatcher, DispatcherConfig};

use super::check::Gate;
use super::Bench;

/// What `bench reach` measured.
#[derive(Debug, Clone)]
pub struct ReachReport {
    pub people: u64,
    /// Seconds to load the contacts through `Engine::ingest` (not a goal; for orientation).
    pub load_seconds: f64,
    /// The first campaign: a segment of everyone, every guardrail evaluated.
    pub plan: PlanFigure,
    /// The same campaign's dry run without a holdout: person checks and ledger reads, no
    /// rendering, no writes.
    pub dry_run: PlanFigure,
    /// A second campaign the same day to the same segment: everyone the first reached is held
    /// by the daily cap.
    pub capped: PlanFigure,
    /// The first campaign's messages through the dispatcher to the log connector.
    pub outbox: OutboxFigure,
    /// The dispatcher against the WeCom stand-in, per person and with identical text.
    pub wecom: Vec<WecomFigure>,
    pub gate: Gate,
}

#[derive(Debug, Clone, Default)]
pub struct PlanFigure {
    pub audience: u64,
    pub queued: u64,
    pub held: u64,
    pub holdout: u64,
    pub seconds: f64,
}

impl PlanFigure {
    /// Recipients judged per second (the whole audience over the time of the call).
    pub fn rate(&self) -> f64 {
        self.audience as f64 / self.seconds.max(1e-9)
    }
}

#[derive(Debug, Clone, Default)]
pub struct OutboxFigure {
    pub messages: u64,
    pub ticks: u64,
    pub seconds: f64,
}

impl OutboxFigure {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }
}

#[derive(Debug, Clone)]
pub struct WecomFigure {
    pub mode: &'static str,
    pub recipients: u64,
    /// `add_msg_template` calls the stand-in answered.
    pub calls: u64,
    /// The calls come in bursts, one per dispatcher tick (the connector sends a claimed batch,
    /// then the dispatcher records the outcomes): the bursts, and the seconds from the first to
    /// the last call of each, summed.
    pub bursts: u64,
    pub call_seconds: f64,
    pub configured_rate: u32,
    /// From the first tick to the campaign being done (tasks recorded, events logged).
    pub seconds: f64,
}

impl WecomFigure {
    /// Calls per second while the connector was sending (within the bursts).
    pub fn call_rate(&self) -> f64 {
        if self.calls <= self.bursts {
            return 0.0;
        }
        (self.calls - self.bursts) as f64 / self.call_seconds.max(1e-9)
    }

    pub fn recipients_per_second(&self) -> f64 {
        self.recipients as f64 / self.seconds.max(1e-9)
    }
}

/// Contacts per `Engine::submit`, and submits in flight (as `siyu import` does).
const CHUNK: usize = 10_000;
const IN_FLIGHT: usize = 4;
/// Every person's category is their index modulo this.
const CATEGORIES: u64 = 20;
const UNSUBSCRIBED: u64 = 0;
const REVOKED: u64 = 1;
const SUPPRESSED: u64 = 2;
const SUPPRESSION_LIST: &str = "bench-complaints";
const HOLDOUT_PERCENT: u8 = 5;
const LOG_ACCOUNT: &str = "bench-log";
const WECOM_ACCOUNT: &str = "bench-wecom";
const SENDER: &str = "bench-staff";
/// Messages claimed per dispatcher round, and rounds per tick (pipelined: the next round is
/// claimed while this one is sent).
const DISPATCH_BATCH: usize = 10_000;
const DISPATCH_ROUNDS: usize = 4;

/// How the WeCom campaign's messages differ from person to person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A per-person variable in the text: one `add_msg_template` per person.
    PerPerson,
    /// The same text for everyone: one call per 10 000 recipients.
    Identical,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::PerPerson => "per person",
            Mode::Identical => "identical text",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Mode::PerPerson => PER_PERSON_TEXT,
            Mode::Identical => IDENTICAL_TEXT,
        }
    }

    /// Contacts of each run have their own external userids.
    fn prefix(self) -> &'static str {
        match self {
            Mode::PerPerson => "wp",
            Mode::Identical => "wi",
        }
    }

    fn calls(self, people: u64) -> u64 {
        match self {
            Mode::PerPerson => people,
            Mode::Identical => people.div_ceil(10_000),
        }
    }
}

/// Who the people of a tenant are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crowd {
    /// Every guardrail has someone to hold: a twentieth each unsubscribed, revoked, suppressed.
    Mixed,
    /// Everyone may receive marketing.
    Open,
}

pub async fn bench_reach(bench: &Bench) -> anyhow::Result<ReachReport> {
    println!("\n# reach");
    let people = u64::from(bench.people());
    let url = bench.fresh_store_url("reach")?;
    let work_dir = bench.work_dir_for("reach");
    std::fs::create_dir_all(&work_dir).with_context(|| format!("failed to create {}", work_dir.display()))?;
    println!("store {}", bench.describe_store(&url));
    let store = siyu_store::open(&url).await.context("failed to open the store")?;
    let engine = Engine::start(store, bench.settings.engine_config()).await?;
    let dispatcher = Dispatcher::new(
        engine.clone(),
        DispatcherConfig {
            idle: Duration::from_millis(1),
            lease: Duration::from_secs(600),
            batch: DISPATCH_BATCH,
            rounds_per_tick: DISPATCH_ROUNDS,
            // Staff tasks are not followed while measuring: each poll is an API call per task.
            task_poll: Duration::from_secs(24 * 3_600),
            data_dir: work_dir.clone(),
            ..Default::default()
        },
    );
    let mut gate = Gate::default();

    let log_path = work_dir.join(format!("outbox-{}.ndjson", bench.run_id));
    let log_account = SendAccount {
        channel: Channel::Wecom,
        connector: ConnectorKind::Log,
        account_type: Some("wecom_corp".into()),
        base_url: Some(log_path.to_string_lossy().into_owned()),
        credentials: BTreeMap::new(),
        rate_per_second: None,
        staff: vec![],
    };
    let tenant = new_tenant(&engine, &bench.tenant_name("reach"), LOG_ACCOUNT, log_account).await?;
    let started = Instant::now();
    load_people(&engine, tenant, "wm", people, Crowd::Mixed).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    println!(
        "loaded {people} WeCom contacts through Engine::ingest in {load_seconds:.1}s ({:.0} people/s)",
        people as f64 / load_seconds.max(1e-9)
    );
    let segment = engine.create_segment(tenant, "everyone", "event_count >= 1").await?;
    gate.check(segment.size == people, format!("the segment holds everyone ({} of {people})", segment.size));
    let template = create_template(&engine, tenant, "per-person", PER_PERSON_TEXT).await?;
    let spec = CampaignSpec {
        template_id: template,
        audience: Audience::SegmentId(segment.id),
        channel: Channel::Wecom,
        account: LOG_ACCOUNT.into(),
        sender: Some(SENDER.into()),
        scope: SendScope::Mass,
        vars: BTreeMap::new(),
        send_at: None,
        holdout_percent: HOLDOUT_PERCENT,
        attribution_days: None,
        confirm_hours: None,
    };
    // A first tick with nothing to do: the dispatcher's staff-task poll is then not due again.
    dispatcher.tick(tenant).await?;
    let campaign = engine.create_campaign(tenant, "bench-1", &spec).await?.id;
    // A second handle on the store, to read back who the plan kept out as its holdout.
    let records = siyu_store::open(&url).await.context("failed to open the store again")?;

    // The dry run judges everyone (no holdout), so its holds are the crowd's exactly.
    let dry_spec = CampaignSpec { holdout_percent: 0, ..spec.clone() };
    let no_holdout = crowd_holds(&engine, tenant, segment.id, &HashSet::new())?;
    let dry = dry_run(&engine, tenant, &dry_spec, &no_holdout, &mut gate).await?;
    let plan = plan(&engine, tenant, campaign, &mut gate).await?;
    let holdout: HashSet<ProfileId> = records.holds_for(tenant, campaign, "holdout").await?.into_iter().collect();
    let share = holdout.len() as f64 / people as f64;
    gate.check(
        people < 2_000 || (share * 100.0 - f64::from(HOLDOUT_PERCENT)).abs() < 1.0,
        format!("campaign 1: the holdout is {:.2} % of the audience ({HOLDOUT_PERCENT} % asked)", share * 100.0),
    );
    let expected = crowd_holds(&engine, tenant, segment.id, &holdout)?;
    let report = engine.campaign_report(tenant, campaign).await?;
    check_plan("campaign 1", &plan, &report, &expected, &mut gate);

    let outbox = deliver_to_log(&engine, &dispatcher, tenant, campaign, &log_path, plan.queued, &mut gate).await?;

    // The same day, to the same segment without a holdout: everyone the first campaign reached is
    // held by the daily marketing cap (their ledgers say so); only its holdout, who got nothing
    // that day, is queued. (A run that spans midnight in Shanghai fails this check.)
    let second = CampaignSpec { holdout_percent: 0, ..spec.clone() };
    let capped_id = engine.create_campaign(tenant, "bench-2", &second).await?.id;
    let capped = self::plan(&engine, tenant, capped_id, &mut gate).await?;
    let report = engine.campaign_report(tenant, capped_id).await?;
    let mut held = no_holdout.held;
    held.insert("frequency:marketing_daily".into(), plan.queued);
    let expected_second = Expected { audience: people, queued: expected.open_in_holdout, held, open_in_holdout: 0 };
    check_plan("campaign 2 (same day)", &capped, &report, &expected_second, &mut gate);

    let mut wecom = Vec::new();
    for mode in [Mode::PerPerson, Mode::Identical] {
        wecom.push(deliver_to_wecom(bench, &engine, &dispatcher, mode, &mut gate).await?);
    }
    engine.shutdown();

    let report = ReachReport { people, load_seconds, plan, dry_run: dry, capped, outbox, wecom, gate };
    print_report(&report);
    Ok(report)
}

/// A per-person variable: every message differs, so WeCom gets one task per person.
const PER_PERSON_TEXT: &str = "{{ name | default(\"亲\") }}，{{ tier_label }}专属福利 #{{ profile_id }}";
/// The same text for everyone: WeCom tasks of up to 10 000 recipients.
const IDENTICAL_TEXT: &str = "春季上新，全场八折";

/// A tenant with one send account, quiet hours that do not start for a few hours (so they are
/// evaluated but move nothing) and the default caps and quotas.
async fn new_tenant(engine: &Arc<Engine>, name: &str, account: &str, send: SendAccount) -> anyhow::Result<TenantId> {
    let tenant = engine.create_tenant(name, Industry::ConsumerGoods).await?.record.id;
    let mut settings = engine.settings(tenant)?;
    settings.reach.time_zone = "Asia/Shanghai".into();
    // Shanghai keeps UTC+8 all year.
    let hour = (Millis::now().0.div_euclid(3_600_000) + 8).rem_euclid(24);
    settings.reach.quiet_hours =
        Some(QuietHours { start: format!("{:02}:00", (hour + 3) % 24), end: format!("{:02}:00", (hour + 4) % 24) });
    settings.send_accounts.insert(account.to_string(), send);
    engine.update_settings(tenant, settings).await?;
    Ok(tenant)
}

fn contact(prefix: &str, i: u64) -> String {
    format!("{prefix}{i:07}")
}

fn event(id: String, kind: &str, identity: &Identity, at: Millis) -> anyhow::Result<Event> {
    Ok(Event {
        message_id: id,
        kind: EventKind::parse(kind).with_context(|| format!("event type {kind}"))?,
        channel: Channel::Wecom,
        account: "corp".into(),
        identities: vec![identity.clone()],
        timestamp: at,
        received_at: at,
        amount: None,
        currency: None,
        source: None,
        group_id: None,
        properties: None,
        traits: None,
        context: None,
    })
}

/// `people` WeCom contacts (`wecom_add`), through `Engine::submit` in chunks; in a mixed crowd
/// the unsubscribed and revoked ones say so in a second event and the suppressed ones go on the
/// suppression list.
async fn load_people(
    engine: &Arc<Engine>,
    tenant: TenantId,
    prefix: &str,
    people: u64,
    crowd: Crowd,
) -> anyhow::Result<()> {
    let at = Millis(Millis::now().0 - 3_600_000);
    let mut pending = VecDeque::new();
    let (mut appended, mut expected) = (0u64, 0u64);
    let mut suppressed = Vec::new();
    let mut next = 0u64;
    while next < people {
        let end = (next + CHUNK as u64).min(people);
        let mut events = Vec::with_capacity((end - next) as usize + CHUNK / 10);
        for i in next..end {
            let identity = Identity::parse("wecom_external_userid", &contact(prefix, i))?;
            events.push(event(format!("{prefix}-add-{i}"), "wecom_add", &identity, at)?);
            if crowd == Crowd::Mixed {
                match i % CATEGORIES {
                    UNSUBSCRIBED => {
                        events.push(event(format!("{prefix}-unsub-{i}"), "unsubscribe", &identity, Millis(at.0 + 1))?)
                    }
                    REVOKED => events.push(event(
                        format!("{prefix}-revoke-{i}"),
                        "consent_revoked",
                        &identity,
                        Millis(at.0 + 1),
                    )?),
                    SUPPRESSED => suppressed.push(identity),
                    _ => {}
                }
            }
        }
        expected += events.len() as u64;
        pending.push_back(engine.submit(tenant, "bench", events).await?);
        if pending.len() >= IN_FLIGHT {
            appended += count_appended(pending.pop_front().expect("non-empty").wait().await?);
        }
        next = end;
    }
    for p in pending {
        appended += count_appended(p.wait().await?);
    }
    anyhow::ensure!(appended == expected, "{appended} of {expected} events appended");
    if !suppressed.is_empty() {
        engine.add_suppressions(tenant, SUPPRESSION_LIST, &suppressed, "complained").await?;
    }
    Ok(())
}

fn count_appended(outcomes: Vec<Ingested>) -> u64 {
    outcomes.iter().filter(|o| matches!(o, Ingested::Appended(_))).count() as u64
}

async fn create_template(engine: &Engine, tenant: TenantId, name: &str, text: &str) -> anyhow::Result<i64> {
    let def: TemplateDef = serde_json::from_value(serde_json::json!({
        "purpose": "marketing",
        "variants": { "default": { "text": text } }
    }))?;
    Ok(engine.create_template(tenant, name, &def).await?.id)
}

/// What a campaign must do, worked out from the crowd and its holdout: the audience, how many
/// it queues, the holds per rule (the holdout included), and how many of the holdout could have
/// received it.
struct Expected {
    audience: u64,
    queued: u64,
    held: BTreeMap<String, u64>,
    open_in_holdout: u64,
}

/// The expected outcome of a campaign to the segment that keeps `holdout` back.
fn crowd_holds(
    engine: &Engine,
    tenant: TenantId,
    segment: i64,
    holdout: &HashSet<ProfileId>,
) -> anyhow::Result<Expected> {
    let runtime = engine.runtime(tenant)?;
    let state = runtime.state.read();
    let members = &state.segments.segment(segment).context("the segment")?.members;
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    let (mut queued, mut open_in_holdout) = (0, 0);
    for pid in members.iter() {
        let profile = state.profile(pid).context("a member's profile")?;
        let value = profile
            .identities
            .iter()
            .find(|l| l.identity.kind.as_str() == "wecom_external_userid")
            .map(|l| l.identity.value.as_str())
            .context("a member without a WeCom contact")?;
        let index: u64 = value.trim_start_matches(|c: char| !c.is_ascii_digit()).parse().context("a contact index")?;
        let rule = match index % CATEGORIES {
            UNSUBSCRIBED => Some("unsubscribed".to_string()),
            REVOKED => Some("consent".to_string()),
            SUPPRESSED => Some(format!("suppression:{SUPPRESSION_LIST}")),
            _ => None,
        };
        if holdout.contains(&pid) {
            *held.entry("holdout".into()).or_default() += 1;
            open_in_holdout += u64::from(rule.is_none());
            continue;
        }
        match rule {
            Some(rule) => *held.entry(rule).or_default() += 1,
            None => queued += 1,
        }
    }
    Ok(Expected { audience: members.size(), queued, held, open_in_holdout })
}

/// The campaign's dry run, timed; its holds must be the crowd's.
async fn dry_run(
    engine: &Engine,
    tenant: TenantId,
    spec: &CampaignSpec,
    expected: &Expected,
    gate: &mut Gate,
) -> anyhow::Result<PlanFigure> {
    let started = Instant::now();
    let dry = engine.dry_run(tenant, spec).await?;
    let seconds = started.elapsed().as_secs_f64();
    let mut held: BTreeMap<String, u64> = dry.held.iter().cloned().collect();
    let held_total: u64 = held.values().sum();
    if dry.holdout > 0 {
        held.insert("holdout".into(), dry.holdout);
    }
    let figure =
        PlanFigure { audience: dry.audience, queued: dry.would_send, held: held_total, holdout: dry.holdout, seconds };
    check_counts("dry run", &figure, dry.would_send, &held, expected, gate);
    Ok(figure)
}

async fn plan(engine: &Engine, tenant: TenantId, campaign: i64, gate: &mut Gate) -> anyhow::Result<PlanFigure> {
    let started = Instant::now();
    let outcome = engine.plan_campaign(tenant, campaign).await?;
    let seconds = started.elapsed().as_secs_f64();
    gate.check(outcome.resumed == 0, format!("campaign {campaign}: nothing resumed ({})", outcome.resumed));
    let audience = outcome.queued + outcome.held + outcome.holdout;
    Ok(PlanFigure { audience, queued: outcome.queued, held: outcome.held, holdout: outcome.holdout, seconds })
}

/// A plan against its campaign's report and the expected holds.
fn check_plan(name: &str, plan: &PlanFigure, report: &CampaignReport, expected: &Expected, gate: &mut Gate) {
    let held: BTreeMap<String, u64> = report.held.iter().cloned().collect();
    gate.check(
        report.planned == plan.queued,
        format!("{name}: the report's planned {} = the plan's queued {}", report.planned, plan.queued),
    );
    check_counts(name, plan, report.planned, &held, expected, gate);
}

fn check_counts(
    name: &str,
    plan: &PlanFigure,
    planned: u64,
    held: &BTreeMap<String, u64>,
    expected: &Expected,
    gate: &mut Gate,
) {
    gate.check(
        plan.audience == expected.audience
            && planned == expected.queued
            && planned + plan.held + plan.holdout == plan.audience,
        format!(
            "{name}: planned {planned} (expected {}) = audience {} (of {}) − held {} − holdout {}",
            expected.queued, plan.audience, expected.audience, plan.held, plan.holdout
        ),
    );
    gate.check(held == &expected.held, format!("{name}: held per rule {held:?} = {:?}", expected.held));
}

/// Ticks the dispatcher until the campaign is done; the log must then hold every message once.
async fn deliver_to_log(
    engine: &Engine,
    dispatcher: &Dispatcher,
    tenant: TenantId,
    campaign: i64,
    log: &Path,
    planned: u64,
    gate: &mut Gate,
) -> anyhow::Result<OutboxFigure> {
    let events_before = engine.logged_events(tenant).await?;
    let started = Instant::now();
    let (ticks, sent, failed) = tick_until_sent(dispatcher, tenant, campaign, planned).await?;
    let seconds = started.elapsed().as_secs_f64();
    let state = engine.campaign(tenant, campaign).await?.state;
    gate.check(state == CampaignState::Done, format!("campaign {campaign} is done ({})", state.as_str()));
    gate.check(
        sent == planned && failed == 0,
        format!("outbox: {sent} of {planned} accepted by the log connector, {failed} failed"),
    );
    let counts = tokio::task::spawn_blocking({
        let log = log.to_path_buf();
        move || siyu_connect::log::count_by_key(log)
    })
    .await??;
    let twice = counts.values().filter(|n| **n != 1).count();
    let keyed = counts.keys().filter(|k| k.starts_with(&format!("c{campaign}-p"))).count() as u64;
    gate.check(
        counts.len() as u64 == planned && twice == 0 && keyed == planned,
        format!("the log holds each of the {planned} keys exactly once ({} keys, {twice} not once)", counts.len()),
    );
    let logged = engine.logged_events(tenant).await? - events_before;
    gate.check(logged == planned, format!("every send is a message_out event in the log ({logged} of {planned})"));
    Ok(OutboxFigure { messages: sent, ticks, seconds })
}

/// Ticks the dispatcher until every planned message has an outcome (sent — or, on WeCom, a task
/// the staff member confirms — or failed); returns the ticks, the messages accepted and the
/// messages failed.
async fn tick_until_sent(
    dispatcher: &Dispatcher,
    tenant: TenantId,
    campaign: i64,
    planned: u64,
) -> anyhow::Result<(u64, u64, u64)> {
    let (mut ticks, mut sent, mut failed, mut idle) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let tick = dispatcher.tick(tenant).await?;
        ticks += 1;
        sent += tick.sent;
        failed += tick.failed;
        if sent + failed >= planned {
            return Ok((ticks, sent, failed));
        }
        idle = if tick.claimed == 0 { idle + 1 } else { 0 };
        anyhow::ensure!(idle < 1_000, "campaign {campaign} stalled: {sent} of {planned} sent after {ticks} ticks");
        if tick.claimed == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// When the stand-in answered each `add_msg_template`.
type CallTimes = Arc<Mutex<Vec<Instant>>>;

/// A campaign to `--wecom-people` contacts (at most `--people`) through the WeCom connector at
/// `--wecom-rate` calls a second, against the stand-in.
async fn deliver_to_wecom(
    bench: &Bench,
    engine: &Arc<Engine>,
    dispatcher: &Dispatcher,
    mode: Mode,
    gate: &mut Gate,
) -> anyhow::Result<WecomFigure> {
    let people = u64::from(bench.args.wecom_people.min(bench.people())).max(1);
    let rate = bench.args.wecom_rate;
    let (prefix, name) = (mode.prefix(), mode.name());
    let contacts: Vec<(String, String)> = (0..people).map(|i| (SENDER.to_string(), contact(prefix, i))).collect();
    let config = StandInConfig { contacts, ..Default::default() };
    let credentials =
        [("corp_id".to_string(), config.corp_id.clone()), ("corp_secret".to_string(), config.corp_secret.clone())]
            .into();
    let (url, state, times, server) = start_stand_in(config).await?;
    let account = SendAccount {
        channel: Channel::Wecom,
        connector: ConnectorKind::Wecom,
        account_type: Some("wecom_corp".into()),
        base_url: Some(url),
        credentials,
        rate_per_second: Some(rate),
        staff: vec![],
    };
    let tenant =
        new_tenant(engine, &bench.tenant_name(&format!("reach-wecom-{prefix}")), WECOM_ACCOUNT, account).await?;
    load_people(engine, tenant, prefix, people, Crowd::Open).await?;
    let segment = engine.create_segment(tenant, "everyone", "event_count >= 1").await?.id;
    let template = create_template(engine, tenant, name, mode.text()).await?;
    // A first tick with nothing to do: the dispatcher's staff-task poll is then not due again.
    dispatcher.tick(tenant).await?;
    let spec = CampaignSpec {
        template_id: template,
        audience: Audience::SegmentId(segment),
        channel: Channel::Wecom,
        account: WECOM_ACCOUNT.into(),
        sender: Some(SENDER.into()),
        scope: SendScope::Mass,
        vars: BTreeMap::new(),
        send_at: None,
        holdout_percent: 0,
        attribution_days: None,
        confirm_hours: None,
    };
    let campaign = engine.create_campaign(tenant, name, &spec).await?.id;
    let planned = engine.plan_campaign(tenant, campaign).await?;
    gate.check(
        planned.queued == people,
        format!("wecom {name}: {} of {people} planned ({} held)", planned.queued, planned.held),
    );
    let started = Instant::now();
    let (_, sent, failed) = tick_until_sent(dispatcher, tenant, campaign, people).await?;
    let seconds = started.elapsed().as_secs_f64();
    let received = state.received();
    drop(server);
    let mut per_customer: BTreeMap<&str, u64> = BTreeMap::new();
    let mut refused = 0;
    for task in &received.templates {
        refused += task.fail_list.len();
        for id in &task.external_userids {
            *per_customer.entry(id.as_str()).or_default() += 1;
        }
    }
    let once = per_customer.values().filter(|n| **n == 1).count() as u64;
    gate.check(
        per_customer.len() as u64 == people && once == people && refused == 0,
        format!(
            "wecom {name}: the stand-in received each of {people} customers exactly once ({} customers, {once} once, {refused} refused)",
            per_customer.len()
        ),
    );
    gate.check(sent == people && failed == 0, format!("wecom {name}: {sent} of {people} sent, {failed} failed"));
    let times = times.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // A pause far longer than the limiter's interval ends a burst.
    let (bursts, call_seconds) = bursts(&times, Duration::from_secs_f64((20.0 / f64::from(rate)).max(0.5)));
    let expected_calls = mode.calls(people);
    gate.check(
        times.len() as u64 == expected_calls,
        format!("wecom {name}: {} add_msg_template calls ({expected_calls} expected)", times.len()),
    );
    Ok(WecomFigure {
        mode: name,
        recipients: people,
        calls: times.len() as u64,
        bursts,
        call_seconds,
        configured_rate: rate,
        seconds,
    })
}

/// The runs of `times` (in order) without a pause longer than `gap`: how many, and their
/// lengths summed, in seconds.
fn bursts(times: &[Instant], gap: Duration) -> (u64, f64) {
    let Some(first) = times.first() else { return (0, 0.0) };
    let (mut bursts, mut seconds, mut start) = (1, 0.0, *first);
    for pair in times.windows(2) {
        if pair[1].duration_since(pair[0]) > gap {
            seconds += pair[0].duration_since(start).as_secs_f64();
            bursts += 1;
            start = pair[1];
        }
    }
    seconds += times[times.len() - 1].duration_since(start).as_secs_f64();
    (bursts, seconds)
}

/// The WeCom stand-in on a free port, with the time of each mass-task call recorded.
async fn start_stand_in(config: StandInConfig) -> anyhow::Result<(String, StandInState, CallTimes, AbortOnDrop)> {
    let state = StandInState::new(config);
    let times: CallTimes = Arc::default();
    let router = stand_in::router(state.clone()).layer(axum::middleware::from_fn_with_state(times.clone(), stamp));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.context("failed to bind the stand-in")?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((url, state, times, AbortOnDrop(task)))
}

async fn stamp(
    axum::extract::State(times): axum::extract::State<CallTimes>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mass = request.uri().path().ends_with("/add_msg_template");
    let response = next.run(request).await;
    if mass {
        times.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now());
    }
    response
}

/// Stops the stand-in's server task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<std::io::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The goals, for `bench all`'s summary.
pub(super) fn goals(report: &ReachReport) -> Vec<super::Goal> {
    let correct = report.gate.passed();
    let mut goals = vec![
        super::Goal {
            name: "plan a campaign to a segment, every guardrail",
            measured: report.plan.rate(),
            goal: 500_000.0,
            unit: "recipients/s",
            higher_is_better: true,
            correct,
        },
        super::Goal {
            name: "outbox → log connector, durable",
            measured: report.outbox.rate(),
            goal: 100_000.0,
            unit: "sends/s",
            higher_is_better: true,
            correct,
        },
    ];
    if let Some(w) = report.wecom.iter().find(|w| w.calls > 1 && w.calls == w.recipients) {
        goals.push(super::Goal {
            name: "outbox → WeCom stand-in, API calls (≥ 95 % of the rate limit)",
            measured: w.call_rate(),
            goal: 0.95 * f64::from(w.configured_rate),
            unit: "calls/s",
            higher_is_better: true,
            correct,
        });
    }
    goals
}

fn print_report(report: &ReachReport) {
    println!();
    println!(
        "{} people (a twentieth each unsubscribed, consent revoked, suppressed; {HOLDOUT_PERCENT} % holdout); loaded in {:.1}s",
        report.people, report.load_seconds
    );
    println!();
    println!("| phase | recipients | queued | held | holdout | seconds | rate |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, p) in [
        ("plan campaign 1 (segment, every guardrail)", &report.plan),
        ("dry run (person checks + ledger reads)", &report.dry_run),
        ("plan campaign 2, same day (daily cap holds all campaign 1 reached)", &report.capped),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {:.2} | {:.0} recipients/s |",
            p.audience,
            p.queued,
            p.held,
            p.holdout,
            p.seconds,
            p.rate()
        );
    }
    println!(
        "| outbox → log connector ({} ticks of ≤ {DISPATCH_ROUNDS} rounds of ≤ {DISPATCH_BATCH}) | {} | | | | {:.2} | {:.0} sends/s |",
        report.outbox.ticks,
        report.outbox.messages,
        report.outbox.seconds,
        report.outbox.rate()
    );
    for w in &report.wecom {
        println!(
            "| outbox → WeCom stand-in, {} ({} calls in {} bursts, limit {}/s) | {} | | | | {:.2} | {:.0} recipients/s; {:.1} calls/s while sending |",
            w.mode,
            w.calls,
            w.bursts,
            w.configured_rate,
            w.recipients,
            w.seconds,
            w.recipients_per_second(),
            w.call_rate()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_divide_by_their_time() {
        let p = PlanFigure { audience: 1_000, seconds: 0.5, ..Default::default() };
        assert!((p.rate() - 2_000.0).abs() < 1e-9);
        let w = WecomFigure {
            mode: "x",
            recipients: 12,
            calls: 12,
            bursts: 2,
            call_seconds: 2.0,
            configured_rate: 5,
            seconds: 4.0,
        };
        assert!((w.call_rate() - 5.0).abs() < 1e-9);
        assert!((w.recipients_per_second() - 3.0).abs() < 1e-9);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let times = [at(0), at(10), at(20), at(5_000), at(5_030)];
        let (n, seconds) = bursts(&times, Duration::from_millis(500));
        assert_eq!(n, 2);
        assert!((seconds - 0.05).abs() < 1e-9);
        assert_eq!(contact("wm", 42), "wm0000042");
    }

    #[test]
    fn the_templates_compile() {
        for text in [PER_PERSON_TEXT, IDENTICAL_TEXT] {
            let def: TemplateDef = serde_json::from_value(
                serde_json::json!({"purpose": "marketing", "variants": {"default": {"text": text}}}),
            )
            .unwrap();
            assert!(def.compile(&[]).is_ok(), "{text}");
        }
    }
}
