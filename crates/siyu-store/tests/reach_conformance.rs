//! The ReachStore conformance suite: templates, campaigns, the outbox with its guardrail ledger,
//! staff tasks and suppression lists — one set of cases run against every back-end, so SQLite and
//! PostgreSQL stay equals. SQLite runs always, each test in a fresh temporary directory.
//! PostgreSQL runs when `SIYU_TEST_DATABASE_URL` names a server
//! (e.g. `postgres://postgres@127.0.0.1:5432/test`): each test creates its own database there and
//! drops it afterwards. Every time a case depends on is chosen by the case (`at`, `now`, leases),
//! so nothing hangs on the wall clock or the hour of the run.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use siyu_model::reach::{Guardrails, PersonReach, Purpose, ReachRules, SendScope, Sent};
use siyu_model::{Channel, Industry, Millis, ProfileId, TenantId};
use siyu_store::scratch::ScratchDatabase;
use siyu_store::{
    AudienceKind, Backend, CampaignState, Claimed, ContactWayRecord, EnqueueBatch, EnqueueItem, Enqueued, OutboxRow,
    OutboxState, Outcome, StaffTask, Store, StoreError, Suppression, TaskState,
};

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
        a_key_repeated_within_a_batch_is_queued_once,
        templates_are_created_listed_updated_and_deleted,
        a_live_template_name_is_taken_until_deleted,
        templates_are_isolated,
        campaigns_are_created_listed_and_named_once,
        moving_a_campaign_is_compare_and_set,
        campaigns_are_isolated,
        a_first_batch_queues_everything_and_reserves_it,
        a_second_marketing_batch_the_same_day_is_held,
        re_enqueueing_the_same_keys_changes_nothing,
        person_checks_hold_by_their_rule,
        the_same_profile_twice_in_a_batch_counts_the_first,
        quiet_hours_move_marketing_to_their_end,
        enqueue_is_isolated,
        claims_take_due_rows_in_order_and_lease_them,
        outcomes_set_states_remote_ids_and_errors,
        unlogged_lists_outcomes_until_marked,
        outcomes_recorded_as_logged_owe_nothing,
        outbox_rows_page_by_id_per_campaign,
        cancelling_stops_only_what_was_not_attempted,
        task_rows_are_the_recipients_of_one_task,
        the_outbox_is_isolated,
        staff_tasks_are_upserted_and_filtered_by_campaign,
        suppressions_are_added_once_listed_and_removed,
        contact_ways_are_recorded_once_per_state_and_listed,
        contact_ways_are_isolated,
    ],
    db: [
        concurrent_claims_never_share_a_row,
        concurrent_enqueues_never_exceed_the_daily_cap,
        a_lease_lost_with_its_process_comes_back_in_doubt,
        the_ledger_is_rebuilt_from_the_outbox_on_reopen,
    ],
}

// ---------------------------------------------------------------------------------------------
// Templates

