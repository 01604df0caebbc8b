//! Campaigns end to end through the real engine, store and dispatcher, against connectors'
//! local stand-ins: every guardrail named in the dry run and the results, each message delivered
//! once, caps never exceeded by concurrent senders (several tasks, and two engines on one
//! PostgreSQL database, as two `siyu serve` would be), retries that back off and failures that
//! carry the connector's error. SQLite always; PostgreSQL when `SIYU_TEST_DATABASE_URL` is set.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use siyu_connect::webhook::StandInReceiver;
use siyu_connect::wecom::stand_in::{StandInConfig, WeComStandIn};
use siyu_engine::reach::TaskState;
use siyu_engine::{Engine, EngineConfig};
use siyu_model::event::EventKind;
use siyu_model::reach::template::TemplateDef;
use siyu_model::reach::{Audience, CampaignSpec, ConnectorKind, QuietHours, SendAccount, SendScope};
use siyu_model::{Channel, Event, Identity, Industry, Millis, TenantId};
use siyu_outbox::{Dispatcher, DispatcherConfig};
use siyu_store::scratch::ScratchDatabase;
use siyu_store::OutboxState;

/// A store to open engines on: a SQLite file, or a scratch PostgreSQL database.
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn engine(&self) -> Result<Arc<Engine>> {
        let store = siyu_store::open(&self.url).await?;
        Ok(Engine::start(store, EngineConfig::default()).await?)
    }
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("siyu.db").display().to_string();
    test(Db { url, _dir: Some(dir) }).await.unwrap();
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let Some(db) = ScratchDatabase::from_test_env().await else { return };
    let result = test(Db { url: db.url.clone(), _dir: None }).await;
    db.drop_database().await;
    result.unwrap();
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::on_sqlite(super::$name).await }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::on_postgres(super::$name).await }
        )* }
    };
}

both_backends!(
    a_campaign_names_every_hold_and_reaches_each_member_once,
    concurrent_senders_never_exceed_a_cap,
    parallel_dispatchers_deliver_each_message_once,
    retries_back_off_and_failures_keep_the_connector_error,
    quiet_hours_move_marketing_to_their_end,
    wecom_mass_sends_are_tasks_staff_confirm_or_let_expire,
    a_holdout_makes_the_lift_measurable,
    consent_is_per_purpose_and_channel_and_survives_a_rebuild,
);

fn event(id: &str, kind: &str, identities: &[(&str, &str)], at: Millis) -> Event {
    Event {
        message_id: id.to_string(),
        kind: EventKind::parse(kind).unwrap(),
        channel: Channel::Wecom,
        account: "corp".into(),
        identities: identities.iter().map(|(k, v)| Identity::parse(k, v).unwrap()).collect(),
        timestamp: at,
        received_at: at,
        amount: None,
        currency: None,
        source: None,
        group_id: None,
        properties: None,
        traits: None,
        context: None,
    }
}

/// The people of the tests, by what should happen to them.
struct Crowd {
    /// WeCom contacts who may receive marketing.
    open: Vec<String>,
    unsubscribed: Vec<String>,
    revoked: Vec<String>,
    suppressed: Vec<String>,
    /// Known on Douyin only: nothing a WeCom or webhook message can be addressed to.
    unaddressable: usize,
}

