//! The shared score fixtures (../shared/fixtures/scores): every expected value, incrementally, after
//! a replay of the log, and in a different arrival order.

use std::path::PathBuf;
use std::sync::Arc;

use siyu_engine::query::{ProfileRef, ProfileView};
use siyu_engine::{Engine, EngineConfig};
use siyu_model::event::{NativeEvent, TimeLimits};
use siyu_model::{Event, Identity, Industry, Millis, TenantId};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/scores")
}

fn load_events(received_at: Millis) -> Vec<Event> {
    let text = std::fs::read_to_string(fixture_dir().join("events.ndjson")).expect("fixture events");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let native: NativeEvent = serde_json::from_str(line).expect("fixture line parses");
            // The fixture's evaluation time is in the past; accept its events as if received then.
            native.into_event(received_at, TimeLimits::default(), line.as_bytes()).expect("fixture event is valid")
        })
        .collect()
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap()).unwrap()
}

async fn engine(url: &str) -> (Arc<Engine>, TenantId) {
    let store = siyu_store::open(url).await.unwrap();
    let engine = Engine::start(store, EngineConfig::default()).await.unwrap();
    let tenant = engine.create_tenant("fixture", Industry::ConsumerGoods).await.unwrap().record.id;
    (engine, tenant)
}

fn check_all(engine: &Engine, tenant: TenantId, stage: &str) {
    let expected = expected();
    let as_of = Millis::parse_rfc3339(expected["as_of"].as_str().unwrap()).unwrap();
    let profiles = expected["profiles"].as_object().unwrap();
    assert_eq!(profiles.len(), 60);
    let mut mismatches = Vec::new();
    for (user_id, want) in profiles {
        let reference = ProfileRef::Identity(Identity::parse("user_id", user_id).unwrap());
        let view: ProfileView = engine
            .profile_view(tenant, &reference, Some(as_of))
            .unwrap()
            .unwrap_or_else(|| panic!("{stage}: no profile for {user_id}"));
        let s = &view.scores;
        let got = serde_json::json!({
            "affinity": s.affinity,
            "net_paid_orders": s.net_paid_orders,
            "net_revenue": s.net_revenue,
            "orders_365d": s.orders_365d,
            "ownership": s.ownership,
            "pool_stage": s.pool_stage,
            "reachable": s.reachable,
            "rfm": s.rfm,
            "tier": s.tier,
        });
        for (field, value) in want.as_object().unwrap() {
            let matches = match (value.as_f64(), got[field].as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                _ => value == &got[field],
            };
            if !matches {
                mismatches.push(format!("{user_id}.{field}: expected {value}, got {}", got[field]));
            }
        }
    }
    assert!(mismatches.is_empty(), "{stage}: {} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_scores_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    fixture_scores(dir.path().join("siyu.db").to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_scores_on_postgres() {
    let Some(db) = siyu_store::scratch::ScratchDatabase::from_test_env().await else {
        println!("note: SIYU_TEST_DATABASE_URL is not set; skipping the PostgreSQL run");
        return;
    };
    fixture_scores(&db.url).await;
    db.drop_database().await;
}

async fn fixture_scores(url: &str) {
    let as_of = Millis::parse_rfc3339(expected()["as_of"].as_str().unwrap()).unwrap();
    let events = load_events(Millis::now());

    // Arrival order of the file, in small batches as an API client would send them.
    let (engine, tenant) = engine(url).await;
    for chunk in events.chunks(7) {
        engine.ingest(tenant, "test", chunk.to_vec()).await.unwrap();
    }
    check_all(&engine, tenant, "incremental");

    // The phone-only records merged into the user_id records.
    let summary = engine.summary(tenant, Some(as_of)).unwrap();
    assert_eq!(summary.profiles, 60, "one profile per person after merges");
    assert!(summary.merges > 0);

    // The matrix accounts: each named by the events, all events accounted for.
    let accounts = engine.accounts(tenant, None).unwrap();
    let names: Vec<(String, String)> = accounts.iter().map(|a| (a.channel.clone(), a.account.clone())).collect();
    assert!(
        names.contains(&("douyin".into(), "brand-main".into()))
            && names.contains(&("douyin".into(), "brand-outlet".into()))
    );
    assert_eq!(accounts.iter().map(|a| a.events).sum::<u64>(), events.len() as u64);
    assert!(accounts.iter().all(|a| a.followers <= a.people && a.people <= 60));
    assert!(accounts.iter().any(|a| a.followers > 0));

    // A retry of everything changes nothing.
    let outcomes = engine.ingest(tenant, "test", events.clone()).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == siyu_engine::Ingested::Duplicate));
    check_all(&engine, tenant, "after retry");

    // Replay the log into fresh state.
    engine.rebuild(tenant).await.unwrap();
    check_all(&engine, tenant, "rebuilt");

    // Reverse arrival order, one big batch, on a second tenant of the same store.
    let other = engine.create_tenant("fixture-reversed", Industry::ConsumerGoods).await.unwrap().record.id;
    let mut reversed = events.clone();
    reversed.reverse();
    engine.ingest(other, "test", reversed).await.unwrap();
    check_all(&engine, other, "reversed");
    engine.shutdown();

    // A restart replays the log: the same values again.
    drop(engine);
    let restarted = Engine::start(siyu_store::open(url).await.unwrap(), EngineConfig::default()).await.unwrap();
    check_all(&restarted, tenant, "restarted");
    check_all(&restarted, other, "restarted, reversed");
    restarted.shutdown();
}
