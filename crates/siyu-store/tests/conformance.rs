//! The Store conformance suite: one set of tests, run against every back-end, so SQLite and
//! PostgreSQL stay equals. SQLite runs always, each test in a fresh temporary directory.
//! PostgreSQL runs when `SIYU_TEST_DATABASE_URL` names a server
//! (e.g. `postgres://postgres@127.0.0.1:5432/test`): each test creates its own database there
//! and drops it afterwards, so tests run in parallel and runs stay independent.

use std::future::Future;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use serde_json::value::RawValue;
use siyu_model::event::EventKind;
use siyu_model::{
    CannotLink, Channel, Event, EventType, Fen, Identity, IdentityKind, Industry, Millis, Seq, Source, TenantId,
    TenantSettings,
};
use siyu_store::scratch::ScratchDatabase;
use siyu_store::{
    AppendOutcome, AudienceKind, Backend, KeyKind, MembershipChange, ScanDetail, Store, StoreError, StoredEvent, TagOp,
    TagRecord,
};
use sqlx::Connection;

const PG_URL_VAR: &str = "SIYU_TEST_DATABASE_URL";

macro_rules! conformance {
    (store: [$($store_test:ident),* $(,)?], db: [$($db_test:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $store_test() {
                    super::on_sqlite(|db: super::Db| async move { super::$store_test(db.open().await?).await }).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $db_test() {
                    super::on_sqlite(super::$db_test).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $store_test() {
                    super::on_postgres(|db: super::Db| async move { super::$store_test(db.open().await?).await }).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $db_test() {
                    super::on_postgres(super::$db_test).await
                }
            )*
        }
    };
}

conformance! {
    store: [
        tenants_are_found_by_name_id_and_key,
        a_duplicate_tenant_name_is_refused,
        added_keys_find_their_tenant,
        settings_round_trip,
        saving_settings_of_a_missing_tenant_fails,
        append_assigns_dense_increasing_seqs,
        an_empty_batch_appends_nothing,
        a_retried_event_is_a_duplicate_and_stored_once,
        repeats_within_a_batch_keep_the_first,
        a_batch_may_span_tenants,
        scan_pages_in_seq_order,
        replay_visits_the_envelope_in_seq_order,
        envelope_scans_skip_properties_and_context,
        events_by_seq_returns_what_exists_in_seq_order,
        tenants_are_isolated,
        money_and_identities_round_trip_exactly,
        concurrent_appends_stay_dense_and_idempotent,
        audience_records_round_trip_per_tenant,
        tag_ops_and_membership_changes_append_in_order,
    ],
    db: [
        a_reopened_store_keeps_everything_and_continues_seqs,
        migrations_are_idempotent,
        concurrent_first_opens_migrate_once,
    ],
}

// ---------------------------------------------------------------------------------------------
// Tenants, keys, settings

async fn tenants_are_found_by_name_id_and_key(store: Arc<dyn Store>) -> Result<()> {
    let keys = [(KeyKind::Write, "hash-w".to_string()), (KeyKind::Secret, "hash-s".to_string())];
    let a = store.create_tenant("旗舰店", Industry::ConsumerGoods, &keys).await?;
    let b = store.create_tenant("b", Industry::LocalLife, &[]).await?;
    assert_eq!(a.name, "旗舰店");
    assert_eq!(a.industry, Industry::ConsumerGoods);
    assert_eq!(a.settings, TenantSettings::default());
    assert_ne!(a.id, b.id);

    assert_eq!(store.tenant(a.id).await?.as_ref(), Some(&a));
    assert_eq!(store.tenant_by_name("旗舰店").await?.as_ref(), Some(&a));
    assert_eq!(store.tenant_by_name("b").await?.as_ref(), Some(&b));
    assert_eq!(store.tenants().await?, vec![a.clone(), b.clone()]);
    assert_eq!(store.tenant_by_key_hash("hash-w").await?, Some((a.id, KeyKind::Write)));
    assert_eq!(store.tenant_by_key_hash("hash-s").await?, Some((a.id, KeyKind::Secret)));

    assert_eq!(store.tenant(TenantId(a.id.0 + b.id.0 + 1000)).await?, None);
    assert_eq!(store.tenant_by_name("nobody").await?, None);
    assert_eq!(store.tenant_by_key_hash("hash-unknown").await?, None);
    Ok(())
}

async fn a_duplicate_tenant_name_is_refused(store: Arc<dyn Store>) -> Result<()> {
    let first = store.create_tenant("acme", Industry::HeavyDecision, &[(KeyKind::Write, "k1".into())]).await?;
    let err = store
        .create_tenant("acme", Industry::LocalLife, &[(KeyKind::Write, "k2".into())])
        .await
        .expect_err("a second tenant named acme must be refused");
    assert!(matches!(&err, StoreError::TenantExists(name) if name == "acme"), "got {err:?}");
    // The refused tenant left nothing behind, its key included.
    assert_eq!(store.tenants().await?, vec![first.clone()]);
    assert_eq!(store.tenant_by_key_hash("k2").await?, None);
    assert_eq!(store.tenant_by_name("acme").await?.map(|t| t.industry), Some(Industry::HeavyDecision));
    // The store still works after the refusal.
    let other = store.create_tenant("acme-2", Industry::LocalLife, &[(KeyKind::Write, "k2".into())]).await?;
    assert_eq!(store.tenant_by_key_hash("k2").await?, Some((other.id, KeyKind::Write)));
    Ok(())
}

async fn added_keys_find_their_tenant(store: Arc<dyn Store>) -> Result<()> {
    let a = store.create_tenant("a", Industry::ConsumerGoods, &[]).await?;
    let b = store.create_tenant("b", Industry::ConsumerGoods, &[]).await?;
    store.add_key(a.id, KeyKind::Secret, "sa").await?;
    store.add_key(b.id, KeyKind::Write, "wb").await?;
    store.add_key(a.id, KeyKind::Write, "wa").await?;
    assert_eq!(store.tenant_by_key_hash("sa").await?, Some((a.id, KeyKind::Secret)));
    assert_eq!(store.tenant_by_key_hash("wa").await?, Some((a.id, KeyKind::Write)));
    assert_eq!(store.tenant_by_key_hash("wb").await?, Some((b.id, KeyKind::Write)));
    // A key hash belongs to one tenant only.
    assert!(store.add_key(b.id, KeyKind::Write, "sa").await.is_err());
    assert_eq!(store.tenant_by_key_hash("sa").await?, Some((a.id, KeyKind::Secret)));
    Ok(())
}

async fn settings_round_trip(store: Arc<dyn Store>) -> Result<()> {
    let a = store.create_tenant("a", Industry::ConsumerGoods, &[]).await?;
    let b = store.create_tenant("b", Industry::ConsumerGoods, &[]).await?;
    let mut settings = TenantSettings::default();
    settings.event_mapping.insert("Order Completed".into(), "order_paid".into());
    settings.event_mapping.insert("加购".into(), "add_to_cart".into());
    settings.identity_limits.insert("phone".into(), 3);
    settings.cannot_link.push(CannotLink {
        a: Identity::parse("phone", "138-0013-8000")?,
        b: Identity::parse("member_no", "M-42")?,
        reason: "运营确认：两个人".into(),
    });
    store.save_settings(a.id, &settings).await?;
    assert_eq!(store.tenant(a.id).await?.context("tenant a")?.settings, settings);
    assert_eq!(store.tenant_by_name("a").await?.context("tenant a")?.settings, settings);
    // Only a's settings changed.
    assert_eq!(store.tenant(b.id).await?.context("tenant b")?.settings, TenantSettings::default());

    // Saving again replaces, not merges.
    store.save_settings(a.id, &TenantSettings::default()).await?;
    assert_eq!(store.tenant(a.id).await?.context("tenant a")?.settings, TenantSettings::default());
    Ok(())
}

async fn saving_settings_of_a_missing_tenant_fails(store: Arc<dyn Store>) -> Result<()> {
    let a = store.create_tenant("a", Industry::ConsumerGoods, &[]).await?;
    let missing = TenantId(a.id.0 + 1000);
    let err = store.save_settings(missing, &TenantSettings::default()).await.expect_err("no such tenant");
    assert!(matches!(err, StoreError::NoSuchTenant(t) if t == missing), "got {err:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Appending

async fn append_assigns_dense_increasing_seqs(store: Arc<dyn Store>) -> Result<()> {
    let t = store.create_tenant("t", Industry::ConsumerGoods, &[]).await?.id;
    let first = store.append(&batch(t, ["m1", "m2", "m3"])).await?;
    assert_eq!(first, appended([1, 2, 3]));
    let second = store.append(&batch(t, ["m4", "m5"])).await?;
    assert_eq!(second, appended([4, 5]));
    assert_eq!(store.event_count(t).await?, 5);
    let ids: Vec<_> = scan_all(&store, t).await?.into_iter().map(|e| (e.seq, e.event.message_id)).collect();
    assert_eq!(ids, (1..=5).map(|i| (i, format!("m{i}"))).collect::<Vec<_>>());
    Ok(())
}

async fn an_empty_batch_appends_nothing(store: Arc<dyn Store>) -> Result<()> {
    let t = store.create_tenant("t", Industry::ConsumerGoods, &[]).await?.id;
    assert_eq!(store.append(&[]).await?, vec![]);
    assert_eq!(store.event_count(t).await?, 0);
    assert_eq!(store.append(&batch(t, ["m1"])).await?, appended([1]));
    Ok(())
}

async fn a_retried_event_is_a_duplicate_and_stored_once(store: Arc<dyn Store>) -> Result<()> {
    let t = store.create_tenant("t", Industry::ConsumerGoods, &[]).await?.id;
    assert_eq!(store.append(&batch(t, ["m1", "m2"])).await?, appended([1, 2]));

    // A retry whose content differs still counts as the same event: the first version stays.
    let mut retry = event("m2");
    retry.account = "changed".into();
    let outcomes = store.append(&[(t, event("m1")), (t, event("m3")), (t, retry)]).await?;
    assert_eq!(outcomes, vec![AppendOutcome::Duplicate, AppendOutcome::Appended(3), AppendOutcome::Duplicate]);
    // A batch of nothing but duplicates writes nothing and does not advance the seqs.
    assert_eq!(store.append(&batch(t, ["m3", "m1"])).await?, vec![AppendOutcome::Duplicate; 2]);
    assert_eq!(store.append(&batch(t, ["m4"])).await?, appended([4]));

    assert_eq!(store.event_count(t).await?, 4);
    let events = scan_all(&store, t).await?;
    assert_eq!(message_ids(&events), ["m1", "m2", "m3", "m4"]);
    assert_eq!(events[1].event.account, "brand-main");
    Ok(())
}

async fn repeats_within_a_batch_keep_the_first(store: Arc<dyn Store>) -> Result<()> {
    let t = store.create_tenant("t", Industry::ConsumerGoods, &[]).await?.id;
    let mut later = event("a");
    later.account = "later".into();
    let outcomes =
        store.append(&[(t, event("a")), (t, event("b")), (t, later), (t, event("c")), (t, event("b"))]).await?;
    assert_eq!(
        outcomes,
        vec![
            AppendOutcome::Appended(1),
            AppendOutcome::Appended(2),
            AppendOutcome::Duplicate,
            AppendOutcome::Appended(3),
            AppendOutcome::Duplicate,
        ]
    );
    let events = scan_all(&store, t).await?;
    assert_eq!(message_ids(&events), ["a", "b", "c"]);
    assert_eq!(events[0].event.account, "brand-main");
    assert_eq!(store.event_count(t).await?, 3);
    Ok(())
}

async fn a_batch_may_span_tenants(store: Arc<dyn Store>) -> Result<()> {
    let a = store.create_tenant("a", Industry::ConsumerGoods, &[]).await?.id;
    let b = store.create_tenant("b", Industry::ConsumerGoods, &[]).await?.id;
    assert_eq!(store.append(&batch(b, ["b0"])).await?, appended([1]));
    // Interleaved, with b listed first and a duplicate of each tenant: outcomes follow input order.
    let outcomes = store
        .append(&[
            (b, event("b1")),
            (a, event("a1")),
            (a, event("a2")),
            (b, event("b0")),
            (b, event("b2")),
            (a, event("a1")),
            (a, event("a3")),
        ])
        .await?;
    assert_eq!(
        outcomes,
        vec![
            AppendOutcome::Appended(2),
            AppendOutcome::Appended(1),
            AppendOutcome::Appended(2),
            AppendOutcome::Duplicate,
            AppendOutcome::Appended(3),
            AppendOutcome::Duplicate,
            AppendOutcome::Appended(3),
        ]
    );
    assert_eq!(message_ids(&scan_all(&store, a).await?), ["a1", "a2", "a3"]);
    assert_eq!(message_ids(&scan_all(&store, b).await?), ["b0", "b1", "b2"]);
    Ok(())
}

async fn concurrent_appends_stay_dense_and_idempotent(store: Arc<dyn Store>) -> Result<()> {
    let a = store.create_tenant("a", Industry::ConsumerGoods, &[]).await?.id;
    let b = store.create_tenant("b", Industry::ConsumerGoods, &[]).await?.id;
    // Eight writers, overlapping message ids, each batch spanning both tenants in a different
    // order: no deadlock, no event twice, no gap.
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for round in 0..5u32 {
                let (first, second) = if w % 2 == 0 { (a, b) } else { (b, a) };
                let ids = [format!("m{}", (w + round) % 12), format!("m{}", (w * 3 + round) % 12)];
                let batch: Vec<_> = ids.iter().flat_map(|id| [(first, event(id)), (second, event(id))]).collect();
                outcomes.extend(store.append(&batch).await?);
            }
            anyhow::Ok(outcomes)
        }));
    }
    let mut appended_count = 0;
    for task in tasks {
        appended_count += task.await??.iter().filter(|o| matches!(o, AppendOutcome::Appended(_))).count();
    }
    let mut total = 0;
    for tenant in [a, b] {
        let events = scan_all(&store, tenant).await?;
        let seqs: Vec<Seq> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=events.len() as Seq).collect::<Vec<_>>(), "seqs of {tenant} are dense");
        let mut ids = message_ids(&events);
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before, "no message id of {tenant} stored twice");
        assert_eq!(store.event_count(tenant).await?, events.len() as u64);
        total += events.len();
    }
    assert_eq!(appended_count, total, "every Appended outcome is one stored event");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading

async fn scan_pages_in_seq_order(store: Arc<dyn Store>) -> Result<()> {
    let t = store.create_tenant("t", Industry::ConsumerGoods, &[]).await?.id;
    let ids: Vec<String> = (1..=25).map(|i| format!("m{i:02}")).collect();
    store.append(&batch(t, ids.iter().map(String::as_str))).await?;

    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let page = store.scan(t, after, 10, ScanDetail::Full).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let seen: Vec<String> = pages.iter().flatten().map(|e| e.event.message_id.clone()).collect();
    assert_eq!(seen, ids);
    let seqs: Vec<Seq> = pages.iter().flatten().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());

    assert_eq!(message_ids(&store.scan(t, 20, 3, ScanDetail::Envelope).await?), ["m21", "m22", "m23"]);
    assert!(store.scan(t, 5, 0, ScanDetail::Full).await?.is_empty());
    assert!(store.scan(t, 25, 10, ScanDetail::Full).await?.is_empty());
    // "No limit" is usize::MAX, which neither back-end may misread as a negative SQL LIMIT.
    assert_eq!(store.scan(t, 0, usize::MAX, ScanDetail::Envelope).await?.len(), 25);
    Ok(())
}

/// The replay hot path sees exactly what an envelope scan sees, in seq order, for one tenant only.
async fn replay_visits_the_envelope_in_seq_order(store: Arc<dyn Store>) -> Result<()> {
    let t = store.create_tenant("t", Industry::ConsumerGoods, &[]).await?.id;
    let other = store.create_tenant("other", Industry::ConsumerGoods, &[]).await?.id;
    store.append(&[(t, rich_event("r1")), (other, rich_event("x1")), (t, event("r2")), (t, event("r3"))]).await?;
    let expected = store.scan(t, 0, usize::MAX, ScanDetail::Envelope).await?;
    let mut seen = Vec::new();
    let visited = store
        .replay(t, 0, &mut |row| {
            seen.push((
                row.seq,
                row.event_type.to_string(),
                row.channel.to_string(),
                row.account.to_string(),
                row.ts,
                row.amount_fen,
                siyu_store::decode_identities(row.identities).expect("identities decode"),
                row.source_kind.map(str::to_string),
                row.group_id.map(str::to_string),
                row.traits.map(|t| serde_json::from_str::<serde_json::Value>(t).expect("traits are json")),
            ));
            Ok(())
        })
        .await?;
    assert_eq!(visited, 3);
    let want: Vec<_> = expected
        .iter()
        .map(|s| {
            let e = &s.event;
            (
                s.seq,
                e.kind.as_str().to_string(),
                e.channel.to_string(),
                e.account.clone(),
                e.timestamp.0,
                e.amount.map(|a| a.0),
                e.identities.clone(),
                e.source.as_ref().map(|s| s.kind.clone()),
                e.group_id.clone(),
                e.traits.as_ref().map(|t| serde_json::from_str::<serde_json::Value>(t.get()).unwrap()),
            )
        })
        .collect();
    assert_eq!(seen, want);
    // `after` skips, and a visitor's error stops the replay.
    let mut after_first = Vec::new();
    store
        .replay(t, 1, &mut |row| {
            after_first.push(row.seq);
            Ok(())
        })
        .await?;
    assert_eq!(after_first, [2, 3]);
    let stopped = store.replay(t, 0, &mut |_| Err(siyu_store::StoreError::Corrupt("stop".into()))).await;
    assert!(stopped.is_err());
    Ok(())
}