async fn setup(engine: &Engine, name: &str, people: usize) -> Result<(TenantId, Crowd)> {
    let tenant = engine.create_tenant(name, Industry::ConsumerGoods).await?.record.id;
    let mut settings = engine.settings(tenant)?;
    // Tests run at any hour; quiet hours have their own test.
    settings.reach.quiet_hours = None;
    engine.update_settings(tenant, settings).await?;
    let at = Millis(Millis::now().0 - 3_600_000);
    let mut events = Vec::new();
    let mut crowd = Crowd { open: vec![], unsubscribed: vec![], revoked: vec![], suppressed: vec![], unaddressable: 0 };
    for i in 0..people {
        let wx = format!("wm-{i:04}");
        events.push(event(&format!("add-{i}"), "wecom_add", &[("wecom_external_userid", &wx)], at));
        match i % 10 {
            0 => {
                events.push(event(
                    &format!("unsub-{i}"),
                    "unsubscribe",
                    &[("wecom_external_userid", &wx)],
                    Millis(at.0 + 1),
                ));
                crowd.unsubscribed.push(wx);
            }
            1 => {
                events.push(event(
                    &format!("revoke-{i}"),
                    "consent_revoked",
                    &[("wecom_external_userid", &wx)],
                    Millis(at.0 + 1),
                ));
                crowd.revoked.push(wx);
            }
            2 => crowd.suppressed.push(wx),
            _ => crowd.open.push(wx),
        }
    }
    for i in 0..people / 10 {
        let mut e = event(&format!("dy-{i}"), "follow", &[("douyin_open_id", &format!("dy-{i}"))], at);
        e.channel = Channel::Douyin;
        events.push(e);
        crowd.unaddressable += 1;
    }
    engine.ingest(tenant, "test", events).await?;
    let suppressed: Vec<Identity> =
        crowd.suppressed.iter().map(|v| Identity::parse("wecom_external_userid", v).unwrap()).collect();
    engine.add_suppressions(tenant, "complaints", &suppressed, "complained twice").await?;
    Ok((tenant, crowd))
}

async fn webhook_account(engine: &Engine, tenant: TenantId, receiver: &StandInReceiver, secret: &str) -> Result<()> {
    let mut settings = engine.settings(tenant)?;
    settings.send_accounts.insert(
        "hook".into(),
        SendAccount {
            channel: Channel::Wecom,
            connector: ConnectorKind::Webhook,
            account_type: None,
            base_url: Some(receiver.url()),
            credentials: [("secret".to_string(), secret.to_string())].into(),
            rate_per_second: None,
            staff: vec![],
        },
    );
    Ok(engine.update_settings(tenant, settings).await?)
}

async fn template(engine: &Engine, tenant: TenantId, purpose: &str) -> Result<i64> {
    let def: TemplateDef = serde_json::from_value(serde_json::json!({
        "purpose": purpose,
        "variants": {"default": {"text": "{{ name | default(\"亲\") }}，{{ tier_label }}专属福利"}}
    }))?;
    Ok(engine.create_template(tenant, &format!("t-{purpose}-{}", Millis::now().0), &def).await?.id)
}

async fn everyone(engine: &Engine, tenant: TenantId) -> Result<i64> {
    Ok(engine.create_segment(tenant, "everyone", "event_count >= 1").await?.id)
}

fn spec(template_id: i64, segment: i64, scope: SendScope) -> CampaignSpec {
    CampaignSpec {
        template_id,
        audience: Audience::SegmentId(segment),
        channel: Channel::Wecom,
        account: "hook".into(),
        sender: Some("zhang".into()),
        scope,
        vars: BTreeMap::new(),
        send_at: None,
        holdout_percent: 0,
        attribution_days: None,
        confirm_hours: None,
    }
}

fn fast() -> DispatcherConfig {
    DispatcherConfig { idle: Duration::from_millis(10), first_backoff: Duration::from_millis(20), ..Default::default() }
}