async fn templates_are_created_listed_updated_and_deleted(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let welcome = store.create_template(a, "欢迎语", r#"{"body":"你好 {{ name }}"}"#).await?;
    let recall = store.create_template(a, "recall", r#"{"body":"come back"}"#).await?;
    assert_eq!(welcome.name, "欢迎语");
    assert_eq!(welcome.definition, r#"{"body":"你好 {{ name }}"}"#);
    assert_eq!(welcome.created_at, welcome.updated_at);
    assert!(recall.id > welcome.id, "ids increase: {} then {}", welcome.id, recall.id);
    assert_eq!(store.templates(a).await?, vec![welcome.clone(), recall.clone()]);

    assert!(store.update_template(a, recall.id, r#"{"body":"v2"}"#).await?);
    let listed = store.templates(a).await?;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], welcome, "only the updated template changed");
    assert_eq!((listed[1].id, listed[1].name.as_str()), (recall.id, "recall"));
    assert_eq!(listed[1].definition, r#"{"body":"v2"}"#);
    assert_eq!(listed[1].created_at, recall.created_at);
    assert!(listed[1].updated_at >= recall.updated_at);
    assert!(!store.update_template(a, recall.id + 100, "{}").await?, "no such template");

    assert!(store.delete_template(a, welcome.id).await?);
    assert!(!store.delete_template(a, welcome.id).await?, "a template is deleted once");
    assert!(!store.update_template(a, welcome.id, "{}").await?, "a deleted template cannot be updated");
    assert!(!store.delete_template(a, recall.id + 100).await?);
    let left: Vec<i64> = store.templates(a).await?.iter().map(|t| t.id).collect();
    assert_eq!(left, [recall.id]);
    Ok(())
}

async fn a_live_template_name_is_taken_until_deleted(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let first = store.create_template(a, "promo", "{\"v\":1}").await?;
    let err = store.create_template(a, "promo", "{\"v\":2}").await.expect_err("the name is taken");
    assert!(
        matches!(&err, StoreError::NameTaken { kind: AudienceKind::Template, name } if name == "promo"),
        "got {err:?}"
    );
    assert_eq!(store.templates(a).await?, vec![first.clone()], "the refused template left nothing behind");

    let other = store.create_template(a, "promo-2", "{}").await?;
    assert!(store.delete_template(a, first.id).await?);
    let again = store.create_template(a, "promo", "{\"v\":3}").await?;
    assert!(again.id > other.id, "a deleted template's id is not reused: {} after {}", again.id, other.id);
    // Deleting the highest id does not free it either.
    assert!(store.delete_template(a, again.id).await?);
    let last = store.create_template(a, "promo", "{\"v\":4}").await?;
    assert!(last.id > again.id, "the highest id is not reused: {} after {}", last.id, again.id);
    let ids: HashSet<i64> = [first.id, other.id, again.id, last.id].into();
    assert_eq!(ids.len(), 4);
    assert_eq!(store.templates(a).await?, vec![other, last]);
    Ok(())
}

async fn templates_are_isolated(store: Arc<dyn Store>) -> Result<()> {
    let (a, b) = two_tenants(&store).await?;
    let promo = store.create_template(a, "promo", "{\"of\":\"a\"}").await?;
    let welcome = store.create_template(a, "welcome", "{\"of\":\"a\"}").await?;
    assert_eq!(store.templates(b).await?, vec![]);
    // B owns no template yet, so any id it names is A's or nobody's.
    for id in [promo.id, welcome.id] {
        assert!(!store.update_template(b, id, "{\"of\":\"b\"}").await?, "B updated A's template {id}");
        assert!(!store.delete_template(b, id).await?, "B deleted A's template {id}");
    }
    assert_eq!(store.templates(a).await?, vec![promo.clone(), welcome.clone()]);
    // Names are per tenant.
    let theirs = store.create_template(b, "promo", "{\"of\":\"b\"}").await?;
    assert_eq!(store.templates(b).await?, vec![theirs]);
    assert_eq!(store.templates(a).await?, vec![promo, welcome]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Campaigns

async fn campaigns_are_created_listed_and_named_once(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let spring = store.create_campaign(a, "春季上新", r#"{"audience":"all"}"#, CampaignState::Scheduled).await?;
    assert_eq!(spring.name, "春季上新");
    assert_eq!(spring.spec, r#"{"audience":"all"}"#);
    assert_eq!((spring.state, spring.planned_at, spring.planned), (CampaignState::Scheduled, None, 0));
    assert_eq!(spring.created_at, spring.updated_at);
    let now = store.create_campaign(a, "now", "{}", CampaignState::Planning).await?;
    assert!(now.id > spring.id);
    assert_eq!(now.state, CampaignState::Planning);

    let err = store
        .create_campaign(a, "春季上新", "{}", CampaignState::Planning)
        .await
        .expect_err("a second campaign of the same name must be refused");
    assert!(
        matches!(&err, StoreError::NameTaken { kind: AudienceKind::Campaign, name } if name == "春季上新"),
        "got {err:?}"
    );
    assert_eq!(store.campaigns(a).await?, vec![spring.clone(), now.clone()]);
    assert_eq!(store.campaign(a, spring.id).await?, Some(spring));
    assert_eq!(store.campaign(a, now.id).await?, Some(now.clone()));
    assert_eq!(store.campaign(a, now.id + 100).await?, None);
    Ok(())
}

async fn moving_a_campaign_is_compare_and_set(store: Arc<dyn Store>) -> Result<()> {
    use CampaignState::{Cancelled, Done, Planning, Scheduled, Sending};
    let (a, _) = two_tenants(&store).await?;
    let created = store.create_campaign(a, "c", "{}", Scheduled).await?;
    let id = created.id;

    assert!(!store.move_campaign(a, id, &[Planning, Sending], Done, Some(9)).await?);
    assert_eq!(store.campaign(a, id).await?, Some(created.clone()), "a refused move changes nothing");

    assert!(store.move_campaign(a, id, &[Scheduled], Planning, None).await?);
    let planning = store.campaign(a, id).await?.context("the campaign")?;
    assert_eq!((planning.state, planning.planned), (Planning, 0));
    let planned_at = planning.planned_at.context("entering planning sets planned_at")?;
    assert!(planned_at >= created.created_at);
    assert_eq!(planning.updated_at, planned_at);
    assert_eq!((planning.name.as_str(), planning.created_at), ("c", created.created_at));

    // A second planner that still believes the campaign is scheduled loses the race.
    assert!(!store.move_campaign(a, id, &[Scheduled], Planning, None).await?);
    assert_eq!(store.campaign(a, id).await?, Some(planning.clone()));

    assert!(store.move_campaign(a, id, &[Planning], Sending, Some(42)).await?);
    let sending = store.campaign(a, id).await?.context("the campaign")?;
    assert_eq!((sending.state, sending.planned), (Sending, 42), "planned is recorded");
    assert_eq!(sending.planned_at, Some(planned_at), "planned_at is set on entering planning only");

    assert!(store.move_campaign(a, id, &[Scheduled, Planning, Sending], Done, None).await?);
    let done = store.campaign(a, id).await?.context("the campaign")?;
    assert_eq!((done.state, done.planned, done.planned_at), (Done, 42, Some(planned_at)));

    assert!(!store.move_campaign(a, id, &[Scheduled, Planning, Sending], Cancelled, None).await?, "done is final");
    assert!(!store.move_campaign(a, id + 100, &CampaignState::ALL, Cancelled, None).await?, "no such campaign");
    assert_eq!(store.campaign(a, id).await?, Some(done));
    Ok(())
}

async fn campaigns_are_isolated(store: Arc<dyn Store>) -> Result<()> {
    let (a, b) = two_tenants(&store).await?;
    let ours = store.create_campaign(a, "双十一", "{\"of\":\"a\"}", CampaignState::Scheduled).await?;
    assert_eq!(store.campaigns(b).await?, vec![]);
    assert_eq!(store.campaign(b, ours.id).await?, None);
    assert!(!store.move_campaign(b, ours.id, &CampaignState::ALL, CampaignState::Cancelled, Some(1)).await?);
    assert_eq!(store.campaign(a, ours.id).await?, Some(ours.clone()), "B moved A's campaign");

    let theirs = store.create_campaign(b, "双十一", "{\"of\":\"b\"}", CampaignState::Planning).await?;
    assert_eq!(store.campaigns(b).await?, vec![theirs.clone()]);
    assert_eq!(store.campaigns(a).await?, vec![ours.clone()]);
    assert!(store.move_campaign(b, theirs.id, &[CampaignState::Planning], CampaignState::Cancelled, None).await?);
    assert_eq!(store.campaign(a, ours.id).await?, Some(ours), "B's move touched A's campaign");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Queuing and the guardrail ledger

async fn a_first_batch_queues_everything_and_reserves_it(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let c = campaign(&store, a, "c").await?;
    let at = noon();
    let out = store.enqueue(a, marketing(c, at, items(c, &[1, 2, 3]))).await?;
    assert_eq!(out, vec![Enqueued::Queued { at }; 3]);

    let rows = all_rows(&store, a, c).await?;
    assert_eq!(rows.len(), 3);
    for (row, profile) in rows.iter().zip([1, 2, 3]) {
        assert_eq!(row.key, format!("c{c}-p{profile}"));
        assert_eq!((row.campaign_id, row.profile_id), (c, profile));
        assert_eq!((row.channel, row.account.as_str(), row.sender.as_deref()), (Channel::App, "brand-app", None));
        assert_eq!(row.scope, SendScope::Direct);
        assert_eq!((row.recipient_kind.as_str(), row.recipient_value.clone()), ("user_id", format!("u-{profile}")));
        assert_eq!(row.content, content(profile));
        assert_eq!((row.state, row.due_at, row.attempts, row.attempted_at), (OutboxState::Queued, at, 0, None));
        assert_eq!((&row.remote_id, &row.error_code, &row.error_message, row.logged), (&None, &None, &None, false));
    }
    ensure!(rows.windows(2).all(|w| w[0].id < w[1].id), "outbox ids increase in input order");

    // In the order asked, unknown profiles (and repeats) included.
    let ledgers = store.ledgers(a, Millis(0), &[3, 99, 1, 3]).await?;
    assert_eq!(ledgers, vec![vec![reserved(at)], vec![], vec![reserved(at)], vec![reserved(at)]]);
    assert_eq!(store.ledgers(a, Millis(0), &[]).await?, Vec::<Vec<Sent>>::new());

    assert_eq!(store.outbox_counts(a, c).await?, vec![(OutboxState::Queued, 3)]);
    assert_eq!(store.outbox_pending(a, Some(c)).await?, 3);
    assert!(store.has_pending(a, c).await? && !store.has_pending(a, c + 100).await?);
    assert_eq!(store.outbox_pending(a, None).await?, 3);
    assert_eq!(store.outbox_pending(a, Some(c + 100)).await?, 0);
    assert_eq!(store.hold_counts(a, c).await?, vec![]);
    Ok(())
}

async fn a_second_marketing_batch_the_same_day_is_held(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let (c1, c2, c3) =
        (campaign(&store, a, "c1").await?, campaign(&store, a, "c2").await?, campaign(&store, a, "c3").await?);
    let morning = noon();
    assert_eq!(store.enqueue(a, marketing(c1, morning, items(c1, &[1, 2, 3]))).await?, queued(morning, 3));

    let later = plus(morning, 3 * HOUR);
    let out = store.enqueue(a, marketing(c2, later, items(c2, &[1, 2, 3]))).await?;
    assert_eq!(out, vec![held("frequency:marketing_daily"); 3]);
    assert_eq!(store.hold_counts(a, c2).await?, vec![("frequency:marketing_daily".to_string(), 3)]);
    assert_eq!(store.holds_for(a, c2, "frequency:marketing_daily").await?, vec![1, 2, 3]);
    assert_eq!(store.holds_for(a, c2, "unsubscribed").await?, Vec::<ProfileId>::new());
    assert_eq!(store.hold_counts(a, c1).await?, vec![]);
    assert_eq!(all_rows(&store, a, c2).await?, vec![], "held messages are not queued");
    assert_eq!(store.outbox_pending(a, None).await?, 3);
    assert_eq!(
        store.ledgers(a, Millis(0), &[1, 2, 3]).await?,
        vec![vec![reserved(morning)]; 3],
        "a hold reserves nothing"
    );

    // Service messages are not marketing: the cap neither counts nor holds them.
    assert_eq!(store.enqueue(a, service(c3, later, items(c3, &[1]))).await?, queued(later, 1));
    let service_send = Sent { marketing: false, ..reserved(later) };
    assert_eq!(store.ledgers(a, Millis(0), &[1]).await?, vec![vec![reserved(morning), service_send.clone()]]);

    // The next day the daily cap allows one again, and a held key may be queued then.
    let tomorrow = plus(morning, 24 * HOUR);
    assert_eq!(store.enqueue(a, marketing(c2, tomorrow, items(c2, &[1, 2, 3]))).await?, queued(tomorrow, 3));
    assert_eq!(all_rows(&store, a, c2).await?.len(), 3);
    assert_eq!(
        store.ledgers(a, Millis(0), &[1, 2]).await?,
        vec![vec![reserved(morning), service_send, reserved(tomorrow)], vec![reserved(morning), reserved(tomorrow)]]
    );
    assert_eq!(store.hold_counts(a, c2).await?, vec![("frequency:marketing_daily".to_string(), 3)]);
    Ok(())
}

async fn re_enqueueing_the_same_keys_changes_nothing(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let c = campaign(&store, a, "c").await?;
    let at = noon();
    assert_eq!(store.enqueue(a, marketing(c, at, items(c, &[1, 2]))).await?, queued(at, 2));
    let rows = all_rows(&store, a, c).await?;
    let ledgers = store.ledgers(a, Millis(0), &[1, 2]).await?;

    // Planning resumed after a crash: the same keys again, an hour later.
    let again = store.enqueue(a, marketing(c, plus(at, HOUR), items(c, &[1, 2]))).await?;
    assert_eq!(again, vec![Enqueued::Duplicate; 2]);
    assert_eq!(all_rows(&store, a, c).await?, rows);
    assert_eq!(store.ledgers(a, Millis(0), &[1, 2]).await?, ledgers);
    assert_eq!(store.hold_counts(a, c).await?, vec![], "a duplicate is not a hold");

    // The part already done is skipped, the rest queued.
    let resumed = store.enqueue(a, marketing(c, plus(at, HOUR), items(c, &[1, 2, 3]))).await?;
    assert_eq!(resumed, vec![Enqueued::Duplicate, Enqueued::Duplicate, Enqueued::Queued { at: plus(at, HOUR) }]);
    let after = all_rows(&store, a, c).await?;
    assert_eq!(after.len(), 3);
    assert_eq!(after[..2], rows[..]);
    assert_eq!((after[2].profile_id, after[2].due_at), (3, plus(at, HOUR)));
    assert_eq!(
        store.ledgers(a, Millis(0), &[1, 2, 3]).await?,
        vec![ledgers[0].clone(), ledgers[1].clone(), vec![reserved(plus(at, HOUR))]]
    );
    Ok(())
}

async fn a_key_repeated_within_a_batch_is_queued_once(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let c = campaign(&store, a, "c").await?;
    let at = noon();
    let out = store.enqueue(a, service(c, at, vec![item(1, "k"), item(2, "k"), item(3, "k3")])).await?;
    assert_eq!(out, vec![Enqueued::Queued { at }, Enqueued::Duplicate, Enqueued::Queued { at }]);
    let rows = all_rows(&store, a, c).await?;
    assert_eq!(rows.iter().map(|r| (r.key.as_str(), r.profile_id)).collect::<Vec<_>>(), [("k", 1), ("k3", 3)]);
    assert_eq!(store.ledgers(a, Millis(0), &[2]).await?, vec![Vec::<Sent>::new()], "a duplicate reserves nothing");
    Ok(())
}

async fn person_checks_hold_by_their_rule(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let c = campaign(&store, a, "c").await?;
    let at = noon();
    let mut items = items(c, &[1, 2, 3, 4, 5]);
    items[0].person.unsubscribed = true;
    items[1].person.suppressed_by = Some("x".into());
    items[2].person.has_address = false;
    items[3].person.consent_revoked = true;
    let out = store.enqueue(a, marketing(c, at, items)).await?;
    assert_eq!(
        out,
        vec![held("unsubscribed"), held("suppression:x"), held("no_address"), held("consent"), Enqueued::Queued { at }]
    );
    let counts = vec![
        ("consent".to_string(), 1),
        ("no_address".to_string(), 1),
        ("suppression:x".to_string(), 1),
        ("unsubscribed".to_string(), 1),
    ];
    assert_eq!(store.hold_counts(a, c).await?, counts);
    for (rule, profile) in [("unsubscribed", 1), ("suppression:x", 2), ("no_address", 3), ("consent", 4)] {
        assert_eq!(store.holds_for(a, c, rule).await?, vec![profile], "held by {rule}");
    }
    assert_eq!(
        store.ledgers(a, Millis(0), &[1, 2, 3, 4, 5]).await?,
        vec![vec![], vec![], vec![], vec![], vec![reserved(at)]]
    );
    let rows = all_rows(&store, a, c).await?;
    assert_eq!(rows.iter().map(|r| r.profile_id).collect::<Vec<_>>(), [5]);

    // Holds recorded beside the queue (the holdout) keep a profile's first reason.
    store.record_holds(a, c, &[(1, "holdout".into()), (6, "holdout".into()), (7, "holdout".into())]).await?;
    assert_eq!(store.holds_for(a, c, "holdout").await?, vec![6, 7]);
    assert_eq!(store.holds_for(a, c, "unsubscribed").await?, vec![1]);
    let mut counts = counts;
    counts.insert(1, ("holdout".to_string(), 2));
    assert_eq!(store.hold_counts(a, c).await?, counts);
    Ok(())
}

async fn the_same_profile_twice_in_a_batch_counts_the_first(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let c = campaign(&store, a, "c").await?;
    let at = noon();
    let out = store.enqueue(a, marketing(c, at, vec![item(1, "a"), item(1, "b"), item(2, "c")])).await?;
    assert_eq!(out, vec![Enqueued::Queued { at }, held("frequency:marketing_daily"), Enqueued::Queued { at }]);
    let keys: Vec<String> = all_rows(&store, a, c).await?.into_iter().map(|r| r.key).collect();
    assert_eq!(keys, ["a", "c"]);
    assert_eq!(store.ledgers(a, Millis(0), &[1, 2]).await?, vec![vec![reserved(at)], vec![reserved(at)]]);
    assert_eq!(store.holds_for(a, c, "frequency:marketing_daily").await?, vec![1]);

    // Uncapped (service) messages to one person in one batch are all queued and all reserved.
    let s = campaign(&store, a, "service").await?;
    let out = store.enqueue(a, service(s, at, vec![item(3, "d"), item(3, "e")])).await?;
    assert_eq!(out, queued(at, 2));
    let service_send = Sent { marketing: false, ..reserved(at) };
    assert_eq!(store.ledgers(a, Millis(0), &[3]).await?, vec![vec![service_send.clone(), service_send]]);
    Ok(())
}

async fn quiet_hours_move_marketing_to_their_end(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let (m, s) = (campaign(&store, a, "marketing").await?, campaign(&store, a, "service").await?);
    // The default rules: quiet from 22:00 to 08:00 in Asia/Shanghai.
    let late = shanghai("2026-12-03T23:30:00");
    let wake = shanghai("2026-12-04T08:00:00");
    let mut night = marketing(m, late, items(m, &[1]));
    night.guardrails = guardrails(ReachRules::default());
    night.sender = Some("zhang".into());
    assert_eq!(store.enqueue(a, night).await?, vec![Enqueued::Queued { at: wake }]);
    let row = all_rows(&store, a, m).await?.pop().context("the queued message")?;
    assert_eq!((row.due_at, row.sender.as_deref()), (wake, Some("zhang")));
    let moved = Sent { staff: Some("zhang".into()), ..reserved(wake) };
    assert_eq!(store.ledgers(a, Millis(0), &[1]).await?, vec![vec![moved]]);

    // Quiet hours concern marketing only.
    let mut notice = service(s, late, items(s, &[2]));
    notice.guardrails = guardrails(ReachRules::default());
    assert_eq!(store.enqueue(a, notice).await?, vec![Enqueued::Queued { at: late }]);

    let tonight = store.claim(a, late, plus(late, MINUTE), 10).await?;
    assert_eq!(tonight.iter().map(|c| c.row.profile_id).collect::<Vec<_>>(), [2], "the marketing message waits");
    store.complete(a, &[(tonight[0].row.id, Outcome::Sent { remote_id: None })]).await?;
    let morning = store.claim(a, wake, plus(wake, MINUTE), 10).await?;
    assert_eq!(morning.iter().map(|c| c.row.profile_id).collect::<Vec<_>>(), [1]);
    Ok(())
}

async fn enqueue_is_isolated(store: Arc<dyn Store>) -> Result<()> {
    let (a, b) = two_tenants(&store).await?;
    let ca = campaign(&store, a, "c").await?;
    let at = noon();
    assert_eq!(store.enqueue(a, marketing(ca, at, items(ca, &[1, 2]))).await?, queued(at, 2));
    assert_eq!(store.ledgers(b, Millis(0), &[1, 2]).await?, vec![Vec::<Sent>::new(); 2], "B sees A's ledger");

    // The same profile ids (and, as campaign ids are per tenant, likely the same keys) in B.
    let cb = campaign(&store, b, "c").await?;
    let later = plus(at, HOUR);
    assert_eq!(store.enqueue(b, marketing(cb, later, items(cb, &[1, 2]))).await?, queued(later, 2));
    assert_eq!(store.hold_counts(b, cb).await?, vec![]);
    assert_eq!(store.ledgers(a, Millis(0), &[1, 2]).await?, vec![vec![reserved(at)]; 2]);
    assert_eq!(store.ledgers(b, Millis(0), &[1, 2]).await?, vec![vec![reserved(later)]; 2]);
    let a_rows = all_rows(&store, a, ca).await?;
    assert_eq!(a_rows.iter().map(|r| r.due_at).collect::<Vec<_>>(), [at, at]);
    let b_rows = all_rows(&store, b, cb).await?;
    assert_eq!(b_rows.iter().map(|r| r.due_at).collect::<Vec<_>>(), [later, later]);
    assert_eq!(store.outbox_pending(a, None).await?, 2);
    assert_eq!(store.outbox_pending(b, None).await?, 2);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Claims and outcomes

async fn claims_take_due_rows_in_order_and_lease_them(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let c = campaign(&store, a, "c").await?;
    let t0 = noon();
    let now = plus(t0, HOUR);
    store.enqueue(a, service(c, now, items(c, &[1, 2]))).await?;
    store.enqueue(a, service(c, t0, items(c, &[3]))).await?;
    store.enqueue(a, service(c, plus(t0, DAY), items(c, &[4]))).await?;
    let ids = row_ids_by_profile(&store, a, c).await?;
    let (r1, r2, r3, r4) = (ids[&1], ids[&2], ids[&3], ids[&4]);

    // Earliest due first, then by id; at most `limit`.
    let first = store.claim(a, now, plus(now, MINUTE), 2).await?;
    assert_eq!(claimed_ids(&first), [r3, r1]);
    for claimed in &first {
        assert!(!claimed.in_doubt);
        assert_eq!((claimed.row.state, claimed.row.attempts), (OutboxState::Attempting, 1));
        assert_eq!(claimed.row.attempted_at, Some(now));
    }
    assert_same_rows(&first, &all_rows(&store, a, c).await?);

    let second = store.claim(a, plus(now, 10 * SECOND), plus(now, 70 * SECOND), 10).await?;
    assert_eq!(claimed_ids(&second), [r2]);
    assert_eq!((second[0].in_doubt, second[0].row.attempted_at), (false, Some(plus(now, 10 * SECOND))));

    // Everything due is leased; tomorrow's message is not due.
    assert_eq!(claimed_ids(&store.claim(a, plus(now, 30 * SECOND), plus(now, 90 * SECOND), 10).await?), NO_IDS);
    assert_eq!(store.outbox_pending(a, Some(c)).await?, 4);
    assert_eq!(counts(store.outbox_counts(a, c).await?), BTreeMap::from([("attempting", 3), ("queued", 1)]));

    // The first lease lapses: its messages come back in doubt, with the time of the attempt whose
    // outcome was lost.
    let retaken = store.claim(a, plus(now, 65 * SECOND), plus(now, 5 * MINUTE), 10).await?;
    assert_eq!(claimed_ids(&retaken), [r3, r1]);
    for claimed in &retaken {
        assert!(claimed.in_doubt, "message {} is in doubt", claimed.row.id);
        assert_eq!((claimed.row.state, claimed.row.attempts), (OutboxState::Attempting, 2));
        assert_eq!(claimed.row.attempted_at, Some(now));
    }
    assert_same_rows(&retaken, &all_rows(&store, a, c).await?);
    let retaken = store.claim(a, plus(now, 75 * SECOND), plus(now, 5 * MINUTE), 10).await?;
    assert_eq!(claimed_ids(&retaken), [r2]);
    assert_eq!((retaken[0].in_doubt, retaken[0].row.attempted_at), (true, Some(plus(now, 10 * SECOND))));

    // Tomorrow: every lapsed lease and the new message, in due order.
    let tomorrow = plus(t0, DAY);
    let all = store.claim(a, tomorrow, plus(tomorrow, MINUTE), 10).await?;
    assert_eq!(claimed_ids(&all), [r3, r1, r2, r4]);
    assert_eq!(all.iter().map(|c| c.in_doubt).collect::<Vec<_>>(), [true, true, true, false]);
    assert_eq!(all.iter().map(|c| c.row.attempts).collect::<Vec<_>>(), [3, 3, 3, 1]);
    assert_same_rows(&all, &all_rows(&store, a, c).await?);
    Ok(())
}

async fn outcomes_set_states_remote_ids_and_errors(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let c = campaign(&store, a, "c").await?;
    let at = noon();
    store.enqueue(a, service(c, at, items(c, &[1, 2, 3, 4, 5, 6, 7]))).await?;
    let r = claimed_ids(&store.claim(a, at, plus(at, MINUTE), 10).await?);
    assert_eq!(r.len(), 7);
    let retry_at = plus(at, HOUR);
    store
        .complete(
            a,
            &[
                (r[0], Outcome::Sent { remote_id: Some("wx-1".into()) }),
                (r[1], Outcome::Sent { remote_id: None }),
                (r[2], Outcome::Task { task_id: "task-1".into() }),
                (r[3], Outcome::Retry { at: retry_at, code: "rate_limited".into(), message: "slow down".into() }),
                (r[4], failed("blocked", "对方已拒收")),
                (r[5], failed("blocked", "user blocked the account")),
                (r[6], failed("invalid_recipient", "no such user")),
            ],
        )
        .await?;
    let rows = all_rows(&store, a, c).await?;
    let s = |state, remote: Option<&str>, code: Option<&str>, message: Option<&str>, due, logged| {
        (state, remote.map(str::to_string), code.map(str::to_string), message.map(str::to_string), due, logged)
    };
    let expected = vec![
        s(OutboxState::Sent, Some("wx-1"), None, None, at, false),
        s(OutboxState::Sent, None, None, None, at, false),
        s(OutboxState::Task, Some("task-1"), None, None, at, false),
        // A retry owes the log nothing (yet) and waits for its new time.
        s(OutboxState::Queued, None, Some("rate_limited"), Some("slow down"), retry_at, true),
        s(OutboxState::Failed, None, Some("blocked"), Some("对方已拒收"), at, false),
        s(OutboxState::Failed, None, Some("blocked"), Some("user blocked the account"), at, false),
        s(OutboxState::Failed, None, Some("invalid_recipient"), Some("no such user"), at, false),
    ];
    assert_eq!(rows.iter().map(outcome_of).collect::<Vec<_>>(), expected);
    assert!(rows.iter().all(|row| row.attempts == 1 && row.attempted_at == Some(at)));
    assert_eq!(
        counts(store.outbox_counts(a, c).await?),
        BTreeMap::from([("failed", 3), ("queued", 1), ("sent", 2), ("task", 1)])
    );
    assert_eq!(
        store.failure_counts(a, c).await?,
        vec![("blocked".to_string(), 2), ("invalid_recipient".to_string(), 1)]
    );
    // The retry and the task (waiting for its staff member) have no final outcome yet.
    assert_eq!(store.outbox_pending(a, Some(c)).await?, 2);

    // The retry is not due before its time; then it is a fresh attempt, not one in doubt.
    assert_eq!(claimed_ids(&store.claim(a, plus(retry_at, -1), plus(retry_at, MINUTE), 10).await?), NO_IDS);
    let again = store.claim(a, retry_at, plus(retry_at, MINUTE), 10).await?;
    assert_eq!(claimed_ids(&again), [r[3]]);
    assert_eq!((again[0].in_doubt, again[0].row.attempts, again[0].row.attempted_at), (false, 2, Some(retry_at)));
    store
        .complete(
            a,
            &[
                (r[3], Outcome::Sent { remote_id: Some("wx-4".into()) }),
                (r[0], Outcome::Delivered),
                (r[2], Outcome::Delivered),
            ],
        )
        .await?;
    let rows = all_rows(&store, a, c).await?;
    assert_eq!(
        outcome_of(&rows[3]),
        s(OutboxState::Sent, Some("wx-4"), None, None, retry_at, false),
        "success clears the error"
    );
    assert_eq!(
        outcome_of(&rows[0]),
        s(OutboxState::Delivered, Some("wx-1"), None, None, at, false),
        "the remote id stays"
    );
    assert_eq!(outcome_of(&rows[2]), s(OutboxState::Delivered, Some("task-1"), None, None, at, false));
    assert_eq!(
        counts(store.outbox_counts(a, c).await?),
        BTreeMap::from([("delivered", 2), ("failed", 3), ("sent", 2)])
    );
    assert_eq!(store.outbox_pending(a, Some(c)).await?, 0);
    assert_eq!(store.outbox_pending(a, None).await?, 0);
    assert!(!store.has_pending(a, c).await?);
    Ok(())
}

async fn unlogged_lists_outcomes_until_marked(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let c = campaign(&store, a, "c").await?;
    let at = noon();
    store.enqueue(a, service(c, at, items(c, &[1, 2, 3, 4, 5]))).await?;
    let r = claimed_ids(&store.claim(a, at, plus(at, MINUTE), 10).await?);
    assert_eq!(unlogged_ids(&store, a, 10).await?, NO_IDS, "an attempt owes nothing yet");
    store
        .complete(
            a,
            &[
                (r[0], Outcome::Sent { remote_id: Some("m-1".into()) }),
                (r[1], Outcome::Task { task_id: "t-1".into() }),
                (r[2], failed("blocked", "no")),
                (r[3], Outcome::Retry { at: plus(at, DAY), code: "busy".into(), message: "later".into() }),
            ],
        )
        .await?;
    // r[4] is still being attempted, r[3] waits for its retry: neither has an outcome event.
    assert_eq!(unlogged_ids(&store, a, 10).await?, [r[0], r[1], r[2]]);
    assert_eq!(unlogged_ids(&store, a, 2).await?, [r[0], r[1]]);
    let listed = store.unlogged(a, 10).await?;
    assert_eq!(listed, all_rows(&store, a, c).await?[..3], "unlogged returns the rows as stored");

    store.mark_logged(a, &[r[0], r[2]]).await?;
    assert_eq!(unlogged_ids(&store, a, 10).await?, [r[1]]);
    let rows = all_rows(&store, a, c).await?;
    assert_eq!(rows.iter().map(|r| r.logged).collect::<Vec<_>>(), [true, false, true, true, false]);

    // A delivery is another outcome to log.
    store.complete(a, &[(r[0], Outcome::Delivered)]).await?;
    assert_eq!(unlogged_ids(&store, a, 10).await?, [r[0], r[1]]);
    store.mark_logged(a, &[r[0], r[1]]).await?;
    assert_eq!(unlogged_ids(&store, a, 10).await?, NO_IDS);
    store.mark_logged(a, &[]).await?;
    Ok(())
}

async fn outcomes_recorded_as_logged_owe_nothing(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let c = campaign(&store, a, "c").await?;
    let at = noon();
    store.enqueue(a, service(c, at, items(c, &[1, 2, 3]))).await?;
    let r = claimed_ids(&store.claim(a, at, plus(at, MINUTE), 10).await?);
    store
        .complete_logged(
            a,
            &[
                (r[0], Outcome::Sent { remote_id: Some("m-1".into()) }),
                (r[1], failed("blocked", "no")),
                (r[2], Outcome::Retry { at: plus(at, DAY), code: "busy".into(), message: "later".into() }),
            ],
        )
        .await?;
    assert_eq!(unlogged_ids(&store, a, 10).await?, NO_IDS, "the events were logged with the outcomes");
    let rows = all_rows(&store, a, c).await?;
    let states: Vec<_> = rows.iter().map(|r| (r.state, r.logged, r.remote_id.as_deref())).collect();
    assert_eq!(
        states,
        [(OutboxState::Sent, true, Some("m-1")), (OutboxState::Failed, true, None), (OutboxState::Queued, true, None)]
    );
    assert_eq!((rows[1].error_code.as_deref(), rows[2].due_at), (Some("blocked"), plus(at, DAY)));
    // The same outcome recorded the other way owes its event.
    store.complete(a, &[(r[0], Outcome::Delivered)]).await?;
    assert_eq!(unlogged_ids(&store, a, 10).await?, [r[0]]);
    Ok(())
}

async fn outbox_rows_page_by_id_per_campaign(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let (c1, c2) = (campaign(&store, a, "c1").await?, campaign(&store, a, "c2").await?);
    let at = noon();
    store.enqueue(a, service(c1, at, items(c1, &[1, 2]))).await?;
    store.enqueue(a, service(c2, at, items(c2, &[1]))).await?;
    store.enqueue(a, service(c1, at, items(c1, &[3, 4, 5]))).await?;

    let all = all_rows(&store, a, c1).await?;
    assert_eq!(all.iter().map(|r| r.profile_id).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(all.iter().all(|r| r.campaign_id == c1));
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let page = store.outbox_rows(a, c1, after, 2).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        pages.push(page.iter().map(|r| r.profile_id).collect::<Vec<_>>());
    }
    assert_eq!(pages, [vec![1, 2], vec![3, 4], vec![5]]);
    assert_eq!(store.outbox_rows(a, c1, all[1].id, 100).await?, all[2..]);
    let other = all_rows(&store, a, c2).await?;
    assert_eq!(other.iter().map(|r| (r.campaign_id, r.profile_id)).collect::<Vec<_>>(), [(c2, 1)]);
    assert!(all[1].id < other[0].id && other[0].id < all[2].id, "one id sequence per tenant");
    Ok(())
}

async fn cancelling_stops_only_what_was_not_attempted(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let (c, other) = (campaign(&store, a, "c").await?, campaign(&store, a, "other").await?);
    let at = noon();
    store.enqueue(a, service(c, at, items(c, &[1, 2, 3, 4]))).await?;
    store.enqueue(a, service(other, at, items(other, &[1]))).await?;
    let r = claimed_ids(&store.claim(a, at, plus(at, MINUTE), 2).await?);
    store.complete(a, &[(r[1], Outcome::Sent { remote_id: None })]).await?;

    assert_eq!(store.cancel_queued(a, c).await?, 2);
    let rows = all_rows(&store, a, c).await?;
    assert_eq!(row_ids(&rows[..2]), r);
    assert_eq!(
        rows.iter().map(|r| (r.state, r.logged)).collect::<Vec<_>>(),
        [
            (OutboxState::Attempting, false),
            (OutboxState::Sent, false),
            // Nothing went out, so nothing is owed to the log.
            (OutboxState::Cancelled, true),
            (OutboxState::Cancelled, true),
        ]
    );
    assert_eq!(store.cancel_queued(a, c).await?, 0);
    assert_eq!(all_rows(&store, a, other).await?[0].state, OutboxState::Queued, "another campaign is untouched");
    assert_eq!(store.outbox_pending(a, Some(c)).await?, 1);
    assert_eq!(store.outbox_pending(a, None).await?, 2);
    assert_eq!(
        counts(store.outbox_counts(a, c).await?),
        BTreeMap::from([("attempting", 1), ("cancelled", 2), ("sent", 1)])
    );
    assert_eq!(unlogged_ids(&store, a, 10).await?, [r[1]]);

    // Cancelled messages never come back: a later claim sees the lapsed attempt and the other
    // campaign only.
    let later = store.claim(a, plus(at, HOUR), plus(at, 2 * HOUR), 10).await?;
    let other_row = all_rows(&store, a, other).await?[0].id;
    assert_eq!(claimed_ids(&later), [r[0], other_row]);
    assert_eq!(later.iter().map(|c| c.in_doubt).collect::<Vec<_>>(), [true, false]);
    Ok(())
}

async fn task_rows_are_the_recipients_of_one_task(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let c = campaign(&store, a, "c").await?;
    let at = noon();
    store.enqueue(a, service(c, at, items(c, &[1, 2, 3, 4, 5]))).await?;
    let r = claimed_ids(&store.claim(a, at, plus(at, MINUTE), 10).await?);
    let task = |id: &str| Outcome::Task { task_id: id.into() };
    store
        .complete(
            a,
            &[
                (r[3], task("t-1")),
                (r[0], task("t-1")),
                (r[1], task("t-2")),
                (r[2], task("t-1")),
                (r[4], failed("x", "y")),
            ],
        )
        .await?;
    let rows = all_rows(&store, a, c).await?;
    let t1 = store.task_rows(a, "t-1").await?;
    assert_eq!(t1, vec![rows[0].clone(), rows[2].clone(), rows[3].clone()], "in outbox order");
    assert!(t1.iter().all(|r| r.state == OutboxState::Task && r.remote_id.as_deref() == Some("t-1")));
    assert_eq!(row_ids(&store.task_rows(a, "t-2").await?), [r[1]]);
    assert_eq!(store.task_rows(a, "t-3").await?, vec![]);

    // Once confirmed and delivered, a recipient is no longer waiting on the task.
    store.complete(a, &[(r[2], Outcome::Delivered)]).await?;
    assert_eq!(row_ids(&store.task_rows(a, "t-1").await?), [r[0], r[3]]);
    Ok(())
}

async fn the_outbox_is_isolated(store: Arc<dyn Store>) -> Result<()> {
    let (a, b) = two_tenants(&store).await?;
    let ca = campaign(&store, a, "c").await?;
    let at = noon();
    store.enqueue(a, service(ca, at, items(ca, &[1, 2, 3]))).await?;
    assert_eq!(claimed_ids(&store.claim(b, at, plus(at, MINUTE), 10).await?), NO_IDS, "B claimed A's messages");
    assert_eq!(store.outbox_counts(b, ca).await?, vec![]);
    assert_eq!(store.outbox_rows(b, ca, 0, 10).await?, vec![]);
    assert_eq!(store.outbox_pending(b, None).await?, 0);
    assert_eq!(store.cancel_queued(b, ca).await?, 0);

    let r = claimed_ids(&store.claim(a, at, plus(at, MINUTE), 2).await?);
    // B has no message with these ids: its outcomes must not land on A's.
    store.complete(b, &[(r[0], failed("forged", "by b")), (r[1], Outcome::Sent { remote_id: None })]).await?;
    let rows = all_rows(&store, a, ca).await?;
    assert_eq!(
        rows.iter().map(|r| r.state).collect::<Vec<_>>(),
        [OutboxState::Attempting, OutboxState::Attempting, OutboxState::Queued]
    );
    assert!(rows.iter().all(|r| r.error_code.is_none()));

    store.complete(a, &[(r[0], Outcome::Task { task_id: "task-a".into() }), (r[1], failed("blocked", "no"))]).await?;
    assert_eq!(store.task_rows(b, "task-a").await?, vec![]);
    assert_eq!(store.unlogged(b, 10).await?, vec![]);
    assert_eq!(store.failure_counts(b, ca).await?, vec![]);
    store.mark_logged(b, &r).await?;
    assert_eq!(unlogged_ids(&store, a, 10).await?, r, "B marked A's messages logged");

    // B's own outbox holds only its own.
    let cb = campaign(&store, b, "c").await?;
    store.enqueue(b, service(cb, at, items(cb, &[1]))).await?;
    let theirs = store.claim(b, at, plus(at, MINUTE), 10).await?;
    assert_eq!(theirs.iter().map(|c| (c.row.campaign_id, c.row.profile_id)).collect::<Vec<_>>(), [(cb, 1)]);
    // A keeps its queued message and its task (waiting for a staff member).
    assert_eq!(store.outbox_pending(a, None).await?, 2, "A's unfinished messages");
    assert_eq!(all_rows(&store, a, ca).await?[2].state, OutboxState::Queued);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Staff tasks and suppression lists

async fn staff_tasks_are_upserted_and_filtered_by_campaign(store: Arc<dyn Store>) -> Result<()> {
    let (a, b) = two_tenants(&store).await?;
    let at = noon();
    let t1 = staff_task("t-1", 1, at);
    let t9 = staff_task("t-9", 2, at);
    let t2 = staff_task("t-2", 2, plus(at, MINUTE));
    let t0 = staff_task("t-0", 1, plus(at, 2 * MINUTE));
    for task in [&t0, &t2, &t9, &t1] {
        store.upsert_task(a, task).await?;
    }
    // By creation, then task id.
    assert_eq!(store.tasks(a, None).await?, vec![t1.clone(), t9.clone(), t2.clone(), t0.clone()]);
    assert_eq!(store.tasks(a, Some(1)).await?, vec![t1.clone(), t0.clone()]);
    assert_eq!(store.tasks(a, Some(3)).await?, vec![]);

    let confirmed = StaffTask {
        sender: "li".into(),
        state: TaskState::Confirmed,
        recipients: 4,
        delivered: 2,
        deadline: plus(at, 2 * DAY),
        chased_at: Some(plus(at, HOUR)),
        reassigned_to: Some("li".into()),
        updated_at: plus(at, 2 * HOUR),
        ..t1.clone()
    };
    store.upsert_task(a, &confirmed).await?;
    assert_eq!(store.tasks(a, Some(1)).await?, vec![confirmed.clone(), t0.clone()]);
    assert_eq!(store.tasks(a, None).await?.len(), 4, "an update adds no task");

    assert_eq!(store.tasks(b, None).await?, vec![]);
    let theirs = StaffTask { state: TaskState::Expired, ..t1.clone() };
    store.upsert_task(b, &theirs).await?;
    assert_eq!(store.tasks(b, None).await?, vec![theirs]);
    assert_eq!(store.tasks(b, Some(2)).await?, vec![]);
    assert_eq!(store.tasks(a, Some(1)).await?, vec![confirmed, t0], "B's task of the same id changed A's");
    Ok(())
}

async fn suppressions_are_added_once_listed_and_removed(store: Arc<dyn Store>) -> Result<()> {
    let (a, b) = two_tenants(&store).await?;
    let at = noon();
    let phone = suppression("complaints", "phone", "+8613800138000", "投诉", at);
    let email = suppression("complaints", "email", "x@example.com", "bounced", at);
    let vip = suppression("vip_do_not_disturb", "user_id", "u-1", "VIP", plus(at, MINUTE));
    let again = suppression("complaints", "phone", "+8613800138000", "a second reason", plus(at, HOUR));
    assert_eq!(store.add_suppressions(a, &[vip.clone(), phone.clone(), email.clone(), again]).await?, 3);
    // By list, identity kind, value; a duplicate keeps the first entry.
    assert_eq!(store.suppressions(a).await?, vec![email.clone(), phone.clone(), vip.clone()]);

    let wecom = suppression("complaints", "wecom_external_id", "wm-1", "举报", at);
    assert_eq!(store.add_suppressions(a, &[phone.clone(), wecom.clone()]).await?, 1);
    assert_eq!(store.add_suppressions(a, &[]).await?, 0);

    assert!(!store.remove_suppression(a, "complaints", "email", "+8613800138000").await?, "kind and value together");
    assert!(store.remove_suppression(a, "complaints", "phone", "+8613800138000").await?);
    assert!(!store.remove_suppression(a, "complaints", "phone", "+8613800138000").await?, "removed once");
    assert_eq!(store.suppressions(a).await?, vec![email.clone(), wecom.clone(), vip.clone()]);

    assert_eq!(store.suppressions(b).await?, vec![]);
    assert!(!store.remove_suppression(b, "complaints", "email", "x@example.com").await?, "B removed A's entry");
    assert_eq!(store.add_suppressions(b, std::slice::from_ref(&email)).await?, 1, "B's list is its own");
    assert_eq!(store.suppressions(b).await?, vec![email.clone()]);
    assert!(store.remove_suppression(b, "complaints", "email", "x@example.com").await?);
    assert_eq!(store.suppressions(a).await?, vec![email, wecom, vip]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// WeCom contact ways

async fn contact_ways_are_recorded_once_per_state_and_listed(store: Arc<dyn Store>) -> Result<()> {
    let (a, _) = two_tenants(&store).await?;
    let at = noon();
    let live = contact_way("live-0105", &["zhangsan"], Some(3), plus(at, MINUTE));
    let mut store_front = contact_way("门店-徐汇", &["lisi", "wangwu"], None, at);
    store_front.qr_code = None;
    store_front.remark = None;
    assert!(store.create_contact_way(a, &live).await?);
    assert!(store.create_contact_way(a, &store_front).await?);
    // A state is the attribution key: a second way with it is refused and changes nothing.
    let mut again = contact_way("live-0105", &["someone-else"], None, plus(at, HOUR));
    again.config_id = "cw-other".into();
    assert!(!store.create_contact_way(a, &again).await?);
    // Oldest first, every field as written (unicode, no QR code, no remark, several staff).
    assert_eq!(store.contact_ways(a).await?, vec![store_front.clone(), live.clone()]);
    assert_eq!(store.contact_way(a, "live-0105").await?, Some(live));
    assert_eq!(store.contact_way(a, "门店-徐汇").await?, Some(store_front));
    assert_eq!(store.contact_way(a, "no-such-state").await?, None);
    Ok(())
}

async fn contact_ways_are_isolated(store: Arc<dyn Store>) -> Result<()> {
    let (a, b) = two_tenants(&store).await?;
    let way = contact_way("shared-state", &["zhangsan"], None, noon());
    assert!(store.create_contact_way(a, &way).await?);
    assert_eq!(store.contact_ways(b).await?, vec![]);
    assert_eq!(store.contact_way(b, "shared-state").await?, None);
    // The same state in another tenant is that tenant's own.
    let mut theirs = way.clone();
    theirs.config_id = "cw-b".into();
    assert!(store.create_contact_way(b, &theirs).await?);
    assert_eq!(store.contact_ways(b).await?, vec![theirs]);
    assert_eq!(store.contact_ways(a).await?, vec![way]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Concurrency and restarts: two stores on one database, as two `siyu serve` would be

async fn concurrent_claims_never_share_a_row(db: Db) -> Result<()> {
    let (first, second) = (db.open().await?, db.open().await?);
    let (a, _) = two_tenants(&first).await?;
    let c = campaign(&first, a, "c").await?;
    let at = noon();
    let profiles: Vec<ProfileId> = (1..=60).collect();
    assert_eq!(first.enqueue(a, service(c, at, items(c, &profiles))).await?, queued(at, 60));

    let claimers: Vec<_> = [&first, &first, &second, &second]
        .into_iter()
        .map(|store| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.claim(a, at, plus(at, HOUR), 4).await?;
                    if got.is_empty() {
                        return anyhow::Ok(mine);
                    }
                    mine.extend(claimed_ids(&got));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await??);
    }
    assert_eq!(claimed_ids(&second.claim(a, at, plus(at, HOUR), 100).await?), NO_IDS, "every message was claimed");
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!((all.len(), unique.len()), (60, 60), "a message was claimed twice: {all:?}");
    let rows = all_rows(&first, a, c).await?;
    assert_eq!(rows.iter().map(|r| r.id).collect::<HashSet<_>>(), unique);
    assert!(rows.iter().all(|r| r.state == OutboxState::Attempting && r.attempts == 1));
    Ok(())
}

async fn concurrent_enqueues_never_exceed_the_daily_cap(db: Db) -> Result<()> {
    let (first, second) = (db.open().await?, db.open().await?);
    let (a, _) = two_tenants(&first).await?;
    let profiles: Vec<ProfileId> = (1..=20).collect();
    let mut campaigns = Vec::new();
    for i in 0..6 {
        campaigns.push(campaign(&first, a, &format!("c{i}")).await?);
    }
    let senders: Vec<_> = campaigns
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let store = Arc::clone(if i % 2 == 0 { &first } else { &second });
            let batch = marketing(c, plus(noon(), i as i64 * MINUTE), items(c, &profiles));
            tokio::spawn(async move { store.enqueue(a, batch).await })
        })
        .collect();
    let mut queued_per_profile: BTreeMap<ProfileId, usize> = BTreeMap::new();
    for sender in senders {
        let out = sender.await??;
        assert_eq!(out.len(), profiles.len());
        for (profile, outcome) in profiles.iter().zip(out) {
            match outcome {
                Enqueued::Queued { .. } => *queued_per_profile.entry(*profile).or_default() += 1,
                Enqueued::Held { rule } => assert_eq!(rule, "frequency:marketing_daily"),
                Enqueued::Duplicate => anyhow::bail!("no key was queued before"),
            }
        }
    }
    let once: BTreeMap<ProfileId, usize> = profiles.iter().map(|p| (*p, 1)).collect();
    assert_eq!(queued_per_profile, once, "exactly one message per person");
    let ledgers = second.ledgers(a, Millis(0), &profiles).await?;
    assert!(ledgers.iter().all(|l| l.len() == 1), "one reservation each: {ledgers:?}");
    let mut rows = 0;
    let mut holds = 0;
    for &c in &campaigns {
        rows += all_rows(&first, a, c).await?.len();
        holds += first.hold_counts(a, c).await?.iter().map(|(_, n)| n).sum::<u64>();
    }
    assert_eq!((rows, holds), (20, 100));
    Ok(())
}

/// The ledger is the outbox read by person: a process that opens the store later (nothing in
/// memory) holds back exactly what the first one reserved, retries included at their reserved time.
async fn the_ledger_is_rebuilt_from_the_outbox_on_reopen(db: Db) -> Result<()> {
    let at = noon();
    let (a, c1, c2) = {
        let store = db.open().await?;
        let (a, _) = two_tenants(&store).await?;
        let (c1, c2) = (campaign(&store, a, "c1").await?, campaign(&store, a, "c2").await?);
        assert_eq!(store.enqueue(a, marketing(c1, at, items(c1, &[1, 2]))).await?, queued(at, 2));
        // A retry moves the message's due time, not what it reserved.
        let r = claimed_ids(&store.claim(a, at, plus(at, MINUTE), 10).await?);
        store
            .complete(a, &[(r[0], Outcome::Retry { at: plus(at, DAY), code: "x".into(), message: "y".into() })])
            .await?;
        (a, c1, c2)
    };
    let store = db.open().await?;
    assert_eq!(store.ledgers(a, Millis(0), &[1, 2, 3]).await?, vec![vec![reserved(at)], vec![reserved(at)], vec![]]);
    let later = plus(at, HOUR);
    let out = store.enqueue(a, marketing(c2, later, items(c2, &[1, 2, 3]))).await?;
    assert_eq!(
        out,
        vec![held("frequency:marketing_daily"), held("frequency:marketing_daily"), Enqueued::Queued { at: later }]
    );
    assert_eq!(all_rows(&store, a, c1).await?.len(), 2);
    Ok(())
}

async fn a_lease_lost_with_its_process_comes_back_in_doubt(db: Db) -> Result<()> {
    let at = noon();
    let (a, c, id) = {
        let store = db.open().await?;
        let (a, _) = two_tenants(&store).await?;
        let c = campaign(&store, a, "c").await?;
        store.enqueue(a, service(c, at, items(c, &[1]))).await?;
        let claimed = store.claim(a, at, plus(at, MINUTE), 10).await?;
        assert_eq!(claimed.len(), 1);
        (a, c, claimed[0].row.id)
    };
    // The dispatcher died with its claim: a new process respects the lease, then sees the doubt.
    let store = db.open().await?;
    assert_eq!(claimed_ids(&store.claim(a, plus(at, 30 * SECOND), plus(at, HOUR), 10).await?), NO_IDS);
    let back = store.claim(a, plus(at, 2 * MINUTE), plus(at, HOUR), 10).await?;
    assert_eq!(claimed_ids(&back), [id]);
    assert!(back[0].in_doubt);
    assert_eq!((back[0].row.attempts, back[0].row.attempted_at), (2, Some(at)));
    assert_eq!(store.outbox_pending(a, Some(c)).await?, 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Harness

/// Where one test's data lives. `open` may be called again for a second process or a restart.
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
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let url = dir.path().join("siyu.db").display().to_string();
    test(Db { url, backend: Backend::Sqlite }).await.expect("sqlite reach conformance test failed");
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
        Ok(result) => result.expect("postgres reach conformance test failed"),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// No messages, as a list of outbox ids.
const NO_IDS: [i64; 0] = [];

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn shanghai(local: &str) -> Millis {
    Millis::parse_rfc3339(&format!("{local}+08:00")).expect("a valid time")
}

/// Thursday 3 December 2026, noon in Asia/Shanghai: outside quiet hours, mid-week.
fn noon() -> Millis {
    shanghai("2026-12-03T12:00:00")
}

fn plus(t: Millis, millis: i64) -> Millis {
    Millis(t.0 + millis)
}

async fn two_tenants(store: &Arc<dyn Store>) -> Result<(TenantId, TenantId)> {
    let a = store.create_tenant("a", Industry::ConsumerGoods, &[]).await?.id;
    let b = store.create_tenant("b", Industry::LocalLife, &[]).await?.id;
    Ok((a, b))
}

async fn campaign(store: &Arc<dyn Store>, tenant: TenantId, name: &str) -> Result<i64> {
    Ok(store.create_campaign(tenant, name, "{}", CampaignState::Planning).await?.id)
}

fn guardrails(rules: ReachRules) -> Arc<Guardrails> {
    Arc::new(Guardrails::new(&rules).expect("valid reach rules"))
}

/// The default caps (1 marketing message a day, 4 a week) without quiet hours, so that a case
/// does not depend on the hour it is sent at unless it asks for quiet hours.
fn daytime_rules() -> ReachRules {
    ReachRules { quiet_hours: None, ..ReachRules::default() }
}

fn content(profile: ProfileId) -> String {
    format!(r#"{{"text":"你好 {profile}"}}"#)
}

fn item(profile: ProfileId, key: &str) -> EnqueueItem {
    EnqueueItem {
        profile_id: profile,
        key: key.to_string(),
        person: PersonReach { has_address: true, ..PersonReach::default() },
        recipient_kind: "user_id".into(),
        recipient_value: format!("u-{profile}"),
        content: content(profile),
    }
}

/// Keyed as the engine keys them: `c{campaign}-p{profile}`.
fn items(campaign: i64, profiles: &[ProfileId]) -> Vec<EnqueueItem> {
    profiles.iter().map(|&p| item(p, &format!("c{campaign}-p{p}"))).collect()
}

/// A batch on a channel no platform quota applies to, so only the frequency caps count.
fn batch(campaign: i64, purpose: Purpose, at: Millis, items: Vec<EnqueueItem>) -> EnqueueBatch {
    EnqueueBatch {
        campaign_id: campaign,
        channel: Channel::App,
        account: "brand-app".into(),
        account_type: None,
        scope: SendScope::Direct,
        purpose,
        sender: None,
        at,
        guardrails: guardrails(daytime_rules()),
        items,
        plan_size: 0,
    }
}

fn marketing(campaign: i64, at: Millis, items: Vec<EnqueueItem>) -> EnqueueBatch {
    batch(campaign, Purpose::Marketing, at, items)
}

fn service(campaign: i64, at: Millis, items: Vec<EnqueueItem>) -> EnqueueBatch {
    batch(campaign, Purpose::Service, at, items)
}

/// The ledger entry of one marketing message of [`batch`].
fn reserved(at: Millis) -> Sent {
    Sent { at, channel: Channel::App, scope: SendScope::Direct, marketing: true, staff: None }
}

fn queued(at: Millis, n: usize) -> Vec<Enqueued> {
    vec![Enqueued::Queued { at }; n]
}

fn held(rule: &str) -> Enqueued {
    Enqueued::Held { rule: rule.to_string() }
}

fn failed(code: &str, message: &str) -> Outcome {
    Outcome::Failed { code: code.into(), message: message.into() }
}

async fn all_rows(store: &Arc<dyn Store>, tenant: TenantId, campaign: i64) -> Result<Vec<OutboxRow>> {
    Ok(store.outbox_rows(tenant, campaign, 0, 10_000).await?)
}

async fn row_ids_by_profile(
    store: &Arc<dyn Store>,
    tenant: TenantId,
    campaign: i64,
) -> Result<BTreeMap<ProfileId, i64>> {
    Ok(all_rows(store, tenant, campaign).await?.into_iter().map(|r| (r.profile_id, r.id)).collect())
}

async fn unlogged_ids(store: &Arc<dyn Store>, tenant: TenantId, limit: usize) -> Result<Vec<i64>> {
    Ok(row_ids(&store.unlogged(tenant, limit).await?))
}

fn claimed_ids(claimed: &[Claimed]) -> Vec<i64> {
    claimed.iter().map(|c| c.row.id).collect()
}

fn row_ids(rows: &[OutboxRow]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

/// Each claimed row is the row as stored after the claim (`updated_at` aside: when a back-end
/// stamps it is not part of the contract).
fn assert_same_rows(claimed: &[Claimed], stored: &[OutboxRow]) {
    let unstamped = |row: &OutboxRow| OutboxRow { updated_at: Millis(0), ..row.clone() };
    for c in claimed {
        let row = stored.iter().find(|r| r.id == c.row.id).expect("a claimed row is stored");
        assert_eq!(unstamped(&c.row), unstamped(row));
    }
}

type OutcomeOf = (OutboxState, Option<String>, Option<String>, Option<String>, Millis, bool);

fn outcome_of(row: &OutboxRow) -> OutcomeOf {
    (row.state, row.remote_id.clone(), row.error_code.clone(), row.error_message.clone(), row.due_at, row.logged)
}

/// Counts per state, in a fixed order (the trait promises none).
fn counts(counts: Vec<(OutboxState, u64)>) -> BTreeMap<&'static str, u64> {
    counts.into_iter().map(|(state, n)| (state.as_str(), n)).collect()
}

fn staff_task(id: &str, campaign: i64, created_at: Millis) -> StaffTask {
    StaffTask {
        task_id: id.to_string(),
        campaign_id: campaign,
        account: "wecom-corp".into(),
        sender: "zhang".into(),
        state: TaskState::Created,
        recipients: 3,
        delivered: 0,
        created_at,
        deadline: plus(created_at, DAY),
        chased_at: None,
        reassigned_to: None,
        updated_at: created_at,
    }
}

fn contact_way(state: &str, staff: &[&str], campaign_id: Option<i64>, created_at: Millis) -> ContactWayRecord {
    ContactWayRecord {
        state: state.into(),
        config_id: format!("cw-{state}"),
        qr_code: Some(format!("https://wework.qpic.cn/wwpic/{state}/0")),
        account: "brand-wecom".into(),
        staff: staff.iter().map(|s| s.to_string()).collect(),
        campaign_id,
        remark: Some("直播间".into()),
        created_at,
    }
}

fn suppression(list: &str, kind: &str, value: &str, reason: &str, created_at: Millis) -> Suppression {
    Suppression {
        list: list.into(),
        identity_kind: kind.into(),
        identity_value: value.into(),
        reason: reason.into(),
        created_at,
    }
}
