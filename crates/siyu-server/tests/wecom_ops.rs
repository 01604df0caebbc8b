//! The WeCom operations over HTTP against siyu-connect's WeCom stand-in (WeCom's documented JSON):
//! contact ways created in WeCom, recorded, and credited with the adds, orders and revenue of the
//! people added through them; the external-contact sync, idempotent; tags marked in WeCom for a
//! segment's members, with WeCom's errcode per failure. Each case runs on SQLite, and on
//! PostgreSQL when `SIYU_TEST_DATABASE_URL` names a server.

// Each test binary compiles the shared helpers on its own and uses a part of them.
#[allow(dead_code)]
#[macro_use]
mod helpers;

use std::time::Duration;

use helpers::{days_ago, Tenant, TestApp};
use serde_json::{json, Value};
use siyu_connect::wecom::stand_in::{RateLimit, StandInConfig, StandInHandle, WeComStandIn};

backend_tests! {
    case_contact_ways_are_created_recorded_and_attributed,
    case_contact_way_refusals_have_their_codes,
    case_sync_ingests_each_relation_once,
    case_mark_tag_reaches_the_staff_members_customers,
    case_mark_tag_reports_wecom_errcodes,
}

const ACCOUNT: &str = "brand-wecom";

/// A stand-in where zhangsan has `n` customers `wm-z<i>` and lisi has `wm-l1`.
async fn stand_in(zhangsan: usize, rate_limit: Option<RateLimit>) -> (String, StandInHandle) {
    let mut contacts: Vec<(String, String)> = (1..=zhangsan).map(|i| ("zhangsan".into(), format!("wm-z{i}"))).collect();
    contacts.push(("lisi".into(), "wm-l1".into()));
    WeComStandIn::start(StandInConfig { contacts, rate_limit, ..StandInConfig::default() })
        .await
        .expect("failed to start the wecom stand-in")
}

/// Gives the tenant the `brand-wecom` account on the stand-in (and `secret` as its corp secret).
async fn set_account(app: &TestApp, t: &Tenant, base_url: &str, secret: &str) {
    let config = StandInConfig::default();
    let mut settings = app.get(&t.secret_key, "/api/v1/settings").await.ok();
    settings["send_accounts"] = json!({
        ACCOUNT: {"channel": "wecom", "connector": "wecom", "base_url": base_url,
                  "credentials": {"corp_id": config.corp_id, "corp_secret": secret},
                  "staff": ["zhangsan", "lisi"]},
        "dry": {"channel": "wecom", "connector": "log", "base_url": "/dev/null"},
    });
    app.put(&t.secret_key, "/api/v1/settings", &settings).await.ok();
}

async fn tenant_on(app: &TestApp, base_url: &str) -> Tenant {
    let t = app.tenant("shop").await;
    set_account(app, &t, base_url, &StandInConfig::default().corp_secret).await;
    t
}

/// A native event of a WeCom customer `days` ago.
fn wecom_event(id: &str, kind: &str, customer: &str, days: f64) -> Value {
    json!({"message_id": id, "type": kind, "channel": "wecom", "account": ACCOUNT,
           "identities": {"wecom_external_userid": customer}, "timestamp": days_ago(days)})
}

/// A `wecom_add` as the add-contact callback makes it: source `contact_way:<state>`.
fn added_through(id: &str, customer: &str, state: &str, days: f64) -> Value {
    let mut event = wecom_event(id, "wecom_add", customer, days);
    event["source"] = json!({"kind": "contact_way", "id": state});
    event["properties"] = json!({"staff_userid": "zhangsan", "state": state, "change_type": "add_external_contact"});
    event
}

fn order(id: &str, kind: &str, customer: &str, amount: f64, days: f64) -> Value {
    let mut event = wecom_event(id, kind, customer, days);
    event["amount"] = json!(amount);
    event
}

fn way<'a>(list: &'a Value, state: &str) -> &'a Value {
    list.as_array().expect("a list").iter().find(|w| w["state"] == state).unwrap_or_else(|| panic!("{state} in {list}"))
}