async fn drain(dispatcher: &Dispatcher, tenant: TenantId, engine: &Engine) -> Result<()> {
    for _ in 0..2_000 {
        dispatcher.tick(tenant).await?;
        let campaigns = engine.campaigns(tenant).await?;
        if campaigns.iter().all(|c| matches!(c.state, siyu_engine::reach::CampaignState::Done)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the campaigns did not finish")
}

fn held(report: &siyu_engine::reach::CampaignReport) -> BTreeMap<String, u64> {
    report.held.iter().cloned().collect()
}

/// Consent events may name a purpose (`properties.purpose`); they then apply to that purpose on
/// their channel, while one without a purpose applies to everything. The same verdicts come from
/// an engine that rebuilt the state from the log (the replay reads the purpose back).
async fn consent_is_per_purpose_and_channel_and_survives_a_rebuild(db: Db) -> Result<()> {
    let engine = db.engine().await?;
    let tenant = engine.create_tenant("consent", Industry::ConsumerGoods).await?.record.id;
    let mut settings = engine.settings(tenant)?;
    settings.reach.quiet_hours = None;
    engine.update_settings(tenant, settings).await?;
    let receiver = StandInReceiver::start("s3cret").await?;
    webhook_account(&engine, tenant, &receiver, "s3cret").await?;
    let at = Millis(Millis::now().0 - 3_600_000);
    let consent = |id: &str, who: &str, kind: &str, purpose: Option<&str>, channel: Channel, step: i64| {
        let mut e = event(id, kind, &[("wecom_external_userid", who)], Millis(at.0 + step));
        e.channel = channel;
        e.properties = purpose.map(|p| serde_json::value::to_raw_value(&serde_json::json!({"purpose": p})).unwrap());
        e
    };
    let mut events: Vec<Event> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|w| event(&format!("add-{w}"), "wecom_add", &[("wecom_external_userid", w)], at))
        .collect();
    events.extend([
        // a: marketing revoked on WeCom.
        consent("a1", "a", "consent_revoked", Some("marketing"), Channel::Wecom, 1),
        // b: marketing revoked on Douyin only.
        consent("b1", "b", "consent_revoked", Some("marketing"), Channel::Douyin, 1),
        // c: everything revoked.
        consent("c1", "c", "consent_revoked", None, Channel::Wecom, 1),
        // d: marketing revoked, then granted again, on WeCom.
        consent("d1", "d", "consent_revoked", Some("marketing"), Channel::Wecom, 1),
        consent("d2", "d", "consent_granted", Some("marketing"), Channel::Wecom, 2),
        // e: everything revoked, then service granted on WeCom.
        consent("e1", "e", "consent_revoked", None, Channel::Wecom, 1),
        consent("e2", "e", "consent_granted", Some("service"), Channel::Wecom, 2),
        // f: a purpose siyu does not send for changes nothing.
        consent("f1", "f", "consent_revoked", Some("newsletter"), Channel::Wecom, 1),
    ]);
    engine.ingest(tenant, "test", events).await?;
    let segment = everyone(&engine, tenant).await?;
    let (marketing, service) =
        (template(&engine, tenant, "marketing").await?, template(&engine, tenant, "service").await?);
    let verdicts = |engine: Arc<Engine>| async move {
        let mut out = Vec::new();
        for template_id in [marketing, service] {
            let dry = engine.dry_run(tenant, &spec(template_id, segment, SendScope::Direct)).await?;
            out.push((dry.would_send, dry.held.clone()));
        }
        anyhow::Ok(out)
    };
    let before = verdicts(engine.clone()).await?;
    // Marketing: a, c and e held; service: only c (e's service grant is later than the revoke).
    assert_eq!(before[0], (3, vec![("consent".to_string(), 3)]), "marketing");
    assert_eq!(before[1], (5, vec![("consent".to_string(), 1)]), "service");
    engine.shutdown();

    // A second engine on the same store rebuilds the state from the log.
    let rebuilt = db.engine().await?;
    assert_eq!(verdicts(rebuilt.clone()).await?, before, "the replay keeps the consent purposes");
    // The plan holds the same people; the daily cap then holds the rest for a second campaign.
    let id = rebuilt.create_campaign(tenant, "m", &spec(marketing, segment, SendScope::Direct)).await?.id;
    rebuilt.plan_campaign(tenant, id).await?;
    let report = rebuilt.campaign_report(tenant, id).await?;
    assert_eq!((report.planned, held(&report)), (3, BTreeMap::from([("consent".to_string(), 3)])));
    let again = verdicts(rebuilt.clone()).await?;
    assert_eq!(again[0], (0, vec![("consent".to_string(), 3), ("frequency:marketing_daily".to_string(), 3)]));
    rebuilt.shutdown();
    Ok(())
}

async fn a_campaign_names_every_hold_and_reaches_each_member_once(db: Db) -> Result<()> {
    let engine = db.engine().await?;
    let (tenant, crowd) = setup(&engine, "shop", 100).await?;
    let receiver = StandInReceiver::start("s3cret").await?;
    webhook_account(&engine, tenant, &receiver, "s3cret").await?;
    let segment = everyone(&engine, tenant).await?;
    let spec = spec(template(&engine, tenant, "marketing").await?, segment, SendScope::Mass);

    let dry = engine.dry_run(tenant, &spec).await?;
    let expected_holds: BTreeMap<String, u64> = [
        ("consent".to_string(), crowd.revoked.len() as u64),
        ("no_address".to_string(), crowd.unaddressable as u64),
        ("suppression:complaints".to_string(), crowd.suppressed.len() as u64),
        ("unsubscribed".to_string(), crowd.unsubscribed.len() as u64),
    ]
    .into();
    ensure!(dry.held.iter().cloned().collect::<BTreeMap<_, _>>() == expected_holds, "dry run holds {:?}", dry.held);
    ensure!(dry.would_send == crowd.open.len() as u64, "dry run sends {}", dry.would_send);
    ensure!(dry.audience == 100 + crowd.unaddressable as u64);

    let campaign = engine.create_campaign(tenant, "福利", &spec).await?;
    let dispatcher = Dispatcher::new(engine.clone(), fast());
    drain(&dispatcher, tenant, &engine).await?;

    let report = engine.campaign_report(tenant, campaign.id).await?;
    ensure!(held(&report) == expected_holds, "report holds {:?}", report.held);
    ensure!(report.sent == crowd.open.len() as u64 && report.planned == report.sent, "sent {}", report.sent);
    ensure!(report.failed == 0);
    let deliveries = receiver.state().deliveries();
    let mut per_recipient: BTreeMap<String, usize> = BTreeMap::new();
    for d in &deliveries {
        let value = d.payload["recipient"]["value"].as_str().context("a recipient")?.to_string();
        *per_recipient.entry(value).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = crowd.open.iter().map(|v| (v.clone(), 1)).collect();
    ensure!(per_recipient == expected, "deliveries per recipient differ");
    ensure!(receiver.state().stats().duplicates == 0);
    // The rendered text went out, and every send is an event in the log.
    // No name: the default; a WeCom add alone makes a passer-by (路人粉).
    let text = deliveries[0].payload["content"]["text"].as_str();
    ensure!(text == Some("亲，路人粉专属福利"), "rendered {text:?}");
    let profile = engine
        .profile_view(
            tenant,
            &siyu_engine::query::ProfileRef::Identity(Identity::parse("wecom_external_userid", &crowd.open[0])?),
            None,
        )?
        .context("a receiver's profile")?;
    let timeline = engine.timeline(tenant, profile.id, None, 50).await?;
    ensure!(
        timeline.iter().any(|e| e.event.kind.as_str() == "message_out"),
        "no message_out in the receiver's timeline"
    );

    // Planning again is refused: the campaign is done, nobody gets it twice.
    ensure!(engine.plan_campaign(tenant, campaign.id).await.is_err());
    Ok(())
}

async fn concurrent_senders_never_exceed_a_cap(db: Db) -> Result<()> {
    let engine = db.engine().await?;
    let (tenant, crowd) = setup(&engine, "shop", 60).await?;
    let receiver = StandInReceiver::start("k").await?;
    webhook_account(&engine, tenant, &receiver, "k").await?;
    let segment = everyone(&engine, tenant).await?;
    let template = template(&engine, tenant, "marketing").await?;
    // A second engine on the same store: on PostgreSQL that is what a second `siyu serve` is.
    let other = match db.url.starts_with("postgres") {
        true => db.engine().await?,
        false => engine.clone(),
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(engine.create_campaign(tenant, &format!("c{i}"), &spec(template, segment, SendScope::Mass)).await?.id);
    }
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let engine = if i % 2 == 0 { engine.clone() } else { other.clone() };
        let id = *id;
        tasks.push(tokio::spawn(async move { engine.plan_campaign(tenant, id).await }));
    }
    for t in tasks {
        t.await??;
    }
    let mut planned = 0;
    let mut capped = 0;
    for id in &ids {
        let report = engine.campaign_report(tenant, *id).await?;
        planned += report.planned;
        capped += held(&report).get("frequency:marketing_daily").copied().unwrap_or(0);
    }
    // At most one marketing message a day per person over all four campaigns: exactly one here.
    ensure!(planned == crowd.open.len() as u64, "{planned} messages planned for {} people", crowd.open.len());
    ensure!(capped == 3 * crowd.open.len() as u64, "{capped} held by the daily cap");
    // And the WeCom quota of one mass message per staff member and customer a day holds service
    // messages, which frequency caps do not count.
    let service = self::template(&engine, tenant, "service").await?;
    let id = engine.create_campaign(tenant, "service", &spec(service, segment, SendScope::Mass)).await?.id;
    engine.plan_campaign(tenant, id).await?;
    let report = engine.campaign_report(tenant, id).await?;
    ensure!(
        held(&report).get("wecom_staff_daily").copied() == Some(crowd.open.len() as u64),
        "service campaign holds {:?}",
        report.held
    );
    Ok(())
}

async fn parallel_dispatchers_deliver_each_message_once(db: Db) -> Result<()> {
    let engine = db.engine().await?;
    let (tenant, crowd) = setup(&engine, "shop", 300).await?;
    let receiver = StandInReceiver::start("k").await?;
    webhook_account(&engine, tenant, &receiver, "k").await?;
    let segment = everyone(&engine, tenant).await?;
    let id = engine
        .create_campaign(tenant, "c", &spec(template(&engine, tenant, "marketing").await?, segment, SendScope::Mass))
        .await?
        .id;
    engine.plan_campaign(tenant, id).await?;
    let other = match db.url.starts_with("postgres") {
        true => db.engine().await?,
        false => engine.clone(),
    };
    let small = DispatcherConfig { batch: 20, ..fast() };
    let a = Dispatcher::new(engine.clone(), small.clone());
    let b = Dispatcher::new(other.clone(), small);
    let (ea, eb) = (engine.clone(), other.clone());
    let ta = tokio::spawn(async move { drain(&a, tenant, &ea).await });
    let tb = tokio::spawn(async move { drain(&b, tenant, &eb).await });
    ta.await??;
    tb.await??;
    let stats = receiver.state().stats();
    ensure!(stats.attempts == crowd.open.len() as u64, "{} attempts for {} messages", stats.attempts, crowd.open.len());
    ensure!(stats.delivered == crowd.open.len() as u64 && stats.duplicates == 0);
    let report = engine.campaign_report(tenant, id).await?;
    ensure!(report.sent == crowd.open.len() as u64);
    Ok(())
}

async fn retries_back_off_and_failures_keep_the_connector_error(db: Db) -> Result<()> {
    let engine = db.engine().await?;
    let (tenant, crowd) = setup(&engine, "shop", 30).await?;
    let receiver = StandInReceiver::start("k").await?;
    webhook_account(&engine, tenant, &receiver, "k").await?;
    let segment = everyone(&engine, tenant).await?;
    let id = engine
        .create_campaign(tenant, "c", &spec(template(&engine, tenant, "marketing").await?, segment, SendScope::Mass))
        .await?
        .id;
    // The first three requests fail with 503: those messages are retried and get through.
    receiver.state().fail_next(3, None);
    let dispatcher = Dispatcher::new(engine.clone(), fast());
    drain(&dispatcher, tenant, &engine).await?;
    let report = engine.campaign_report(tenant, id).await?;
    ensure!(
        report.sent == crowd.open.len() as u64 && report.failed == 0,
        "sent {} failed {}",
        report.sent,
        report.failed
    );
    ensure!(receiver.state().stats().faulted == 3);

    // A wrong secret is refused by the receiver (401): a permanent failure with its code.
    webhook_account(&engine, tenant, &receiver, "wrong").await?;
    let segment2 = engine.create_segment(tenant, "again", "event_count >= 1").await?.id;
    let service = template(&engine, tenant, "transactional").await?;
    let id = engine.create_campaign(tenant, "c2", &spec(service, segment2, SendScope::Direct)).await?.id;
    drain(&dispatcher, tenant, &engine).await?;
    let report = engine.campaign_report(tenant, id).await?;
    ensure!(report.sent == 0 && report.failed > 0, "sent {} failed {}", report.sent, report.failed);
    ensure!(report.failures.iter().all(|(code, _)| !code.is_empty()), "failures {:?}", report.failures);
    ensure!(report.outbox.iter().all(|(s, _)| *s == OutboxState::Failed));
    Ok(())
}

async fn quiet_hours_move_marketing_to_their_end(db: Db) -> Result<()> {
    let engine = db.engine().await?;
    let (tenant, _) = setup(&engine, "shop", 20).await?;
    let receiver = StandInReceiver::start("k").await?;
    webhook_account(&engine, tenant, &receiver, "k").await?;
    // Quiet from an hour ago to an hour from now, tenant time.
    let mut settings = engine.settings(tenant)?;
    let tz: chrono_tz::Tz = settings.reach.time_zone.parse().unwrap();
    let local = chrono::Utc::now().with_timezone(&tz);
    let hm = |d: chrono::DateTime<chrono_tz::Tz>| d.format("%H:%M").to_string();
    let end = local + chrono::Duration::hours(1);
    settings.reach.quiet_hours = Some(QuietHours { start: hm(local - chrono::Duration::hours(1)), end: hm(end) });
    engine.update_settings(tenant, settings).await?;
    let segment = everyone(&engine, tenant).await?;
    let marketing = spec(template(&engine, tenant, "marketing").await?, segment, SendScope::Mass);
    let dry = engine.dry_run(tenant, &marketing).await?;
    let first = dry.first_send_at.context("someone would receive it")?;
    let wait = first.0 - Millis::now().0;
    ensure!(
        (50 * 60_000..=61 * 60_000).contains(&wait),
        "first send in {} ms, expected at the end of quiet hours",
        wait
    );
    // Planned now, nothing goes out before then.
    let id = engine.create_campaign(tenant, "c", &marketing).await?.id;
    let dispatcher = Dispatcher::new(engine.clone(), fast());
    for _ in 0..3 {
        dispatcher.tick(tenant).await?;
    }
    ensure!(receiver.state().stats().attempts == 0);
    let report = engine.campaign_report(tenant, id).await?;
    ensure!(report.outbox.iter().all(|(s, _)| *s == OutboxState::Queued) && report.planned > 0);
    // A service message is not marketing: quiet hours do not hold it.
    let service = spec(template(&engine, tenant, "service").await?, segment, SendScope::Direct);
    ensure!(engine.dry_run(tenant, &service).await?.first_send_at.is_some_and(|t| t.0 <= Millis::now().0 + 1_000));
    Ok(())
}

async fn wecom_mass_sends_are_tasks_staff_confirm_or_let_expire(db: Db) -> Result<()> {
    let engine = db.engine().await?;
    let (tenant, crowd) = setup(&engine, "shop", 40).await?;
    // Everyone with a WeCom id is a contact of both staff members. A service message is not held
    // by an unsubscribe (that is about marketing): it reaches the open and the unsubscribed.
    let everyone_wecom = crowd.open.iter().chain(&crowd.unsubscribed).chain(&crowd.revoked).chain(&crowd.suppressed);
    let contacts =
        everyone_wecom.flat_map(|c| [("zhang".to_string(), c.clone()), ("li".to_string(), c.clone())]).collect();
    let reached = (crowd.open.len() + crowd.unsubscribed.len()) as u64;
    let config = StandInConfig { contacts, ..StandInConfig::default() };
    let (base_url, stand_in) = WeComStandIn::start(config.clone()).await?;
    let mut settings = engine.settings(tenant)?;
    settings.send_accounts.insert(
        "hook".into(),
        SendAccount {
            channel: Channel::Wecom,
            connector: ConnectorKind::Wecom,
            account_type: Some("wecom_corp".into()),
            base_url: Some(base_url),
            credentials: [
                ("corp_id".to_string(), config.corp_id.clone()),
                ("corp_secret".to_string(), config.corp_secret.clone()),
            ]
            .into(),
            rate_per_second: Some(1_000),
            staff: vec![],
        },
    );
    engine.update_settings(tenant, settings).await?;
    let segment = everyone(&engine, tenant).await?;
    let service = template(&engine, tenant, "service").await?;
    let config = DispatcherConfig { task_poll: Duration::from_millis(1), ..fast() };
    let dispatcher = Dispatcher::new(engine.clone(), config);

    // Zhang's send: one task for everyone (the same text), assigned to zhang until confirmed.
    let id = engine.create_campaign(tenant, "zhang", &spec(service, segment, SendScope::Mass)).await?.id;
    for _ in 0..3 {
        dispatcher.tick(tenant).await?;
    }
    let tasks = engine.staff_tasks(tenant, Some(id)).await?;
    ensure!(tasks.len() == 1, "{tasks:?}");
    ensure!(tasks[0].state == TaskState::Assigned && tasks[0].recipients == reached, "{tasks:?}");
    ensure!(tasks[0].sender == "zhang");
    let report = engine.campaign_report(tenant, id).await?;
    ensure!(report.delivered == 0 && report.sent == reached);
    ensure!(stand_in.state.confirm(&tasks[0].task_id), "the stand-in knows the task");
    drain(&dispatcher, tenant, &engine).await?;
    let tasks = engine.staff_tasks(tenant, Some(id)).await?;
    ensure!(tasks[0].state == TaskState::Delivered && tasks[0].delivered == reached, "{tasks:?}");
    let report = engine.campaign_report(tenant, id).await?;
    ensure!(report.delivered == reached, "delivered {}", report.delivered);

    // Li never confirms: chased at the deadline, expired at the next one; the messages fail
    // with task_expired.
    let mut late = spec(service, segment, SendScope::Mass);
    late.sender = Some("li".into());
    late.confirm_hours = Some(0);
    let id = engine.create_campaign(tenant, "li", &late).await?.id;
    drain(&dispatcher, tenant, &engine).await?;
    let tasks = engine.staff_tasks(tenant, Some(id)).await?;
    ensure!(tasks.len() == 1 && tasks[0].state == TaskState::Expired && tasks[0].chased_at.is_some(), "{tasks:?}");
    let report = engine.campaign_report(tenant, id).await?;
    ensure!(report.failures == vec![("task_expired".to_string(), reached)], "failures {:?}", report.failures);
    let li_task = stand_in.state.received().templates.into_iter().find(|t| t.msgid == tasks[0].task_id).unwrap();
    ensure!(li_task.reminders == 1 && !li_task.cancelled, "chased through WeCom's reminder: {li_task:?}");

    // Zhou does not confirm either, but the account names someone to take over: at the second
    // deadline zhou's task is stopped in WeCom and its recipients go to wang, who confirms.
    for customer in crowd.open.iter().chain(&crowd.unsubscribed) {
        stand_in.state.add_contact("zhou", customer);
        stand_in.state.add_contact("wang", customer);
    }
    let mut settings = engine.settings(tenant)?;
    settings.send_accounts.get_mut("hook").unwrap().staff = vec!["zhou".into(), "wang".into()];
    engine.update_settings(tenant, settings).await?;
    let mut handed_over = spec(service, segment, SendScope::Mass);
    handed_over.sender = Some("zhou".into());
    handed_over.confirm_hours = Some(0);
    let id = engine.create_campaign(tenant, "zhou", &handed_over).await?.id;
    let mut wang = None;
    for _ in 0..200 {
        dispatcher.tick(tenant).await?;
        let tasks = engine.staff_tasks(tenant, Some(id)).await?;
        if let Some(task) = tasks.iter().find(|t| t.sender == "wang") {
            wang = Some(task.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wang = wang.context("the task was never reassigned")?;
    ensure!(wang.state == TaskState::Assigned && wang.recipients == reached, "{wang:?}");
    ensure!(stand_in.state.confirm(&wang.task_id), "wang's task is in WeCom");
    drain(&dispatcher, tenant, &engine).await?;
    let tasks = engine.staff_tasks(tenant, Some(id)).await?;
    let zhou = tasks.iter().find(|t| t.sender == "zhou").context("zhou's task")?;
    ensure!(zhou.state == TaskState::Expired && zhou.reassigned_to.as_deref() == Some("wang"), "{tasks:?}");
    let wang = tasks.iter().find(|t| t.sender == "wang").context("wang's task")?;
    ensure!(wang.state == TaskState::Delivered && wang.delivered == reached, "{tasks:?}");
    let received = stand_in.state.received();
    ensure!(received.templates.iter().any(|t| t.msgid == zhou.task_id && t.cancelled), "zhou's task was stopped");
    let report = engine.campaign_report(tenant, id).await?;
    ensure!(report.delivered == reached && report.failures.is_empty(), "{report:?}");
    for customer in crowd.open.iter().chain(&crowd.unsubscribed) {
        // Zhang's, li's (expired, not stopped) and wang's tasks; zhou's was stopped before it reached anyone.
        ensure!(received.messages_to(customer) == 3, "{customer}: {}", received.messages_to(customer));
    }
    Ok(())
}

async fn a_holdout_makes_the_lift_measurable(db: Db) -> Result<()> {
    let engine = db.engine().await?;
    let (tenant, _) = setup(&engine, "shop", 200).await?;
    let receiver = StandInReceiver::start("k").await?;
    webhook_account(&engine, tenant, &receiver, "k").await?;
    let segment = everyone(&engine, tenant).await?;
    let mut half = spec(template(&engine, tenant, "service").await?, segment, SendScope::Mass);
    half.holdout_percent = 50;
    half.attribution_days = Some(3);
    let id = engine.create_campaign(tenant, "c", &half).await?.id;
    let dispatcher = Dispatcher::new(engine.clone(), fast());
    drain(&dispatcher, tenant, &engine).await?;
    let receivers: Vec<String> = receiver
        .state()
        .deliveries()
        .iter()
        .filter_map(|d| d.payload["recipient"]["value"].as_str().map(str::to_string))
        .collect();
    let report = engine.campaign_report(tenant, id).await?;
    let holdout = report.conversions.holdout;
    ensure!((60..=140).contains(&holdout), "holdout {holdout} of ~{}", 220 / 2);
    ensure!(report.conversions.receivers == receivers.len() as u64);
    // Every receiver with an even number buys within the window; no holdout member does, and
    // an order after the window does not count.
    let now = Millis::now();
    let mut orders = Vec::new();
    for (i, r) in receivers.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let mut e = event(&format!("order-{i}"), "order_paid", &[("wecom_external_userid", r)], Millis(now.0 + 1_000));
        e.amount = Some(siyu_model::Fen(9_900));
        orders.push(e);
    }
    let late = Millis(now.0 + 3 * siyu_model::time::DAY + 60_000);
    orders.push(event("late", "order_paid", &[("wecom_external_userid", &receivers[1])], late));
    engine.ingest(tenant, "test", orders).await?;
    let c = engine.campaign_report(tenant, id).await?.conversions;
    let converted = receivers.len().div_ceil(2) as u64;
    ensure!(c.receivers_converted == converted && c.holdout_converted == 0, "{c:?}");
    ensure!((c.receivers_revenue - converted as f64 * 99.0).abs() < 1e-6, "{c:?}");
    let rate = converted as f64 * 100.0 / receivers.len() as f64;
    ensure!(c.lift_points.is_some_and(|l| (l - rate).abs() < 0.01), "{c:?}");
    ensure!(c.attribution_days == 3);
    Ok(())
}