async fn envelope_scans_skip_properties_and_context(store: Arc<dyn Store>) -> Result<()> {
    let t = store.create_tenant("t", Industry::ConsumerGoods, &[]).await?.id;
    let sent = rich_event("order-1");
    store.append(&[(t, sent.clone())]).await?;

    let full = store.scan(t, 0, 10, ScanDetail::Full).await?;
    assert_eq!(full.len(), 1);
    assert_same_event(&full[0].event, &sent, ScanDetail::Full);
    assert!(full[0].event.properties.is_some() && full[0].event.traits.is_some() && full[0].event.context.is_some());

    let envelope = store.scan(t, 0, 10, ScanDetail::Envelope).await?;
    assert_eq!(envelope.len(), 1);
    assert_eq!(envelope[0].seq, 1);
    assert_same_event(&envelope[0].event, &sent, ScanDetail::Envelope);
    assert!(envelope[0].event.properties.is_none());
    assert!(envelope[0].event.context.is_none());
    assert_eq!(json(&envelope[0].event.traits), Some(serde_json::json!({"name": "张三", "vip": true})));
    Ok(())
}

async fn events_by_seq_returns_what_exists_in_seq_order(store: Arc<dyn Store>) -> Result<()> {
    let t = store.create_tenant("t", Industry::ConsumerGoods, &[]).await?.id;
    store.append(&batch(t, ["m1", "m2", "m3", "m4", "m5"])).await?;
    let events = store.events_by_seq(t, &[4, 99, 2, 4, 0, -1, 5]).await?;
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 4, 5]);
    assert_eq!(message_ids(&events), ["m2", "m4", "m5"]);
    // events_by_seq reads everything, the JSON included.
    assert!(events.iter().all(|e| e.event.properties.is_some()));
    assert!(store.events_by_seq(t, &[]).await?.is_empty());
    assert!(store.events_by_seq(t, &[6, 7]).await?.is_empty());
    Ok(())
}

