//! A `kill -9` of `siyu serve` in the middle of a campaign, three times over, then a clean run:
//! every customer receives the message exactly once, against the local stand-in of WeCom's API.
//! WeCom's `add_msg_template` takes no idempotency key, so the messages a killed process had sent
//! but not yet recorded are found again through `get_groupmsg_list_v2` instead of being resent.
//! SQLite always; PostgreSQL when `SIYU_TEST_DATABASE_URL` is set.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use siyu_connect::wecom::stand_in::{StandInConfig, StandInState, WeComStandIn};
use siyu_engine::{Engine, EngineConfig, KeyRole};
use siyu_model::event::EventKind;
use siyu_model::reach::template::TemplateDef;
use siyu_model::reach::{Audience, CampaignSpec, ConnectorKind, SendAccount, SendScope};
use siyu_model::{Channel, Event, Identity, Industry, Millis};
use siyu_store::scratch::ScratchDatabase;

const BIN: &str = env!("CARGO_BIN_EXE_siyu");
const PEOPLE: usize = 240;

fn wecom_add(i: usize, at: Millis) -> Event {
    Event {
        message_id: format!("add-{i}"),
        kind: EventKind::parse("wecom_add").unwrap(),
        channel: Channel::Wecom,
        account: "corp".into(),
        identities: vec![Identity::parse("wecom_external_userid", &customer(i)).unwrap()],
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

fn customer(i: usize) -> String {
    format!("wm-{i:04}")
}

/// A tenant with `PEOPLE` WeCom customers of staff member `zhang` and a campaign to all of them,
/// through the stand-in. Returns the campaign id and a secret key.
async fn prepare(url: &str, stand_in: &str, config: &StandInConfig) -> (i64, String) {
    let store = siyu_store::open(url).await.unwrap();
    let engine = Engine::start(store, EngineConfig::default()).await.unwrap();
    let tenant = engine.create_tenant("shop", Industry::ConsumerGoods).await.unwrap().record.id;
    let mut settings = engine.settings(tenant).unwrap();
    settings.reach.quiet_hours = None;
    settings.send_accounts.insert(
        "corp".into(),
        SendAccount {
            channel: Channel::Wecom,
            connector: ConnectorKind::Wecom,
            account_type: Some("wecom_corp".into()),
            base_url: Some(stand_in.to_string()),
            credentials: [
                ("corp_id".to_string(), config.corp_id.clone()),
                ("corp_secret".to_string(), config.corp_secret.clone()),
            ]
            .into(),
            rate_per_second: Some(2_000),
            staff: vec![],
        },
    );
    engine.update_settings(tenant, settings).await.unwrap();
    let at = Millis(Millis::now().0 - 60_000);
    engine.ingest(tenant, "test", (0..PEOPLE).map(|i| wecom_add(i, at)).collect()).await.unwrap();
    // A personal text: every customer's message is its own WeCom task, so a kill lands between
    // tasks of one batch and leaves some sent but unrecorded.
    let def: TemplateDef = serde_json::from_value(serde_json::json!({
        "purpose": "service",
        "variants": {"wecom": {"text": "第 {{ profile_id }} 位会员，您好：本周会员日福利已到账"}}
    }))
    .unwrap();
    let template = engine.create_template(tenant, "会员日", &def).await.unwrap().id;
    let segment = engine.create_segment(tenant, "everyone", "event_count >= 1").await.unwrap().id;
    let spec = CampaignSpec {
        template_id: template,
        audience: Audience::SegmentId(segment),
        channel: Channel::Wecom,
        account: "corp".into(),
        sender: Some("zhang".into()),
        scope: SendScope::Mass,
        vars: Default::default(),
        send_at: None,
        holdout_percent: 0,
        attribution_days: None,
        confirm_hours: None,
    };
    let campaign = engine.create_campaign(tenant, "会员日群发", &spec).await.unwrap().id;
    let key = engine.issue_key(tenant, KeyRole::Secret).await.unwrap();
    engine.shutdown();
    (campaign, key)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(url: &str) -> (Server, String) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["--database", url, "serve", "--bind", &bind])
        .env("RUST_LOG", "warn")
        // Short leases, so a killed process's claims are taken over quickly; small batches, so a
        // kill lands in the middle of the campaign.
        .env("SIYU__OUTBOX__LEASE_SECS", "1")
        .env("SIYU__OUTBOX__BATCH", "20")
        .env("SIYU__OUTBOX__IDLE_MS", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Server(child), format!("http://{bind}"))
}

fn sent(state: &StandInState) -> usize {
    state.received().templates.iter().map(|t| t.external_userids.len()).sum()
}

async fn wait_for(state: &StandInState, at_least: usize) {
    for _ in 0..6_000 {
        if sent(state) >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the campaign did not progress past {} of {at_least} messages", sent(state));
}

async fn campaign_state(base: &str, key: &str, id: i64) -> Option<serde_json::Value> {
    let response =
        reqwest::Client::new().get(format!("{base}/api/v1/campaigns/{id}")).bearer_auth(key).send().await.ok()?;
    response.json().await.ok()
}

async fn killed_mid_campaign_sends_each_message_once(url: &str) {
    let contacts = (0..PEOPLE).map(|i| ("zhang".to_string(), customer(i))).collect();
    let config = StandInConfig { contacts, ..StandInConfig::default() };
    let (stand_in, handle) = WeComStandIn::start(config.clone()).await.unwrap();
    let (campaign, key) = prepare(url, &stand_in, &config).await;

    // Three kill -9s at growing progress, each after some messages went out.
    for progress in [PEOPLE / 8, PEOPLE / 3, PEOPLE * 2 / 3] {
        let (mut server, _) = serve(url);
        wait_for(&handle.state, progress).await;
        server.0.kill().unwrap(); // SIGKILL: no shutdown, no flush
        server.0.wait().unwrap();
    }
    let (_server, base) = serve(url);
    let mut report = None;
    for _ in 0..3_000 {
        if let Some(r) = campaign_state(&base, &key, campaign).await {
            // Every message has its outcome: a WeCom task each (they wait for the staff member's
            // confirmation, so the campaign itself stays `sending`), none queued or in flight.
            let unfinished = r["outbox"].as_array().is_some_and(|states| {
                states.iter().any(|s| matches!(s["rule"].as_str(), Some("queued" | "attempting")))
            });
            if r["sent"] == PEOPLE as u64 && !unfinished {
                report = Some(r);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = report.expect("every message had its outcome after the restarts");
    let received = handle.state.received();
    let twice: Vec<String> = (0..PEOPLE).map(customer).filter(|c| received.messages_to(c) > 1).collect();
    let never: Vec<String> = (0..PEOPLE).map(customer).filter(|c| received.messages_to(c) == 0).collect();
    assert!(twice.is_empty(), "received twice: {twice:?}");
    assert!(never.is_empty(), "never received: {never:?}");
    assert_eq!(sent(&handle.state), PEOPLE);
    assert_eq!(report["sent"], PEOPLE as u64, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    // The kills left messages in doubt, and they were looked up rather than resent.
    assert!(
        received.calls_to("/cgi-bin/externalcontact/groupmsg/get_groupmsg_list_v2")
            + received.calls_to("/cgi-bin/externalcontact/get_groupmsg_list_v2")
            > 0,
        "{:?}",
        received.calls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kill_9_mid_campaign_sends_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("siyu.db").display().to_string();
    killed_mid_campaign_sends_each_message_once(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_mid_campaign_sends_each_message_once() {
    let Some(db) = ScratchDatabase::from_test_env().await else { return };
    killed_mid_campaign_sends_each_message_once(&db.url).await;
    db.drop_database().await;
}