async fn case_contact_ways_are_created_recorded_and_attributed(app: &TestApp) {
    let (base_url, stand_in) = stand_in(2, None).await;
    let t = tenant_on(app, &base_url).await;
    let request = json!({"account": ACCOUNT, "staff": ["zhangsan"], "state": "live-0105", "remark": "直播间",
                         "single": true});
    let created = app.post(&t.secret_key, "/api/v1/contact-ways", &request).await.ok();
    assert_eq!(created["state"], "live-0105", "{created}");
    assert_eq!(created["staff"], json!(["zhangsan"]), "{created}");
    assert_eq!(created["remark"], "直播间", "{created}");
    assert_eq!(created["attribution"]["adds"], 0, "{created}");
    let config_id = created["config_id"].as_str().expect("config_id").to_string();
    assert!(created["qr_code"].as_str().is_some_and(|q| q.contains(&config_id)), "{created}");
    // WeCom got a single-person QR-code way with that state.
    let received = stand_in.state.received();
    assert_eq!(received.contact_ways.len(), 1);
    let sent = &received.contact_ways[0];
    assert_eq!(sent.config_id, config_id);
    assert_eq!(
        (sent.request["type"].clone(), sent.request["scene"].clone(), sent.request["user"].clone()),
        (json!(1), json!(2), json!(["zhangsan"]))
    );
    assert_eq!(sent.request["state"], "live-0105");

    // Without a state, one is made: short, and unique in the tenant.
    let multi = json!({"account": ACCOUNT, "staff": ["zhangsan", "lisi"]});
    let generated = app.post(&t.secret_key, "/api/v1/contact-ways", &multi).await.ok();
    let state = generated["state"].as_str().expect("a generated state").to_string();
    assert!(state.starts_with("cw") && state.chars().count() <= 30, "{generated}");
    assert_eq!(stand_in.state.received().contact_ways[1].request["type"], 2);
    assert_eq!(stand_in.state.received().contact_ways[1].request["state"], state.as_str());

    // Adds through live-0105 (as the callback writes them), orders after, a delete, and adds
    // from elsewhere that must not count.
    app.ingest(
        &t.write_key,
        vec![
            order("o-before", "order_paid", "wm-z2", 50.0, 9.0),
            added_through("add-1", "wm-z1", "live-0105", 5.0),
            added_through("add-2", "wm-z2", "live-0105", 4.0),
            order("o-1", "order_paid", "wm-z1", 99.0, 3.0),
            order("o-2", "order_paid", "wm-z2", 30.0, 2.5),
            order("r-2", "order_refunded", "wm-z2", 10.0, 2.0),
            wecom_event("del-2", "wecom_delete", "wm-z2", 1.0),
            added_through("add-3", "wm-l1", "other-code", 3.0),
            wecom_event("add-4", "wecom_add", "wm-x", 3.0),
        ],
    )
    .await;
    let list = app.get(&t.secret_key, "/api/v1/contact-ways").await.ok();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let live = &way(&list, "live-0105")["attribution"];
    assert_eq!(
        *live,
        json!({"adds": 2, "add_events": 2, "still_contacts": 1, "buyers": 2, "first_orders": 1, "orders": 2,
               "net_revenue": 119.0}),
        "wm-z2 bought before the add (not a first order) and deleted us: {list}"
    );
    assert_eq!(way(&list, &state)["attribution"]["adds"], 0, "{list}");
    assert_eq!(way(&list, "live-0105")["config_id"], config_id.as_str());

    // A rebuild derives the same counts from the log.
    app.engine.rebuild(t.id).await.expect("rebuild");
    assert_eq!(app.get(&t.secret_key, "/api/v1/contact-ways").await.ok(), list);
}