async fn tenants_are_isolated(store: Arc<dyn Store>) -> Result<()> {
    let a = store.create_tenant("a", Industry::ConsumerGoods, &[]).await?.id;
    let b = store.create_tenant("b", Industry::ConsumerGoods, &[]).await?.id;
    let c = store.create_tenant("c", Industry::ConsumerGoods, &[]).await?.id;
    store.append(&batch(a, ["shared", "a2", "a3", "a4"])).await?;
    // The same message id in another tenant is another event, not a duplicate.
    let mut theirs = event("shared");
    theirs.account = "b-account".into();
    assert_eq!(store.append(&[(b, theirs), (b, event("b2"))]).await?, appended([1, 2]));

    assert_eq!(store.event_count(a).await?, 4);
    assert_eq!(store.event_count(b).await?, 2);
    assert_eq!(store.event_count(c).await?, 0);

    let b_events = scan_all(&store, b).await?;
    assert_eq!(message_ids(&b_events), ["shared", "b2"]);
    assert_eq!(b_events[0].event.account, "b-account");
    let a_events = scan_all(&store, a).await?;
    assert_eq!(message_ids(&a_events), ["shared", "a2", "a3", "a4"]);
    assert_eq!(a_events[0].event.account, "brand-main");

    // Seqs 3 and 4 exist in a only.
    let by_seq = store.events_by_seq(b, &[1, 2, 3, 4]).await?;
    assert_eq!(message_ids(&by_seq), ["shared", "b2"]);
    assert_eq!(by_seq[0].event.account, "b-account");
    assert!(store.scan(c, 0, 100, ScanDetail::Full).await?.is_empty());
    assert!(store.events_by_seq(c, &[1, 2, 3, 4]).await?.is_empty());
    assert!(store.scan(b, 2, 100, ScanDetail::Envelope).await?.is_empty());
    Ok(())
}