async fn case_contact_way_refusals_have_their_codes(app: &TestApp) {
    let (base_url, stand_in) = stand_in(1, None).await;
    let t = tenant_on(app, &base_url).await;
    let post = |body: Value| {
        let key = t.secret_key.clone();
        async move { app.post(&key, "/api/v1/contact-ways", &body).await }
    };
    post(json!({"account": ACCOUNT, "staff": ["zhangsan"], "state": "s-1"})).await.ok();
    let again = post(json!({"account": ACCOUNT, "staff": ["lisi"], "state": "s-1"})).await;
    again.assert_error(409, "name_taken");
    again.assert_field("state");
    for (body, field) in [
        (json!({"account": ACCOUNT, "staff": ["zhangsan", "lisi"], "single": true}), "staff"),
        (json!({"account": ACCOUNT, "staff": []}), "staff"),
        (json!({"account": ACCOUNT, "staff": ["zhangsan"], "state": "x".repeat(31)}), "state"),
        (json!({"account": ACCOUNT, "staff": ["zhangsan"], "remark": "备".repeat(31)}), "remark"),
        (json!({"account": "dry", "staff": ["zhangsan"]}), "account"),
    ] {
        let reply = post(body.clone()).await;
        reply.assert_error(400, "invalid_request");
        reply.assert_field(field);
    }
    post(json!({"account": "nope", "staff": ["zhangsan"]})).await.assert_error(404, "no_send_account");
    post(json!({"account": ACCOUNT, "staff": ["zhangsan"], "campaign_id": 9}))
        .await
        .assert_error(404, "no_such_campaign");
    assert_eq!(stand_in.state.received().contact_ways.len(), 1, "nothing refused reached WeCom");

    // WeCom's own refusal: a wrong corp secret is errcode 40001 at gettoken, answered 502.
    set_account(app, &t, &base_url, "wrong-secret").await;
    let refused = post(json!({"account": ACCOUNT, "staff": ["zhangsan"], "state": "s-2"})).await;
    refused.assert_error(502, "wecom_error");
    assert!(refused.text.contains("errcode 40001"), "{}", refused.text);
    assert!(!refused.text.contains("wrong-secret"), "the secret leaked: {}", refused.text);
    let list = app.get(&t.secret_key, "/api/v1/contact-ways").await.ok();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "a refused way is not recorded: {list}");
}

async fn case_sync_ingests_each_relation_once(app: &TestApp) {
    // 130 customers of zhangsan: two pages of batch/get_by_user.
    let (base_url, stand_in) = stand_in(130, None).await;
    let t = tenant_on(app, &base_url).await;
    // lisi's customer came through a contact way: the sync attributes the add to it.
    let code = json!({"account": ACCOUNT, "staff": ["lisi"], "state": "sync-code"});
    app.post(&t.secret_key, "/api/v1/contact-ways", &code).await.ok();
    stand_in.state.add_contact_through("lisi", "wm-l1", "sync-code");
    let first = app.post(&t.secret_key, "/api/v1/wecom/sync", &json!({"account": ACCOUNT})).await.ok();
    assert_eq!(first, json!({"staff": 2, "contacts": 131, "new_events": 131, "duplicates": 0}));
    assert!(stand_in.state.received().calls_to("/cgi-bin/externalcontact/batch/get_by_user") >= 2);
    let again = app.post(&t.secret_key, "/api/v1/wecom/sync", &json!({"account": ACCOUNT})).await.ok();
    assert_eq!(again, json!({"staff": 2, "contacts": 131, "new_events": 0, "duplicates": 131}), "idempotent");

    let summary = app.get(&t.secret_key, "/api/v1/summary").await.ok();
    assert_eq!((summary["profiles"].clone(), summary["events"].clone()), (json!(131), json!(131)), "{summary}");
    let profile = app.lookup(&t.secret_key, "wecom_external_userid", "wm-z7").await.expect("a synced customer");
    let events = app.get(&t.secret_key, &format!("/api/v1/profiles/{}/events", profile["id"])).await.ok();
    let event = &events.as_array().expect("events")[0];
    assert_eq!(event["type"], "wecom_add", "{event}");
    assert_eq!(event["message_id"], "wecom-sync:ww-stand-in:zhangsan:wm-z7", "{event}");
    // The stand-in's follow time (createtime 1700000000).
    assert!(event["timestamp"].as_str().is_some_and(|t| t.starts_with("2023-11-14T22:13:20")), "{event}");
    assert!(profile.to_string().contains("customer wm-z7"), "the name is a trait: {profile}");

    let ways = app.get(&t.secret_key, "/api/v1/contact-ways").await.ok();
    assert_eq!((way(&ways, "sync-code")["attribution"]["adds"].clone()), json!(1), "{ways}");
    let synced = app.lookup(&t.secret_key, "wecom_external_userid", "wm-l1").await.expect("lisi's customer");
    let events = app.get(&t.secret_key, &format!("/api/v1/profiles/{}/events", synced["id"])).await.ok();
    assert_eq!(events[0]["source"], "contact_way:sync-code", "{events}");
    assert_eq!(events[0]["properties"]["staff_userid"], "lisi", "{events}");

    // One staff member only, by request; an account without staff needs them named.
    let lisi = app.post(&t.secret_key, "/api/v1/wecom/sync", &json!({"account": ACCOUNT, "staff": ["lisi"]})).await;
    assert_eq!(lisi.ok(), json!({"staff": 1, "contacts": 1, "new_events": 0, "duplicates": 1}));
    let reply = app.post(&t.secret_key, "/api/v1/wecom/sync", &json!({"account": "nope"})).await;
    reply.assert_error(404, "no_send_account");
}