async fn money_and_identities_round_trip_exactly(store: Arc<dyn Store>) -> Result<()> {
    let t = store.create_tenant("旗舰店", Industry::ConsumerGoods, &[]).await?.id;
    let paid = rich_event("order-1");
    let mut cents = rich_event("order-2");
    cents.amount = Some(Fen(1));
    cents.identities = vec![Identity::parse("phone", "+1 415 555 0100")?];
    let mut huge = rich_event("order-3");
    huge.amount = Some(Fen(900_719_925_474_099_301)); // beyond f64's exact integers
    huge.currency = None;
    let mut bare = event("view-1");
    bare.kind = EventKind::Custom("try_on_lipstick".into());
    bare.channel = Channel::Other;
    bare.account = String::new();
    bare.properties = None;
    bare.context = None;
    bare.identities = vec![Identity::parse("anonymous_id", "匿名-🙂")?];
    let mut group = event("group-1");
    group.kind = EventKind::Known(EventType::GroupJoin);
    group.channel = Channel::Wecom;
    group.group_id = Some("群-001".into());
    group.properties = Some(raw(r#"{"group_id":"群-001"}"#));
    let sent = [paid, cents, huge, bare, group];
    store.append(&sent.iter().map(|e| (t, e.clone())).collect::<Vec<_>>()).await?;

    let stored = scan_all(&store, t).await?;
    assert_eq!(stored.len(), sent.len());
    for (stored, sent) in stored.iter().zip(&sent) {
        assert_same_event(&stored.event, sent, ScanDetail::Full);
    }
    let by_seq = store.events_by_seq(t, &[1, 2, 3, 4, 5]).await?;
    for (stored, sent) in by_seq.iter().zip(&sent) {
        assert_same_event(&stored.event, sent, ScanDetail::Full);
    }
    // Spelled out, so a codec that is wrong both ways cannot pass.
    let first = &stored[0].event;
    assert_eq!(first.amount, Some(Fen(19_990)));
    assert_eq!(first.account, "旗舰店");
    assert!(first.identities.contains(&Identity { kind: IdentityKind::Phone, value: "+8613800138000".into() }));
    assert!(first
        .identities
        .contains(&Identity { kind: IdentityKind::Custom("member_no".into()), value: "M-0042".into() }));
    let props = json(&first.properties).context("properties")?;
    assert_eq!(props["title"], "限量礼盒 🎁");
    assert_eq!(props["price"], serde_json::json!(199.9));
    assert_eq!(stored[1].event.identities[0].value, "+14155550100");
    assert_eq!(stored[2].event.amount, Some(Fen(900_719_925_474_099_301)));
    assert_eq!(stored[3].event.kind.as_str(), "try_on_lipstick");
    assert_eq!(stored[3].event.identities[0].value, "匿名-🙂");
    assert_eq!(stored[4].event.group_id.as_deref(), Some("群-001"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Restarts and migrations

async fn a_reopened_store_keeps_everything_and_continues_seqs(db: Db) -> Result<()> {
    let (tenant, settings) = {
        let store = db.open().await?;
        let tenant = store.create_tenant("旗舰店", Industry::LocalLife, &[(KeyKind::Write, "kw".into())]).await?;
        let mut settings = TenantSettings::default();
        settings.identity_limits.insert("email".into(), 2);
        store.save_settings(tenant.id, &settings).await?;
        store.append(&[(tenant.id, rich_event("m1")), (tenant.id, event("m2")), (tenant.id, event("m3"))]).await?;
        (tenant, settings)
    };
    // Dropped: a new store must learn everything back from the database.
    let store = db.open().await?;
    let reread = store.tenant(tenant.id).await?.context("the tenant survives")?;
    assert_eq!(reread.name, "旗舰店");
    assert_eq!(reread.settings, settings);
    assert_eq!(reread.created_at, tenant.created_at);
    assert_eq!(store.tenant_by_key_hash("kw").await?, Some((tenant.id, KeyKind::Write)));
    assert_eq!(store.event_count(tenant.id).await?, 3);
    let events = scan_all(&store, tenant.id).await?;
    assert_same_event(&events[0].event, &rich_event("m1"), ScanDetail::Full);

    // Seqs continue, and duplicates are still recognised.
    let outcomes = store.append(&[(tenant.id, event("m2")), (tenant.id, event("m4"))]).await?;
    assert_eq!(outcomes, vec![AppendOutcome::Duplicate, AppendOutcome::Appended(4)]);
    assert_eq!(message_ids(&scan_all(&store, tenant.id).await?), ["m1", "m2", "m3", "m4"]);
    // A tenant created after the restart does not collide with the old one.
    let other = store.create_tenant("new", Industry::LocalLife, &[]).await?;
    assert_ne!(other.id, tenant.id);
    Ok(())
}

async fn migrations_are_idempotent(db: Db) -> Result<()> {
    let first = db.open().await?;
    let t = first.create_tenant("t", Industry::ConsumerGoods, &[]).await?.id;
    first.append(&batch(t, ["m1"])).await?;
    let applied = db.applied_migrations().await?;
    ensure!(!applied.is_empty(), "opening applies the migrations");

    // Opening again, with the first store still open, applies nothing and loses nothing.
    let second = db.open().await?;
    assert_eq!(db.applied_migrations().await?, applied);
    assert_eq!(second.event_count(t).await?, 1);
    assert_eq!(
        second.append(&batch(t, ["m1", "m2"])).await?,
        vec![AppendOutcome::Duplicate, AppendOutcome::Appended(2)]
    );
    assert_eq!(first.event_count(t).await?, 2);
    drop((first, second));
    let third = db.open().await?;
    assert_eq!(db.applied_migrations().await?, applied);
    assert_eq!(third.tenants().await?.len(), 1);
    Ok(())
}

/// Several servers starting at once on an empty database: one migrates, the others wait and
/// find the schema in place.
async fn concurrent_first_opens_migrate_once(db: Db) -> Result<()> {
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.open().await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await??);
    }
    let applied = db.applied_migrations().await?;
    ensure!(!applied.is_empty(), "the migrations were applied");
    assert_eq!(applied, (1..=applied.len() as i64).collect::<Vec<_>>(), "each version once, none skipped");
    let t = stores[0].create_tenant("t", Industry::ConsumerGoods, &[]).await?.id;
    assert_eq!(stores[3].append(&batch(t, ["m1"])).await?, appended([1]));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Harness

/// Where one test's data lives. `open` may be called again to simulate a restart.
#[derive(Clone)]
struct Db {
    url: String,
    backend: Backend,
}

impl Db {
    async fn open(&self) -> Result<Arc<dyn Store>> {
        let store = siyu_store::open(&self.url).await.context("failed to open the store")?;
        assert_eq!(store.backend(), self.backend);
        Ok(store)
    }

    /// The versions in `schema_migrations`, read behind the store's back.
    async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let sql = "SELECT version FROM schema_migrations ORDER BY version";
        match self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(&self.url)?;
                let mut stmt = conn.prepare(sql)?;
                let versions = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<i64>>>()?;
                Ok(versions)
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await?;
                Ok(sqlx::query_scalar(sql).fetch_all(&mut conn).await?)
            }
        }
    }
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let url = dir.path().join("siyu.db").display().to_string();
    test(Db { url, backend: Backend::Sqlite }).await.expect("sqlite conformance test failed");
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let Some(scratch) = ScratchDatabase::from_test_env().await else {
        println!("note: {PG_URL_VAR} is not set; skipping the postgres run of this test");
        return;
    };
    let db = Db { url: scratch.url.clone(), backend: Backend::Postgres };
    // Spawned so that a failing assertion still lets us drop the database.
    let outcome = tokio::spawn(test(db)).await;
    scratch.drop_database().await;
    match outcome {
        Ok(result) => result.expect("postgres conformance test failed"),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

// ---------------------------------------------------------------------------------------------
// Events

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_string()).expect("valid json")
}

fn json(raw: &Option<Box<RawValue>>) -> Option<serde_json::Value> {
    raw.as_ref().map(|r| serde_json::from_str(r.get()).expect("stored json parses"))
}

/// A plain view event of user u-1.
fn event(message_id: &str) -> Event {
    Event {
        message_id: message_id.to_string(),
        kind: EventKind::Known(EventType::View),
        channel: Channel::Douyin,
        account: "brand-main".into(),
        identities: vec![Identity::parse("user_id", "u-1").expect("valid identity")],
        timestamp: Millis(1_762_078_500_123),
        received_at: Millis(1_762_078_501_456),
        amount: None,
        currency: None,
        source: None,
        group_id: None,
        properties: Some(raw(r#"{"page":"home"}"#)),
        traits: None,
        context: Some(raw(r#"{"ip":"10.0.0.1"}"#)),
    }
}

/// A paid order with every field set, unicode and money included.
fn rich_event(message_id: &str) -> Event {
    Event {
        message_id: message_id.to_string(),
        kind: EventKind::Known(EventType::OrderPaid),
        channel: Channel::Taobao,
        account: "旗舰店".into(),
        identities: vec![
            Identity::parse("phone", "138-0013-8000").expect("valid phone"),
            Identity::parse("member_no", "M-0042").expect("valid custom identity"),
            Identity::parse("email", "Ann@Example.COM").expect("valid email"),
        ],
        timestamp: Millis(1_762_078_500_000),
        received_at: Millis(1_762_078_500_999),
        amount: Some(Fen(19_990)),
        currency: Some("CNY".into()),
        source: Some(Source { kind: "live".into(), id: "直播-20261102".into() }),
        group_id: None,
        properties: Some(raw(
            r#"{"order_id":"A1001","title":"限量礼盒 🎁","price":199.9,"items":[{"sku":"口红-01","qty":2}],"nested":{"z":1,"a":null}}"#,
        )),
        traits: Some(raw(r#"{"name":"张三","vip":true}"#)),
        context: Some(raw(r#"{"ip":"10.0.0.1","user_agent":"Mozilla/5.0 \"quoted\" \\ back"}"#)),
    }
}

fn batch<'a>(tenant: TenantId, ids: impl IntoIterator<Item = &'a str>) -> Vec<(TenantId, Event)> {
    ids.into_iter().map(|id| (tenant, event(id))).collect()
}

fn appended(seqs: impl IntoIterator<Item = Seq>) -> Vec<AppendOutcome> {
    seqs.into_iter().map(AppendOutcome::Appended).collect()
}

async fn scan_all(store: &Arc<dyn Store>, tenant: TenantId) -> Result<Vec<StoredEvent>> {
    Ok(store.scan(tenant, 0, usize::MAX, ScanDetail::Full).await?)
}

fn message_ids(events: &[StoredEvent]) -> Vec<String> {
    events.iter().map(|e| e.event.message_id.clone()).collect()
}

/// Field by field; JSON is compared as values, because PostgreSQL's JSONB keeps the meaning of a
/// document but not its spelling (key order, whitespace).
fn assert_same_event(stored: &Event, sent: &Event, detail: ScanDetail) {
    let id = &sent.message_id;
    assert_eq!(stored.message_id, sent.message_id);
    assert_eq!(stored.kind, sent.kind, "{id}: kind");
    assert_eq!(stored.channel, sent.channel, "{id}: channel");
    assert_eq!(stored.account, sent.account, "{id}: account");
    assert_eq!(stored.identities, sent.identities, "{id}: identities");
    assert_eq!(stored.timestamp, sent.timestamp, "{id}: timestamp");
    assert_eq!(stored.received_at, sent.received_at, "{id}: received_at");
    assert_eq!(stored.amount, sent.amount, "{id}: amount");
    assert_eq!(stored.currency, sent.currency, "{id}: currency");
    assert_eq!(stored.source, sent.source, "{id}: source");
    assert_eq!(stored.group_id, sent.group_id, "{id}: group_id");
    match detail {
        ScanDetail::Full => {
            assert_eq!(json(&stored.properties), json(&sent.properties), "{id}: properties");
            assert_eq!(json(&stored.traits), json(&sent.traits), "{id}: traits");
            assert_eq!(json(&stored.context), json(&sent.context), "{id}: context");
        }
        // Replays fold traits, so the envelope keeps them.
        ScanDetail::Envelope => {
            assert!(stored.properties.is_none() && stored.context.is_none(), "{id}: properties and context");
            assert_eq!(json(&stored.traits), json(&sent.traits), "{id}: traits");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tags and segments (issue 3)

async fn audience_records_round_trip_per_tenant(store: Arc<dyn Store>) -> Result<()> {
    let a = store.create_tenant("a", Industry::ConsumerGoods, &[]).await?.id;
    let b = store.create_tenant("b", Industry::ConsumerGoods, &[]).await?.id;
    let group = store.create_tag_group(a, "意向").await?;
    ensure!(group.id == 1, "{group:?}");
    match store.create_tag_group(a, "意向").await {
        Err(StoreError::NameTaken { kind: AudienceKind::TagGroup, name }) => ensure!(name == "意向"),
        other => anyhow::bail!("a duplicate group name must be refused: {other:?}"),
    }
    // The same name in another tenant is fine.
    ensure!(store.create_tag_group(b, "意向").await?.id == 1);
    let hot = store.create_tag(a, "高意向", Some(group.id), None).await?;
    let rule = store.create_tag(a, "大客户", None, Some("net_revenue >= 1000")).await?;
    ensure!((hot.id, rule.id) == (1, 2));
    ensure!(store.tags(a).await? == vec![hot.clone(), rule.clone()]);
    ensure!(store.tags(b).await?.is_empty(), "B sees A's tags");
    // Only a live rule tag's condition can change, and only in its own tenant.
    ensure!(!store.update_tag_condition(b, rule.id, "reachable").await?, "B changed A's rule tag");
    ensure!(!store.update_tag_condition(a, hot.id, "reachable").await?, "a manual tag got a condition");
    ensure!(store.update_tag_condition(a, rule.id, "net_revenue >= 2000").await?);
    let rule = TagRecord { condition: Some("net_revenue >= 2000".into()), ..rule };
    ensure!(store.tags(a).await? == vec![hot.clone(), rule.clone()]);
    ensure!(!store.delete_tag(b, hot.id).await?, "B deleted A's tag");
    ensure!(store.delete_tag(a, hot.id).await?);
    ensure!(!store.delete_tag(a, hot.id).await?, "deleting twice");
    // A deleted name is free again, with a new id (ids are never reused).
    let again = store.create_tag(a, "高意向", None, None).await?;
    ensure!(again.id == 3, "{again:?}");
    ensure!(store.tags(a).await?.iter().map(|t| t.id).collect::<Vec<_>>() == vec![2, 3]);
    ensure!(store.delete_tag_group(a, group.id).await?);
    ensure!(store.tag_groups(a).await?.is_empty() && store.tag_groups(b).await?.len() == 1);

    let seg = store.create_segment(a, "真爱粉", "tier = true_fan").await?;
    ensure!(store.create_segment(a, "真爱粉", "reachable").await.is_err());
    let other = store.create_segment(a, "可触达", "reachable").await?;
    match store.update_segment(a, other.id, "真爱粉", "reachable").await {
        Err(StoreError::NameTaken { kind: AudienceKind::Segment, .. }) => {}
        other => anyhow::bail!("renaming onto a taken name must be refused: {other:?}"),
    }
    let updated = store.update_segment(a, seg.id, "真爱粉2", "tier >= warm_fan").await?.context("updated")?;
    ensure!(
        updated.condition == "tier >= warm_fan" && updated.name == "真爱粉2" && updated.created_at == seg.created_at
    );
    ensure!(store.update_segment(b, seg.id, "x", "reachable").await?.is_none(), "B updated A's segment");
    ensure!(store.segments(b).await?.is_empty());
    ensure!(store.delete_segment(a, other.id).await?);
    ensure!(store.segments(a).await? == vec![updated]);
    Ok(())
}

async fn tag_ops_and_membership_changes_append_in_order(store: Arc<dyn Store>) -> Result<()> {
    let a = store.create_tenant("a", Industry::ConsumerGoods, &[]).await?.id;
    let b = store.create_tenant("b", Industry::ConsumerGoods, &[]).await?.id;
    let op = |tag_id: i64, add: bool, after_seq: i64| TagOp {
        op_id: 0,
        tag_id,
        profile_id: 7,
        identity_kind: "user_id".into(),
        identity_value: "u7".into(),
        add,
        actor: "api".into(),
        after_seq,
        at: Millis(1_000 + after_seq),
    };
    let stored = store.append_tag_ops(a, &[op(1, true, 3), op(1, false, 5)]).await?;
    ensure!(stored.iter().map(|o| o.op_id).collect::<Vec<_>>() == vec![1, 2]);
    let more = store.append_tag_ops(a, &[op(2, true, 9)]).await?;
    ensure!(more[0].op_id == 3);
    let all = store.tag_ops(a).await?;
    ensure!(all.len() == 3 && all[..2] == stored[..] && all[2] == more[0], "{all:?}");
    ensure!(store.tag_ops(b).await?.is_empty(), "B sees A's tag operations");

    let change = |segment_id: i64, profile_id: i64, entered: bool, seq: Option<i64>| MembershipChange {
        change_id: 0,
        segment_id,
        profile_id,
        entered,
        at: Millis(5_000),
        seq,
    };
    store.append_membership_changes(a, &[change(1, 7, true, Some(4)), change(2, 7, true, None)]).await?;
    store.append_membership_changes(a, &[change(1, 7, false, None), change(1, 8, true, Some(9))]).await?;
    store.append_membership_changes(b, &[change(1, 7, true, None)]).await?;
    let of_7 = store.membership_changes(a, Some(7), None, None, 100).await?;
    ensure!(of_7.iter().map(|c| c.change_id).collect::<Vec<_>>() == vec![3, 2, 1], "{of_7:?}");
    ensure!(!of_7[0].entered && of_7[2].seq == Some(4) && of_7[1].seq.is_none());
    let seg_1 = store.membership_changes(a, None, Some(1), None, 2).await?;
    ensure!(seg_1.iter().map(|c| c.change_id).collect::<Vec<_>>() == vec![4, 3], "{seg_1:?}");
    let older = store.membership_changes(a, None, Some(1), Some(3), 10).await?;
    ensure!(older.iter().map(|c| c.change_id).collect::<Vec<_>>() == vec![1]);
    ensure!(store.membership_changes(b, None, None, None, 10).await?.len() == 1);

    store.record_segment_sizes(a, "2026-11-01", &[(1, 10), (2, 3)]).await?;
    store.record_segment_sizes(a, "2026-11-02", &[(1, 12)]).await?;
    store.record_segment_sizes(a, "2026-11-02", &[(1, 11)]).await?;
    ensure!(store.segment_sizes(a, 1).await? == vec![("2026-11-01".to_string(), 10), ("2026-11-02".to_string(), 11)]);
    ensure!(store.segment_sizes(b, 1).await?.is_empty());
    Ok(())
}