async fn case_mark_tag_reaches_the_staff_members_customers(app: &TestApp) {
    let (base_url, stand_in) = stand_in(2, None).await;
    let t = tenant_on(app, &base_url).await;
    app.ingest(
        &t.write_key,
        vec![
            wecom_event("a-1", "wecom_add", "wm-z1", 3.0),
            wecom_event("a-2", "wecom_add", "wm-z2", 3.0),
            wecom_event("a-3", "wecom_add", "wm-l1", 3.0),
            json!({"message_id": "a-4", "type": "like", "channel": "wecom", "account": ACCOUNT,
                   "identities": {"user_id": "no-wecom-id"}, "timestamp": days_ago(2.0)}),
        ],
    )
    .await;
    let segment = json!({"name": "wecom", "condition": "channel = wecom"});
    let segment = app.post(&t.secret_key, "/api/v1/segments", &segment).await.ok();
    assert_eq!(segment["size"], 4, "{segment}");
    let request = json!({"account": ACCOUNT, "staff": "zhangsan", "segment_id": segment["id"],
                         "add_tag": ["et-vip"], "remove_tag": ["et-new"]});
    let report = app.post(&t.secret_key, "/api/v1/wecom/mark-tag", &request).await.ok();
    assert_eq!(
        report,
        json!({"members": 4, "addressed": 3, "not_contacts": 1, "tagged": 2, "failed": 0, "failures": []}),
        "wm-l1 is lisi's customer, not zhangsan's"
    );
    let tags = stand_in.state.received().tags;
    let mut tagged: Vec<(String, String)> =
        tags.iter().map(|t| (t.userid.clone(), t.external_userid.clone())).collect();
    tagged.sort();
    assert_eq!(tagged, [("zhangsan".to_string(), "wm-z1".to_string()), ("zhangsan".into(), "wm-z2".into())]);
    assert!(tags.iter().all(|t| t.add_tag == ["et-vip"] && t.remove_tag == ["et-new"]), "{tags:?}");

    let no_tags = json!({"account": ACCOUNT, "staff": "zhangsan", "segment_id": segment["id"]});
    let reply = app.post(&t.secret_key, "/api/v1/wecom/mark-tag", &no_tags).await;
    reply.assert_error(400, "invalid_request");
    reply.assert_field("add_tag");
    let no_segment = json!({"account": ACCOUNT, "staff": "zhangsan", "segment_id": 99, "add_tag": ["et-vip"]});
    app.post(&t.secret_key, "/api/v1/wecom/mark-tag", &no_segment).await.assert_error(404, "no_such_segment");
}

async fn case_mark_tag_reports_wecom_errcodes(app: &TestApp) {
    // Two API calls a minute: the contact list and the first mark_tag pass, the second gets 45009.
    let limit = RateLimit { max_calls: 2, window: Duration::from_secs(600) };
    let (base_url, stand_in) = stand_in(2, Some(limit)).await;
    let t = tenant_on(app, &base_url).await;
    app.ingest(
        &t.write_key,
        vec![wecom_event("a-1", "wecom_add", "wm-z1", 3.0), wecom_event("a-2", "wecom_add", "wm-z2", 3.0)],
    )
    .await;
    let segment = json!({"name": "all", "condition": "channel = wecom"});
    let segment = app.post(&t.secret_key, "/api/v1/segments", &segment).await.ok();
    let request = json!({"account": ACCOUNT, "staff": "zhangsan", "segment_id": segment["id"], "add_tag": ["et-1"]});
    let report = app.post(&t.secret_key, "/api/v1/wecom/mark-tag", &request).await.ok();
    assert_eq!((report["tagged"].clone(), report["failed"].clone()), (json!(1), json!(1)), "{report}");
    let failure = &report["failures"][0];
    assert_eq!(failure["code"], "45009", "{report}");
    assert!(failure["external_userid"].as_str().is_some_and(|id| id.starts_with("wm-z")), "{report}");
    assert_eq!(stand_in.state.received().tags.len(), 1);
}
