//! The black-box API suite: every case starts the real router on a port over a fresh store and
//! talks HTTP to it, as an SDK or the console would. Each case runs on SQLite, and on PostgreSQL
//! too when `SIYU_TEST_DATABASE_URL` names a server (see `helpers`).

#[macro_use]
mod helpers;

use std::collections::BTreeSet;
use std::io::Write as _;

use helpers::{days_ago, Reply, TestApp};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use siyu_model::Millis;

backend_tests! {
    case_json_bodies_need_no_json_content_type,
    case_native_single_batch_and_retries,
    case_native_bad_input_is_refused_with_codes,
    case_auth_limits_and_unknown_routes,
    case_auth_rejections_are_counted_in_metrics,
    case_each_refused_item_is_counted_once,
    case_malformed_query_path_and_body_are_json_errors,
    case_segment_calls_keys_and_encodings,
    case_segment_commerce_identify_and_alias,
    case_segment_limits,
    case_segment_clock_skew_is_corrected,
    case_identity_merge_and_unmerge,
    case_profile_filters_pagination_and_summary,
    case_as_of_evaluation,
    case_as_of_ignores_later_events,
    case_timeline_is_newest_first_with_paging,
    case_settings_round_trip_and_rescore,
    case_tenant_isolation_on_every_route,
    case_same_message_id_in_two_tenants,
    case_ops_endpoints,
    case_tags_and_segments_end_to_end,
    case_condition_errors_at_save_time,
    case_rule_tags,
}

// ---------------------------------------------------------------------------------------------
// helpers local to the cases

/// A native event `days` ago on `channel`.
fn event(message_id: &str, kind: &str, channel: &str, identities: Value, days: f64) -> Value {
    json!({
        "message_id": message_id,
        "type": kind,
        "channel": channel,
        "account": "brand-main",
        "identities": identities,
        "timestamp": days_ago(days),
    })
}

/// `value` with `key` set.
fn with(mut value: Value, key: &str, field: Value) -> Value {
    value[key] = field;
    value
}

fn ids_of(page: &Value) -> BTreeSet<u64> {
    page["items"].as_array().expect("items").iter().map(|p| p["id"].as_u64().expect("id")).collect()
}

/// Query parameters of a profile list.
type Query = Vec<(&'static str, String)>;

fn set(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

/// Whether `/metrics` counted a rejection with this code.
fn counted(metrics: &str, code: &str) -> bool {
    let needle = format!("siyu_events_rejected_total{{code=\"{code}\"}} ");
    metrics.lines().any(|line| line.starts_with(&needle))
}

/// The value of an unlabelled counter or gauge line.
fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{metrics}"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// A Segment call with the write key as basic-auth user and an empty password.
async fn segment(app: &TestApp, key: &str, call: &str, body: &Value) -> Reply {
    app.send(app.client.post(app.url(&format!("/v1/{call}"))).basic_auth(key, Some("")).json(body)).await
}

/// Millis from a timeline's RFC 3339 timestamp.
fn millis(text: &Value) -> Millis {
    Millis::parse_rfc3339(text.as_str().expect("a timestamp string")).expect("an RFC 3339 timestamp")
}

// ---------------------------------------------------------------------------------------------
// 1. native ingestion

async fn case_native_single_batch_and_retries(app: &TestApp) {
    let t = app.tenant("acme").await;
    let user = json!({"user_id": "u-native"});

    let single = event("n-1", "like", "douyin", user.clone(), 3.0);
    let first = app.events(&t.write_key, &single).await.ok();
    assert_eq!(first, json!({"accepted": 1, "duplicates": 0, "errors": []}));
    // A retry of the same message_id is acknowledged but not appended again.
    let retry = app.events(&t.write_key, &single).await.ok();
    assert_eq!(retry, json!({"accepted": 0, "duplicates": 1, "errors": []}));
    let profile = app.lookup(&t.secret_key, "user_id", "u-native").await.expect("profile");
    assert_eq!(profile["event_count"], 1);

    // Good items are kept, bad ones reported by index with code and field.
    let mixed = json!({"batch": [
        event("n-2", "comment", "douyin", user.clone(), 2.5),
        {"message_id": "n-bad-1", "type": "Like!", "identities": {"user_id": "u-native"}},
        event("n-3", "share", "douyin", user.clone(), 2.0),
        {"message_id": "n-bad-2", "type": "like"},
        single.clone(),
        event("n-4", "view", "web", user.clone(), 1.0),
        event("n-4", "view", "web", user.clone(), 1.0),
    ]});
    let reply = app.events(&t.write_key, &mixed).await.ok();
    assert_eq!(reply["accepted"], 3, "{reply}");
    assert_eq!(reply["duplicates"], 2, "the retried n-1 and the second n-4 are duplicates: {reply}");
    let errors = reply["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{reply}");
    assert_eq!((errors[0]["index"].clone(), errors[0]["code"].clone()), (json!(1), json!("unknown_event_type")));
    assert_eq!(errors[0]["field"], "type");
    assert_eq!((errors[1]["index"].clone(), errors[1]["code"].clone()), (json!(3), json!("missing_identity")));
    assert_eq!(errors[1]["field"], "identities");
    assert!(errors.iter().all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty())));

    // Retrying the whole batch appends nothing.
    let again = app.events(&t.write_key, &mixed).await.ok();
    assert_eq!((again["accepted"].clone(), again["duplicates"].clone()), (json!(0), json!(5)), "{again}");
    let profile = app.lookup(&t.secret_key, "user_id", "u-native").await.expect("profile");
    assert_eq!(profile["event_count"], 4, "n-1..n-4 once each: {profile}");

    // Nothing acceptable: 400 with the first error's code, message and field, plus every item.
    let all_bad = json!({"batch": [
        {"message_id": "n-bad-1", "type": "Like!", "identities": {"user_id": "u-native"}},
        {"message_id": "n-bad-2", "type": "like"},
    ]});
    let reply = app.events(&t.write_key, &all_bad).await;
    reply.assert_error(400, "unknown_event_type");
    reply.assert_field("type");
    assert_eq!(reply.json["errors"].as_array().map(Vec::len), Some(2));
    insta::assert_json_snapshot!("native_all_bad_batch", reply.json);

    let empty = app.events(&t.write_key, &json!({"batch": []})).await;
    empty.assert_error(400, "empty_batch");
    empty.assert_field("batch");

    let summary = app.get(&t.secret_key, "/api/v1/summary").await.ok();
    assert_eq!(summary["events"], 4, "{summary}");
    assert_eq!(summary["profiles"], 1, "{summary}");
}

// ---------------------------------------------------------------------------------------------
// 2. bad input

async fn case_native_bad_input_is_refused_with_codes(app: &TestApp) {
    let t = app.tenant("acme").await;
    let cases: Vec<(&str, Vec<u8>, &str, Option<&str>)> = vec![
        ("malformed json", br#"{"type": "like", "identities": {"user_id": "u"}"#.to_vec(), "invalid_json", None),
        (
            "unknown type",
            br#"{"type": "Like!", "identities": {"user_id": "u"}}"#.to_vec(),
            "unknown_event_type",
            Some("type"),
        ),
        ("missing identities", br#"{"type": "like"}"#.to_vec(), "missing_identity", Some("identities")),
        (
            "invalid phone",
            br#"{"type": "like", "identities": {"phone": "12345"}}"#.to_vec(),
            "invalid_identity",
            Some("identities.phone"),
        ),
        (
            "far-future timestamp",
            br#"{"type": "like", "identities": {"user_id": "u"}, "timestamp": "2099-01-01T00:00:00Z"}"#.to_vec(),
            "timestamp_in_future",
            Some("timestamp"),
        ),
        (
            "amount with three decimals",
            br#"{"type": "order_paid", "identities": {"user_id": "u"}, "amount": 19.999}"#.to_vec(),
            "invalid_amount",
            Some("amount"),
        ),
        (
            "order without amount",
            br#"{"type": "order_paid", "identities": {"user_id": "u"}}"#.to_vec(),
            "missing_field",
            Some("amount"),
        ),
        (
            "unknown field",
            br#"{"type": "like", "identities": {"user_id": "u"}, "colour": "red"}"#.to_vec(),
            "unknown_field",
            Some("colour"),
        ),
        (
            "non-utf-8 body",
            b"{\"type\": \"like\", \"identities\": {\"user_id\": \"\xff\xfe\"}}".to_vec(),
            "invalid_encoding",
            None,
        ),
    ];
    for (what, body, code, field) in &cases {
        let reply = app
            .send(
                app.client
                    .post(app.url("/api/v1/events"))
                    .bearer_auth(&t.write_key)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone()),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}: {}", reply.text);
        reply.assert_error(400, code);
        assert_eq!(reply.json["field"].as_str(), *field, "{what}: {}", reply.text);
        match *code {
            "unknown_event_type" => insta::assert_json_snapshot!("native_unknown_event_type", reply.json),
            "timestamp_in_future" => insta::assert_json_snapshot!("native_timestamp_in_future", reply.json),
            "invalid_json" => insta::assert_json_snapshot!("native_invalid_json", reply.json),
            _ => {}
        }
    }
    let metrics = app.metrics().await;
    for (what, _, code, _) in &cases {
        assert!(counted(&metrics, code), "{what}: {code} is not counted in /metrics:\n{metrics}");
    }
    // Nothing of it reached the log.
    let summary = app.get(&t.secret_key, "/api/v1/summary").await.ok();
    assert_eq!(summary["events"], 0, "{summary}");
    assert_eq!(summary["profiles"], 0, "{summary}");
}

async fn case_auth_limits_and_unknown_routes(app: &TestApp) {
    let t = app.tenant("acme").await;
    let like = event("a-1", "like", "douyin", json!({"user_id": "u"}), 1.0);

    let missing = app.send(app.client.post(app.url("/api/v1/events")).json(&like)).await;
    missing.assert_error(401, "missing_key");
    insta::assert_json_snapshot!("missing_key", missing.json);

    let wrong = app.events("wk_not_a_key_of_anyone", &like).await;
    wrong.assert_error(401, "invalid_key");
    insta::assert_json_snapshot!("invalid_key", wrong.json);

    for path in
        ["/api/v1/profiles", "/api/v1/summary", "/api/v1/settings", "/api/v1/identity/refusals", "/api/v1/accounts"]
    {
        let forbidden = app.get(&t.write_key, path).await;
        forbidden.assert_error(403, "forbidden");
        if path == "/api/v1/profiles" {
            insta::assert_json_snapshot!("forbidden", forbidden.json);
        }
    }
    let put = app.put(&t.write_key, "/api/v1/settings", &json!({})).await;
    put.assert_error(403, "forbidden");

    // The secret key may ingest too; basic auth works on the native API as well.
    app.events(&t.secret_key, &like).await.ok();
    let basic = app
        .send(app.client.post(app.url("/api/v1/events")).basic_auth(&t.write_key, Some("")).json(&event(
            "a-2",
            "like",
            "douyin",
            json!({"user_id": "u"}),
            1.0,
        )))
        .await
        .ok();
    assert_eq!(basic["accepted"], 1);

    // Over 8 MiB: refused before parsing.
    let huge = vec![b' '; 8 * 1024 * 1024 + 1];
    let too_large = app
        .send(
            app.client
                .post(app.url("/api/v1/events"))
                .bearer_auth(&t.write_key)
                .header(CONTENT_TYPE, "application/json")
                .body(huge),
        )
        .await;
    too_large.assert_error(413, "payload_too_large");
    insta::assert_json_snapshot!("native_payload_too_large", too_large.json);
    // Exactly the limit is not "too large" (it is just not JSON).
    let at_limit = app
        .send(
            app.client
                .post(app.url("/api/v1/events"))
                .bearer_auth(&t.write_key)
                .header(CONTENT_TYPE, "application/json")
                .body(vec![b' '; 8 * 1024 * 1024]),
        )
        .await;
    at_limit.assert_error(400, "invalid_json");

    for path in ["/api/v1/nope", "/nope", "/api/v2/events"] {
        let unknown = app.get(&t.secret_key, path).await;
        unknown.assert_error(404, "no_such_route");
        if path == "/api/v1/nope" {
            insta::assert_json_snapshot!("no_such_route", unknown.json);
        }
    }
    let unknown_call = segment(app, &t.write_key, "nope", &json!({"userId": "u", "event": "x"})).await;
    unknown_call.assert_error(404, "no_such_route");

    let metrics = app.metrics().await;
    for code in ["payload_too_large", "no_such_route"] {
        assert!(counted(&metrics, code), "{code} is not counted in /metrics:\n{metrics}");
    }
    let summary = app.get(&t.secret_key, "/api/v1/summary").await.ok();
    assert_eq!(summary["events"], 2, "{summary}");
}

/// Every refused request is counted by code, authentication failures on the native API included
/// (the Segment API already counts them).
async fn case_auth_rejections_are_counted_in_metrics(app: &TestApp) {
    let t = app.tenant("acme").await;
    let like = event("c-1", "like", "douyin", json!({"user_id": "u"}), 1.0);
    app.send(app.client.post(app.url("/api/v1/events")).json(&like)).await.assert_error(401, "missing_key");
    app.events("wk_not_a_key_of_anyone", &like).await.assert_error(401, "invalid_key");
    app.get(&t.write_key, "/api/v1/profiles").await.assert_error(403, "forbidden");
    let metrics = app.metrics().await;
    for code in ["missing_key", "invalid_key", "forbidden"] {
        assert!(counted(&metrics, code), "{code} (native API) is not counted in /metrics:\n{metrics}");
    }
}

/// One refused message is one rejection in `/metrics`, whichever path refused it and whether or
/// not it took the whole request down with it.
async fn case_each_refused_item_is_counted_once(app: &TestApp) {
    let t = app.tenant("acme").await;
    let rejected =
        |metrics: &str, code: &str| metric_value(metrics, &format!("siyu_events_rejected_total{{code=\"{code}\"}}"));
    // Native: a batch whose only item is bad, then a single bad event.
    app.events(&t.write_key, &json!({"batch": [{"type": "Like!", "identities": {"user_id": "u"}}]}))
        .await
        .assert_error(400, "unknown_event_type");
    app.events(&t.write_key, &json!({"type": "Like!", "identities": {"user_id": "u"}}))
        .await
        .assert_error(400, "unknown_event_type");
    // Segment: a single call without identity, then a batch whose only message has none.
    segment(app, &t.write_key, "track", &json!({"event": "Product Viewed"}))
        .await
        .assert_error(400, "missing_identity");
    let metrics = app.metrics().await;
    assert_eq!(rejected(&metrics, "unknown_event_type"), 2.0, "native");
    assert_eq!(rejected(&metrics, "missing_identity"), 1.0, "segment single call");
    let batch = json!({"batch": [{"type": "track", "event": "Product Viewed"}]});
    segment(app, &t.write_key, "batch", &batch).await.assert_error(400, "missing_identity");
    let metrics = app.metrics().await;
    assert_eq!(rejected(&metrics, "missing_identity"), 2.0, "a one-message segment batch refused as a whole");
    // A batch with nothing in it is a refusal too.
    app.events(&t.write_key, &json!({"batch": []})).await.assert_error(400, "empty_batch");
    assert_eq!(rejected(&app.metrics().await, "empty_batch"), 1.0, "an empty native batch");
}

/// The error registry promises a JSON body with `code` and `message` for every failure, also
/// when the framework's extractors refuse the request.
async fn case_malformed_query_path_and_body_are_json_errors(app: &TestApp) {
    let t = app.tenant("acme").await;
    app.ingest(&t.write_key, vec![event("m-1", "like", "douyin", json!({"user_id": "u"}), 1.0)]).await;
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("reachable=maybe", app.client.get(app.url("/api/v1/profiles?reachable=maybe"))),
        ("limit=abc", app.client.get(app.url("/api/v1/profiles?limit=abc"))),
        ("non-numeric profile id", app.client.get(app.url("/api/v1/profiles/abc"))),
        ("lookup without parameters", app.client.get(app.url("/api/v1/profiles/lookup"))),
        ("timeline before=abc", app.client.get(app.url("/api/v1/profiles/1/events?before=abc"))),
        (
            "unmerge with a body that is not JSON",
            app.client.post(app.url("/api/v1/profiles/1/unmerge")).header(CONTENT_TYPE, "application/json").body("{"),
        ),
        ("unmerge without a JSON content type", app.client.post(app.url("/api/v1/profiles/1/unmerge")).body("{}")),
        ("DELETE /api/v1/events", app.client.delete(app.url("/api/v1/events"))),
    ];
    let mut failures = Vec::new();
    for (what, request) in cases {
        let reply = app.send(request.bearer_auth(&t.secret_key)).await;
        let json_error = reply.status.is_client_error()
            && reply.content_type.starts_with("application/json")
            && reply.json["code"].as_str().is_some_and(|c| !c.is_empty())
            && reply.json["message"].is_string();
        if !json_error {
            failures.push(format!("{what}: {} {:?} {:?}", reply.status, reply.content_type, reply.text));
        }
    }
    assert!(failures.is_empty(), "refusals without a JSON error body:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 3. the Segment-compatible API

async fn case_segment_calls_keys_and_encodings(app: &TestApp) {
    let t = app.tenant("shop").await;
    let viewed = json!({"userId": "seg-1", "event": "Product Viewed", "messageId": "s-1",
        "timestamp": days_ago(2.0), "properties": {"sku": "A1"}});
    let reply = segment(app, &t.write_key, "track", &viewed).await.ok();
    assert_eq!(reply, json!({"success": true, "accepted": 1, "duplicates": 0, "errors": []}));
    let retry = segment(app, &t.write_key, "track", &viewed).await.ok();
    assert_eq!((retry["accepted"].clone(), retry["duplicates"].clone()), (json!(0), json!(1)), "{retry}");

    // The write key in the body, no Authorization header; the one-letter path.
    let shared = json!({"writeKey": t.write_key, "userId": "seg-1", "event": "Product Shared", "messageId": "s-2",
        "timestamp": days_ago(1.9)});
    let reply = app.send(app.client.post(app.url("/v1/t")).json(&shared)).await.ok();
    assert_eq!(reply["accepted"], 1, "{reply}");

    // A gzip-compressed body.
    let page = json!({"userId": "seg-1", "name": "Home", "messageId": "s-3", "timestamp": days_ago(1.8),
        "properties": {"url": "https://shop.example/"}});
    let reply = app
        .send(
            app.client
                .post(app.url("/v1/page"))
                .basic_auth(&t.write_key, Some(""))
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_ENCODING, "gzip")
                .body(gzip(page.to_string().as_bytes())),
        )
        .await
        .ok();
    assert_eq!(reply["accepted"], 1, "{reply}");

    // `Content-Type: text/plain`, as navigator.sendBeacon sends.
    let identify = json!({"userId": "seg-1", "traits": {"name": "Seg One"}, "messageId": "s-4",
        "timestamp": days_ago(1.7)});
    let reply = app
        .send(
            app.client
                .post(app.url("/v1/identify"))
                .basic_auth(&t.write_key, Some(""))
                .header(CONTENT_TYPE, "text/plain")
                .body(identify.to_string()),
        )
        .await
        .ok();
    assert_eq!(reply["accepted"], 1, "{reply}");

    // Every other call, long and short forms.
    let calls = [
        ("screen", json!({"userId": "seg-1", "name": "Cart", "messageId": "s-5", "timestamp": days_ago(1.6)})),
        ("group", json!({"userId": "seg-1", "groupId": "acme-inc", "messageId": "s-6", "timestamp": days_ago(1.5)})),
        ("p", json!({"userId": "seg-1", "name": "About", "messageId": "s-7", "timestamp": days_ago(1.4)})),
        ("s", json!({"userId": "seg-1", "name": "Settings", "messageId": "s-8", "timestamp": days_ago(1.3)})),
        ("i", json!({"userId": "seg-1", "traits": {"plan": "pro"}, "messageId": "s-9", "timestamp": days_ago(1.2)})),
        ("g", json!({"userId": "seg-1", "groupId": "acme-inc", "messageId": "s-10", "timestamp": days_ago(1.1)})),
    ];
    for (call, body) in &calls {
        let reply = segment(app, &t.write_key, call, body).await.ok();
        assert_eq!(reply["accepted"], 1, "/v1/{call}: {reply}");
    }

    // A batch with the key in the body: good messages kept, the bad one reported by index.
    let batch = json!({"writeKey": t.write_key, "batch": [
        {"type": "track", "userId": "seg-1", "event": "Product Added to Wishlist", "messageId": "s-11",
         "timestamp": days_ago(1.0)},
        {"type": "page", "userId": "seg-1", "name": "Blog", "messageId": "s-12", "timestamp": days_ago(0.9)},
        {"type": "track", "userId": "seg-1", "event": "Product Viewed", "messageId": "s-13",
         "timestamp": days_ago(0.8)},
        {"type": "track", "event": "Product Viewed", "messageId": "s-14"},
    ]});
    let reply = app.send(app.client.post(app.url("/v1/batch")).json(&batch)).await.ok();
    assert_eq!(reply["accepted"], 3, "{reply}");
    let errors = reply["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{reply}");
    assert_eq!(errors[0]["index"], 3);
    assert_eq!(errors[0]["code"], "missing_identity");
    assert!(errors[0]["field"].as_str().is_some_and(|f| f.starts_with("batch[3]")), "{reply}");
    // The legacy and one-letter batch paths, retrying the same messages: all duplicates.
    for call in ["b", "import"] {
        let reply = segment(app, &t.write_key, call, &batch).await.ok();
        assert_eq!((reply["accepted"].clone(), reply["duplicates"].clone()), (json!(0), json!(3)), "{reply}");
    }

    let profile = app.lookup(&t.secret_key, "user_id", "seg-1").await.expect("profile");
    assert_eq!(profile["event_count"], 13, "s-1..s-13, each once: {profile}");
    assert_eq!(profile["traits"]["name"], "Seg One", "{profile}");
    assert_eq!(profile["traits"]["plan"], "pro", "{profile}");
    let id = profile["id"].as_u64().expect("id");
    let timeline = app.get(&t.secret_key, &format!("/api/v1/profiles/{id}/events")).await.ok();
    let types: Vec<&str> = timeline.as_array().expect("events").iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "view", "view", "like", "group", "identify", "view", "view", "group", "view", "identify", "view", "share",
            "view"
        ],
        "{timeline}"
    );
    let page_event = timeline.as_array().unwrap().iter().find(|e| e["message_id"] == "s-3").expect("s-3");
    assert_eq!(page_event["channel"], "web", "{page_event}");
    assert_eq!(page_event["properties"]["name"], "Home", "{page_event}");

    // Keys.
    let no_key = app.send(app.client.post(app.url("/v1/track")).json(&viewed)).await;
    no_key.assert_error(401, "missing_key");
    let bad_key = segment(app, "wk_not_a_key_of_anyone", "track", &viewed).await;
    bad_key.assert_error(401, "invalid_key");
    let metrics = app.metrics().await;
    assert!(counted(&metrics, "missing_identity"), "{metrics}");
    assert!(counted(&metrics, "missing_key"), "{metrics}");
}

async fn case_segment_commerce_identify_and_alias(app: &TestApp) {
    let t = app.tenant("shop").await;
    let identify = json!({"userId": "seg-buyer", "messageId": "c-1", "timestamp": days_ago(3.0),
        "traits": {"name": "王小明", "email": "xm@example.com", "plan": "gold"}});
    segment(app, &t.write_key, "identify", &identify).await.ok();
    let order = json!({"userId": "seg-buyer", "event": "Order Completed", "messageId": "c-2",
        "timestamp": days_ago(2.0),
        "properties": {"order_id": "o-1", "total": 199.5, "revenue": 180, "currency": "CNY"}});
    let reply = segment(app, &t.write_key, "track", &order).await.ok();
    assert_eq!(reply["accepted"], 1, "{reply}");

    let profile = app.lookup(&t.secret_key, "user_id", "seg-buyer").await.expect("profile");
    assert_eq!(profile["traits"]["name"], "王小明", "{profile}");
    assert_eq!(profile["traits"]["plan"], "gold", "{profile}");
    assert_eq!(profile["scores"]["net_revenue"], 199.5, "total wins over revenue: {profile}");
    assert_eq!(profile["scores"]["paid_orders"], 1, "{profile}");
    let by_email = app.lookup(&t.secret_key, "email", "xm@example.com").await.expect("email from traits");
    assert_eq!(by_email["id"], profile["id"]);
    let id = profile["id"].as_u64().unwrap();
    let timeline = app.get(&t.secret_key, &format!("/api/v1/profiles/{id}/events")).await.ok();
    assert_eq!(timeline[0]["type"], "order_paid", "{timeline}");
    assert_eq!(timeline[0]["amount"], 199.5, "{timeline}");
    assert_eq!(timeline[0]["currency"], "CNY", "{timeline}");

    let refund = json!({"userId": "seg-buyer", "event": "Order Refunded", "messageId": "c-3",
        "timestamp": days_ago(1.0), "properties": {"order_id": "o-1", "total": 50}});
    segment(app, &t.write_key, "track", &refund).await.ok();
    let profile = app.lookup(&t.secret_key, "user_id", "seg-buyer").await.expect("profile");
    assert_eq!(profile["scores"]["net_revenue"], 149.5, "{profile}");
    let summary = app.get(&t.secret_key, "/api/v1/summary").await.ok();
    assert_eq!(summary["orders"], 1);
    assert_eq!(summary["refunds"], 1);
    assert_eq!(summary["net_revenue"], 149.5);

    // An order without a total is refused.
    let no_total = json!({"userId": "seg-buyer", "event": "Order Completed", "messageId": "c-4",
        "properties": {"order_id": "o-2"}});
    let reply = segment(app, &t.write_key, "track", &no_total).await;
    reply.assert_error(400, "missing_amount");
    reply.assert_field("properties.total");

    // alias joins the anonymous visitor and the signed-in user.
    let anonymous = json!({"anonymousId": "anon-xyz", "event": "Product Viewed", "messageId": "c-5",
        "timestamp": days_ago(1.0)});
    segment(app, &t.write_key, "track", &anonymous).await.ok();
    let signed_in = json!({"userId": "seg-alias", "traits": {"name": "Alias"}, "messageId": "c-6",
        "timestamp": days_ago(0.9)});
    segment(app, &t.write_key, "identify", &signed_in).await.ok();
    let before_anon = app.profile_id(&t.secret_key, "anonymous_id", "anon-xyz").await;
    let before_user = app.profile_id(&t.secret_key, "user_id", "seg-alias").await;
    assert_ne!(before_anon, before_user);
    let alias = json!({"previousId": "anon-xyz", "userId": "seg-alias", "messageId": "c-7",
        "timestamp": days_ago(0.8)});
    let reply = segment(app, &t.write_key, "alias", &alias).await.ok();
    assert_eq!(reply["accepted"], 1);
    let anon = app.profile_id(&t.secret_key, "anonymous_id", "anon-xyz").await;
    let user = app.profile_id(&t.secret_key, "user_id", "seg-alias").await;
    assert_eq!(anon, user, "alias must link anonymousId and userId");
    let merged = app.get(&t.secret_key, &format!("/api/v1/profiles/{user}")).await.ok();
    assert_eq!(merged["event_count"], 3, "view + identify + alias: {merged}");
    let alias_without_user = app
        .send(
            app.client
                .post(app.url("/v1/a"))
                .basic_auth(&t.write_key, Some(""))
                .json(&json!({"previousId": "anon-xyz", "messageId": "c-8"})),
        )
        .await;
    alias_without_user.assert_error(400, "missing_identity");
}

async fn case_segment_limits(app: &TestApp) {
    let t = app.tenant("shop").await;
    let message = |i: usize| {
        json!({"type": "track", "userId": format!("lim-{}", i % 7), "event": "Product Viewed",
        "messageId": format!("lim-{i}")})
    };

    // Exactly 2,500 messages is fine; 2,501 is not.
    let full: Vec<Value> = (0..2500).map(message).collect();
    let reply = segment(app, &t.write_key, "batch", &json!({"batch": full})).await.ok();
    assert_eq!(reply["accepted"], 2500);
    let over: Vec<Value> = (0..2501).map(message).collect();
    let reply = segment(app, &t.write_key, "batch", &json!({"batch": over})).await;
    reply.assert_error(413, "batch_too_large");
    insta::assert_json_snapshot!("segment_batch_too_many_messages", reply.json);

    // Over 500 KB, with every message under 32 KB.
    let padding = "x".repeat(30 * 1024);
    let heavy: Vec<Value> = (0..20)
        .map(|i| {
            json!({"type": "track", "userId": "lim-heavy", "event": "Product Viewed",
            "messageId": format!("heavy-{i}"), "properties": {"padding": padding}})
        })
        .collect();
    let heavy = json!({"batch": heavy});
    assert!(heavy.to_string().len() > 500 * 1024);
    let reply = segment(app, &t.write_key, "batch", &heavy).await;
    reply.assert_error(413, "batch_too_large");
    // The limit applies to the decompressed body: gzip does not smuggle a big batch in.
    let compressed = gzip(heavy.to_string().as_bytes());
    assert!(compressed.len() < 500 * 1024);
    let reply = app
        .send(
            app.client
                .post(app.url("/v1/batch"))
                .basic_auth(&t.write_key, Some(""))
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_ENCODING, "gzip")
                .body(compressed),
        )
        .await;
    reply.assert_error(413, "batch_too_large");

    // One message over 32 KB: refused alone as a single call, reported by index in a batch.
    let big = json!({"userId": "lim-big", "event": "Product Viewed", "messageId": "big-1",
        "properties": {"padding": "y".repeat(33 * 1024)}});
    let reply = segment(app, &t.write_key, "track", &big).await;
    reply.assert_error(413, "message_too_large");
    insta::assert_json_snapshot!("segment_message_too_large", reply.json);
    let mixed = json!({"batch": [
        {"type": "track", "userId": "lim-big", "event": "Product Viewed", "messageId": "big-0"},
        with(big.clone(), "type", json!("track")),
    ]});
    let reply = segment(app, &t.write_key, "batch", &mixed).await.ok();
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["errors"][0]["index"], 1, "{reply}");
    assert_eq!(reply["errors"][0]["code"], "message_too_large", "{reply}");

    let metrics = app.metrics().await;
    for code in ["batch_too_large", "message_too_large"] {
        assert!(counted(&metrics, code), "{code} is not counted in /metrics:\n{metrics}");
    }
    let summary = app.get(&t.secret_key, "/api/v1/summary").await.ok();
    assert_eq!(summary["events"], 2501, "the full batch and big-0: {summary}");
}

async fn case_segment_clock_skew_is_corrected(app: &TestApp) {
    let t = app.tenant("shop").await;
    let ahead = Millis(Millis::now().0 + 3_600_000).to_rfc3339();
    let skewed = json!({"userId": "skew-1", "event": "Product Viewed", "messageId": "skew-1",
        "timestamp": ahead, "sentAt": ahead});
    segment(app, &t.write_key, "track", &skewed).await.ok();
    // The batch-level sentAt corrects messages that have none of their own.
    let batch = json!({"sentAt": ahead, "batch": [
        {"type": "track", "userId": "skew-2", "event": "Product Viewed", "messageId": "skew-2", "timestamp": ahead}
    ]});
    segment(app, &t.write_key, "batch", &batch).await.ok();
    let now = Millis::now();
    for user in ["skew-1", "skew-2"] {
        let id = app.profile_id(&t.secret_key, "user_id", user).await;
        let timeline = app.get(&t.secret_key, &format!("/api/v1/profiles/{id}/events")).await.ok();
        let stored = millis(&timeline[0]["timestamp"]);
        let off_by = (stored.0 - now.0).abs();
        assert!(off_by < 5 * 60_000, "{user}: stored {stored} is {off_by} ms away from now {now}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. identity resolution

async fn case_identity_merge_and_unmerge(app: &TestApp) {
    let t = app.tenant("acme").await;
    app.ingest(
        &t.write_key,
        vec![
            event("i-1", "view", "douyin", json!({"phone": "138-0013-8000"}), 4.0),
            event("i-2", "like", "web", json!({"user_id": "u1"}), 3.0),
        ],
    )
    .await;
    let by_phone = app.profile_id(&t.secret_key, "phone", "13800138000").await;
    let by_user = app.profile_id(&t.secret_key, "user_id", "u1").await;
    assert_ne!(by_phone, by_user, "no evidence yet");

    // The evidence: one event names both.
    app.ingest(
        &t.write_key,
        vec![
            event("i-3", "comment", "web", json!({"user_id": "u1", "phone": "+86 13800138000"}), 2.0),
            event("i-4", "like", "web", json!({"user_id": "u2"}), 1.0),
        ],
    )
    .await;
    let survivor = app.profile_id(&t.secret_key, "phone", "13800138000").await;
    assert_eq!(app.profile_id(&t.secret_key, "user_id", "u1").await, survivor);
    assert_eq!(app.profile_id(&t.secret_key, "phone", "+86 138 0013 8000").await, survivor);
    let other = app.profile_id(&t.secret_key, "user_id", "u2").await;
    assert_ne!(other, survivor);
    let merged_away = if survivor == by_phone { by_user } else { by_phone };
    assert_eq!(survivor, by_phone.min(by_user), "the older profile survives");

    // The merged-away id finds the survivor.
    let profile = app.get(&t.secret_key, &format!("/api/v1/profiles/{merged_away}")).await.ok();
    assert_eq!(profile["id"], survivor, "{profile}");
    assert_eq!(profile["merged_ids"], json!([merged_away]), "{profile}");
    assert_eq!(profile["event_count"], 3, "{profile}");
    let kinds: BTreeSet<String> = profile["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{}:{}", i["kind"].as_str().unwrap(), i["value"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, ["phone:+8613800138000".to_string(), "user_id:u1".to_string()].into());

    let merges = app.get(&t.secret_key, &format!("/api/v1/profiles/{survivor}/merges")).await.ok();
    let merges = merges.as_array().expect("merges");
    assert_eq!(merges.len(), 1, "{merges:?}");
    assert_eq!(merges[0]["survivor"], survivor);
    assert_eq!(merges[0]["merged"], merged_away);
    let evidence: BTreeSet<&str> =
        merges[0]["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(evidence, ["phone:+8613800138000", "user_id:u1"].into());
    // Asked through the merged-away id, the history is the same.
    let via_old = app.get(&t.secret_key, &format!("/api/v1/profiles/{merged_away}/merges")).await.ok();
    assert_eq!(via_old.as_array().map(Vec::len), Some(1));
    let summary = app.get(&t.secret_key, "/api/v1/summary").await.ok();
    assert_eq!((summary["profiles"].clone(), summary["merges"].clone()), (json!(2), json!(1)), "{summary}");
    assert!(metric_value(&app.metrics().await, "siyu_profile_merges_total") >= 1.0);

    // Unmerge: the two are separated again and the events go back where their identities say.
    let reply = app
        .post(
            &t.secret_key,
            &format!("/api/v1/profiles/{survivor}/unmerge"),
            &json!({"merged_id": merged_away, "reason": "different people"}),
        )
        .await
        .ok();
    let cannot: BTreeSet<&str> = reply["cannot_link"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(cannot, ["phone:+8613800138000", "user_id:u1"].into(), "{reply}");
    assert_ne!(reply["survivor"], reply["separated"], "{reply}");
    let phone_now = app.profile_id(&t.secret_key, "phone", "13800138000").await;
    let user_now = app.profile_id(&t.secret_key, "user_id", "u1").await;
    assert_ne!(phone_now, user_now, "unmerged identities must live in two profiles");
    let count = |p: Value| p["event_count"].as_u64().unwrap();
    let phone_events = count(app.get(&t.secret_key, &format!("/api/v1/profiles/{phone_now}")).await.ok());
    let user_events = count(app.get(&t.secret_key, &format!("/api/v1/profiles/{user_now}")).await.ok());
    assert!(phone_events >= 1 && user_events >= 1, "{phone_events} + {user_events}");
    assert_eq!(phone_events + user_events, 3, "every event is re-attributed, none lost or doubled");
    let mut timeline_total = 0;
    for id in [phone_now, user_now] {
        timeline_total +=
            app.get(&t.secret_key, &format!("/api/v1/profiles/{id}/events")).await.ok().as_array().unwrap().len();
    }
    assert_eq!(timeline_total, 3);
    let summary = app.get(&t.secret_key, "/api/v1/summary").await.ok();
    assert_eq!((summary["profiles"].clone(), summary["events"].clone()), (json!(3), json!(4)), "{summary}");
    assert_eq!(summary["merges"], 0, "{summary}");
    let merges = app.get(&t.secret_key, &format!("/api/v1/profiles/{phone_now}/merges")).await.ok();
    assert_eq!(merges, json!([]));
    // The evidence event is now a refused link, visible to the operator.
    let refusals = app.get(&t.secret_key, "/api/v1/identity/refusals").await.ok();
    assert!(
        refusals.as_array().unwrap().iter().any(|r| r["reason"] == "cannot_link"),
        "the refused link is listed: {refusals}"
    );
    // Unmerging what is not merged is refused.
    let again = app
        .post(&t.secret_key, &format!("/api/v1/profiles/{phone_now}/unmerge"), &json!({"merged_id": user_now}))
        .await;
    again.assert_error(400, "not_merged");
    // A new event with both identities does not merge them again.
    app.ingest(&t.write_key, vec![event("i-5", "like", "web", json!({"user_id": "u1", "phone": "13800138000"}), 0.5)])
        .await;
    assert_ne!(
        app.profile_id(&t.secret_key, "phone", "13800138000").await,
        app.profile_id(&t.secret_key, "user_id", "u1").await
    );
}

// ---------------------------------------------------------------------------------------------
// 5. the read API

/// Six profiles with distinct scores; returns their ids by name.
async fn seed_profiles(app: &TestApp, t: &helpers::Tenant) -> std::collections::BTreeMap<&'static str, u64> {
    let fan = json!({"user_id": "fan1"});
    app.ingest(
        &t.write_key,
        vec![
            with(event("p-1", "follow", "douyin", fan.clone(), 3.0), "traits", json!({"name": "Alice Fan"})),
            event("p-2", "message_in", "douyin", fan.clone(), 2.0),
            with(event("p-3", "order_paid", "douyin", fan.clone(), 2.0), "amount", json!(100.0)),
            event("p-4", "like", "kuaishou", json!({"user_id": "lurk1"}), 1.0),
            event("p-5", "view", "web", json!({"user_id": "old1"}), 200.0),
            event("p-6", "subscribe", "wechat_mp", json!({"user_id": "sub1"}), 4.0),
            event("p-7", "comment", "wecom", json!({"phone": "13900139000"}), 6.0),
            event("p-8", "follow", "douyin", json!({"user_id": "asof1"}), 5.0),
        ],
    )
    .await;
    let mut ids = std::collections::BTreeMap::new();
    for (name, kind, value) in [
        ("fan", "user_id", "fan1"),
        ("lurk", "user_id", "lurk1"),
        ("old", "user_id", "old1"),
        ("sub", "user_id", "sub1"),
        ("phone", "phone", "13900139000"),
        ("asof", "user_id", "asof1"),
    ] {
        ids.insert(name, app.profile_id(&t.secret_key, kind, value).await);
    }
    ids
}

async fn case_profile_filters_pagination_and_summary(app: &TestApp) {
    let t = app.tenant("acme").await;
    let ids = seed_profiles(app, &t).await;
    let id = |name: &str| ids[name];
    let list = |query: Query| {
        let key = t.secret_key.clone();
        async move {
            let mut query: Vec<(&str, String)> = query;
            query.push(("limit", "1000".into()));
            let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = app.get_query(&key, "/api/v1/profiles", &pairs).await.ok();
            assert_eq!(page["next_cursor"], Value::Null, "{page}");
            ids_of(&page)
        }
    };
    let one = |k: &'static str, v: &str| vec![(k, v.to_string())];

    let all = list(vec![]).await;
    assert_eq!(all, ids.values().copied().collect());
    let checks: Vec<(Query, BTreeSet<u64>)> = vec![
        (one("tier", "warm_fan"), set(&[id("fan")])),
        (one("tier", "好感粉"), set(&[id("fan")])),
        (one("tier", "passerby"), set(&[id("lurk"), id("old"), id("sub"), id("phone"), id("asof")])),
        (one("tier", "true_fan"), set(&[])),
        (one("pool_stage", "main_base"), set(&[id("fan")])),
        (one("pool_stage", "reservoir"), set(&[id("sub"), id("asof")])),
        (one("pool_stage", "incentive"), set(&[id("lurk"), id("phone")])),
        (one("pool_stage", "public"), set(&[id("old")])),
        (one("ownership", "L3"), set(&[id("fan")])),
        (one("ownership", "L1"), set(&[id("sub"), id("asof")])),
        (one("ownership", "L0"), set(&[id("lurk"), id("old"), id("phone")])),
        (one("rfm", "重要价值"), set(&[id("fan")])),
        (one("rfm", "一般挽留"), set(&[])),
        (one("channel", "kuaishou"), set(&[id("lurk")])),
        (one("channel", "douyin"), set(&[id("fan"), id("asof")])),
        (one("channel", "wecom"), set(&[id("phone")])),
        (one("q", "alice"), set(&[id("fan")])),
        (one("q", "ALICE"), set(&[id("fan")])),
        (one("q", "13900"), set(&[id("phone")])),
        (one("q", "lurk"), set(&[id("lurk")])),
        (one("reachable", "true"), set(&[id("fan"), id("sub"), id("asof")])),
        (one("reachable", "false"), set(&[id("lurk"), id("old"), id("phone")])),
        (
            vec![("reachable", "true".into()), ("channel", "douyin".into()), ("pool_stage", "reservoir".into())],
            set(&[id("asof")]),
        ),
    ];
    for (query, expected) in checks {
        let got = list(query.clone()).await;
        assert_eq!(got, expected, "filter {query:?} (ids {ids:?})");
    }

    // Cursor pagination: every profile exactly once, pages of at most 2.
    for filter in [None, Some(("tier", "passerby"))] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut query = vec![("limit", "2".to_string())];
            if let Some((k, v)) = filter {
                query.push((k, v.to_string()));
            }
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = app.get_query(&t.secret_key, "/api/v1/profiles", &pairs).await.ok();
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 2, "{page}");
            seen.extend(items.iter().map(|p| p["id"].as_u64().unwrap()));
            pages += 1;
            assert!(pages <= 10, "pagination does not end");
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        let unique: BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "duplicates across pages: {seen:?}");
        let expected = if filter.is_some() { 5 } else { 6 };
        assert_eq!(seen.len(), expected, "{filter:?}: {seen:?}");
        assert_eq!(pages, 3, "{filter:?}");
    }

    // Invalid filters name their parameter.
    for (key, value) in [
        ("tier", "superfan"),
        ("pool_stage", "lake"),
        ("ownership", "L9"),
        ("rfm", "best"),
        ("channel", "myspace"),
        ("limit", "0"),
        ("limit", "1001"),
        ("as_of", "yesterday"),
        ("cursor", "abc"),
    ] {
        let reply = app.get_query(&t.secret_key, "/api/v1/profiles", &[(key, value)]).await;
        reply.assert_error(400, "invalid_query");
        reply.assert_field(key);
        if key == "tier" {
            insta::assert_json_snapshot!("invalid_query_tier", reply.json);
        }
    }
    let reply = app.get_query(&t.secret_key, "/api/v1/profiles/lookup", &[("kind", "phone"), ("value", "12")]).await;
    reply.assert_error(400, "invalid_identity");
    let reply =
        app.get_query(&t.secret_key, "/api/v1/profiles/lookup", &[("kind", "phone"), ("value", "13700137000")]).await;
    reply.assert_error(404, "no_such_profile");
    app.get(&t.secret_key, "/api/v1/profiles/999").await.assert_error(404, "no_such_profile");

    // The summary counts what was sent.
    let summary = app.get(&t.secret_key, "/api/v1/summary").await.ok();
    assert_eq!(summary["profiles"], 6, "{summary}");
    assert_eq!(summary["events"], 8, "{summary}");
    assert_eq!(summary["orders"], 1, "{summary}");
    assert_eq!(summary["buyers"], 1, "{summary}");
    assert_eq!(summary["refunds"], 0, "{summary}");
    assert_eq!(summary["net_revenue"], 100.0, "{summary}");
    assert_eq!(summary["reachable"], 3, "{summary}");
    assert_eq!(summary["merges"], 0, "{summary}");
    let count = |list: &str, key: &str| {
        summary[list].as_array().unwrap().iter().find(|c| c["key"] == key).map_or(0, |c| c["count"].as_u64().unwrap())
    };
    assert_eq!((count("tiers", "warm_fan"), count("tiers", "passerby")), (1, 5), "{summary}");
    assert_eq!(
        [
            count("pool_stages", "main_base"),
            count("pool_stages", "reservoir"),
            count("pool_stages", "incentive"),
            count("pool_stages", "public")
        ],
        [1, 2, 2, 1],
        "{summary}"
    );
    assert_eq!([count("ownership", "L0"), count("ownership", "L1"), count("ownership", "L3")], [3, 2, 1]);
    assert_eq!(count("rfm", "重要价值"), 1, "{summary}");
    assert_eq!(
        [count("channels", "douyin"), count("channels", "kuaishou"), count("channels", "web")],
        [2, 1, 1],
        "{summary}"
    );
}

async fn case_as_of_evaluation(app: &TestApp) {
    let t = app.tenant("acme").await;
    let ids = seed_profiles(app, &t).await;
    let follower = ids["asof"];
    let path = format!("/api/v1/profiles/{follower}");
    // The follow happened 5 days ago, and was the person's first event: before it, they did
    // not exist.
    app.get_query(&t.secret_key, &path, &[("as_of", &days_ago(6.0))]).await.assert_error(404, "no_such_profile");
    let reachable_then = |as_of: String| {
        let key = t.secret_key.clone();
        async move {
            let page = app.get_query(&key, "/api/v1/profiles", &[("reachable", "true"), ("as_of", &as_of)]).await.ok();
            ids_of(&page)
        }
    };
    assert_eq!(reachable_then(days_ago(4.5)).await, set(&[follower]));
    // A view 10 days ago: now the person existed 6 days ago, not yet following.
    app.ingest(&t.write_key, vec![event("p-asof-view", "view", "douyin", json!({"user_id": "asof1"}), 10.0)]).await;
    let before = app.get_query(&t.secret_key, &path, &[("as_of", &days_ago(6.0))]).await.ok();
    assert_eq!(before["scores"]["reachable"], false, "{before}");
    assert_eq!(before["scores"]["pool_stage"], "public", "{before}");
    let after = app.get_query(&t.secret_key, &path, &[("as_of", &days_ago(4.5))]).await.ok();
    assert_eq!(after["scores"]["reachable"], true, "{after}");
    assert_eq!(after["scores"]["pool_stage"], "reservoir", "{after}");
    let now = app.get(&t.secret_key, &path).await.ok();
    assert_eq!(now["scores"]["reachable"], true);
    // Lists and the summary evaluate at the same instant.
    assert_eq!(reachable_then(days_ago(6.0)).await, set(&[]));
    assert_eq!(reachable_then(days_ago(4.5)).await, set(&[follower]));
    let summary = app.get_query(&t.secret_key, "/api/v1/summary", &[("as_of", &days_ago(4.5))]).await.ok();
    assert_eq!(summary["reachable"], 1, "{summary}");
    let reply = app.get_query(&t.secret_key, &path, &[("as_of", "last tuesday")]).await;
    reply.assert_error(400, "invalid_query");
    reply.assert_field("as_of");
}

/// Issue 9's reproduction: as of a past time, later orders must not move the RFM means, and a
/// person whose only event is later does not exist yet — in lookups, lists, the summary, the
/// accounts view and segment preview, members and export.
async fn case_as_of_ignores_later_events(app: &TestApp) {
    let t = app.tenant("asof").await;
    let order = |id: &str, user: &str, amount: f64, ts: &str| {
        json!({"message_id": id, "type": "order_paid", "identities": {"user_id": user}, "channel": "douyin",
               "account": "brand-main", "amount": amount, "timestamp": ts})
    };
    app.ingest(
        &t.write_key,
        vec![
            order("a1", "u1", 100.0, "2026-10-22T10:00:00Z"),
            order("a2", "u2", 100.0, "2026-10-12T10:00:00Z"),
            order("a3", "u3", 1000.0, "2026-11-20T10:00:00Z"),
        ],
    )
    .await;
    let then = "2026-11-01T12:00:00Z";
    let lookup = |user: &'static str| {
        let key = t.secret_key.clone();
        async move {
            app.get_query(&key, "/api/v1/profiles/lookup", &[("kind", "user_id"), ("value", user), ("as_of", then)])
                .await
        }
    };
    let u1 = lookup("u1").await.ok();
    assert_eq!(u1["scores"]["rfm"], "重要价值", "{u1}");
    assert_eq!(u1["traits"], json!({}), "a profile without traits has an empty object: {u1}");
    let u2 = lookup("u2").await.ok();
    assert_eq!(u2["scores"]["rfm"], "重要保持", "{u2}");
    lookup("u3").await.assert_error(404, "no_such_profile");
    // Now, u3 exists and its big order moves the means: both earlier buyers are 一般保持.
    let now =
        app.get_query(&t.secret_key, "/api/v1/profiles/lookup", &[("kind", "user_id"), ("value", "u3")]).await.ok();
    assert_eq!(now["event_count"], 1, "{now}");
    let u1_now = app.lookup(&t.secret_key, "user_id", "u1").await.unwrap();
    assert_eq!(u1_now["scores"]["rfm"], "一般保持", "{u1_now}");

    let summary = app.get_query(&t.secret_key, "/api/v1/summary", &[("as_of", then)]).await.ok();
    assert_eq!((summary["profiles"].as_u64(), summary["events"].as_u64()), (Some(2), Some(2)), "{summary}");
    assert_eq!((summary["buyers"].as_u64(), summary["orders"].as_u64()), (Some(2), Some(2)), "{summary}");
    assert_eq!(summary["net_revenue"], 200.0, "{summary}");
    let rfm = |summary: &Value, group: &str| {
        summary["rfm"].as_array().unwrap().iter().find(|c| c["key"] == group).map(|c| c["count"].as_u64().unwrap())
    };
    assert_eq!(rfm(&summary, "重要价值"), Some(1), "{summary}");
    assert_eq!(rfm(&summary, "重要保持"), Some(1), "{summary}");
    assert_eq!(rfm(&summary, "一般保持"), Some(0), "{summary}");
    let list = app.get_query(&t.secret_key, "/api/v1/profiles", &[("as_of", then)]).await.ok();
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    let accounts = app.get_query(&t.secret_key, "/api/v1/accounts", &[("as_of", then)]).await.ok();
    assert_eq!(accounts[0]["events"], 2, "{accounts}");
    assert_eq!(accounts[0]["people"], 2, "{accounts}");
    let accounts_now = app.get(&t.secret_key, "/api/v1/accounts").await.ok();
    assert_eq!(accounts_now[0]["people"], 3, "{accounts_now}");

    // Segments as of that time: who had bought, graded then.
    let preview = app
        .post(&t.secret_key, "/api/v1/segments/preview", &json!({"condition": "paid_orders >= 1", "as_of": then}))
        .await
        .ok();
    assert_eq!(preview["size"], 2, "{preview}");
    let valued = json!({"condition": "rfm = 重要价值", "as_of": then});
    let preview = app.post(&t.secret_key, "/api/v1/segments/preview", &valued).await.ok();
    assert_eq!(preview["size"], 1, "{preview}");
    assert_eq!(preview["sample"][0]["id"], u1["id"], "{preview}");
    let created = app
        .post(&t.secret_key, "/api/v1/segments", &json!({"name": "没买过", "condition": "not (paid_orders >= 1)"}))
        .await
        .ok();
    let members_path = format!("/api/v1/segments/{}/members", created["id"]);
    let members_now = app.get(&t.secret_key, &members_path).await.ok();
    assert_eq!(members_now["items"].as_array().unwrap().len(), 0, "{members_now}");
    let before_anyone = app.get_query(&t.secret_key, &members_path, &[("as_of", "2026-10-01T00:00:00Z")]).await.ok();
    assert_eq!(before_anyone["items"].as_array().unwrap().len(), 0, "nobody existed yet: {before_anyone}");
    let buyers = app
        .post(&t.secret_key, "/api/v1/segments", &json!({"name": "买过", "condition": "paid_orders >= 1"}))
        .await
        .ok();
    let export_path = format!("/api/v1/segments/{}/export", buyers["id"]);
    let export = app.get_query(&t.secret_key, &export_path, &[("fields", "user_id,rfm"), ("as_of", then)]).await;
    assert_eq!(export.status, StatusCode::OK, "{}", export.text);
    let mut rows: Vec<&str> = export.text.lines().skip(1).collect();
    rows.sort();
    assert_eq!(rows, vec!["u1,重要价值", "u2,重要保持"], "{}", export.text);
    let export_now = app.get_query(&t.secret_key, &export_path, &[("fields", "user_id,rfm")]).await;
    assert_eq!(export_now.text.lines().count(), 4, "{}", export_now.text);
    let bad = app.get_query(&t.secret_key, &members_path, &[("as_of", "yesterday")]).await;
    bad.assert_error(400, "invalid_query");
    bad.assert_field("as_of");
}

async fn case_timeline_is_newest_first_with_paging(app: &TestApp) {
    let t = app.tenant("acme").await;
    let user = json!({"user_id": "tl1"});
    let kinds = ["view", "like", "comment", "share", "follow"];
    for (i, kind) in kinds.iter().enumerate() {
        // One request each: five separate appends.
        app.ingest(&t.write_key, vec![event(&format!("tl-{i}"), kind, "douyin", user.clone(), 5.0 - i as f64)]).await;
    }
    app.ingest(&t.write_key, vec![event("tl-other", "like", "douyin", json!({"user_id": "tl2"}), 1.0)]).await;
    let id = app.profile_id(&t.secret_key, "user_id", "tl1").await;
    let path = format!("/api/v1/profiles/{id}/events");

    let all = app.get(&t.secret_key, &path).await.ok();
    let all = all.as_array().unwrap();
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["follow", "share", "comment", "like", "view"]);
    assert!(all.windows(2).all(|w| millis(&w[0]["timestamp"]) >= millis(&w[1]["timestamp"])));
    assert!(all.windows(2).all(|w| w[0]["seq"].as_i64() > w[1]["seq"].as_i64()));
    assert!(all.iter().all(|e| e["identities"] == json!(["user_id:tl1"])), "{all:?}");

    let mut seen = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut query = vec![("limit", "2".to_string())];
        if let Some(b) = before {
            query.push(("before", b.to_string()));
        }
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = app.get_query(&t.secret_key, &path, &pairs).await.ok();
        let page = page.as_array().unwrap().clone();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        before = last["seq"].as_i64();
        seen.extend(page.iter().map(|e| e["message_id"].as_str().unwrap().to_string()));
        assert!(seen.len() <= 5, "paging does not end: {seen:?}");
    }
    assert_eq!(seen, ["tl-4", "tl-3", "tl-2", "tl-1", "tl-0"]);
    app.get(&t.secret_key, "/api/v1/profiles/999/events").await.assert_error(404, "no_such_profile");
}

async fn case_settings_round_trip_and_rescore(app: &TestApp) {
    let t = app.tenant("acme").await;
    let ids = seed_profiles(app, &t).await;
    let settings = app.get(&t.secret_key, "/api/v1/settings").await.ok();
    assert_eq!(settings["scores"]["weights"]["like"], 1.0, "{settings}");
    assert_eq!(settings["scores"]["half_life_days"], 30.0, "{settings}");
    let liker = format!("/api/v1/profiles/{}", ids["lurk"]);
    let before = app.get(&t.secret_key, &liker).await.ok();
    assert_eq!(before["scores"]["tier"], "passerby", "{before}");

    // One like is worth 50: the liker (one like a day ago) becomes a true fan.
    let mut changed = settings.clone();
    changed["scores"]["weights"]["like"] = json!(50.0);
    let saved = app.put(&t.secret_key, "/api/v1/settings", &changed).await.ok();
    assert_eq!(saved, changed);
    assert_eq!(app.get(&t.secret_key, "/api/v1/settings").await.ok(), changed);
    let after = app.get(&t.secret_key, &liker).await.ok();
    assert_eq!(after["scores"]["tier"], "true_fan", "{after}");
    assert!(after["scores"]["affinity"].as_f64().unwrap() > 40.0, "{after}");
    let true_fans = app.get_query(&t.secret_key, "/api/v1/profiles", &[("tier", "true_fan")]).await.ok();
    assert_eq!(ids_of(&true_fans), set(&[ids["lurk"]]));

    // Invalid settings are refused, naming the field, and change nothing.
    let mut negative = changed.clone();
    negative["scores"]["half_life_days"] = json!(-1);
    let reply = app.put(&t.secret_key, "/api/v1/settings", &negative).await;
    reply.assert_error(400, "invalid_settings");
    assert!(reply.json["field"].as_str().is_some_and(|f| f.contains("half_life_days")), "{}", reply.text);
    insta::assert_json_snapshot!("invalid_settings_half_life", reply.json);
    let mut unknown = changed.clone();
    unknown["scores"]["colour"] = json!("red");
    let reply = app.put(&t.secret_key, "/api/v1/settings", &unknown).await;
    reply.assert_error(400, "invalid_settings");
    reply.assert_field("colour");
    let mut bad_mapping = changed.clone();
    bad_mapping["event_mapping"] = json!({"Store Visit": "Not A Type!"});
    app.put(&t.secret_key, "/api/v1/settings", &bad_mapping).await.assert_error(400, "invalid_settings");
    let reply = app
        .send(
            app.client
                .put(app.url("/api/v1/settings"))
                .bearer_auth(&t.secret_key)
                .header(CONTENT_TYPE, "application/json")
                .body("{"),
        )
        .await;
    reply.assert_error(400, "invalid_settings");
    assert_eq!(app.get(&t.secret_key, "/api/v1/settings").await.ok(), changed);
    assert_eq!(app.get(&t.secret_key, &liker).await.ok()["scores"]["tier"], "true_fan");
}

// ---------------------------------------------------------------------------------------------
// 6. tenant isolation

/// Things only tenant A holds; none may ever appear in an answer to tenant B.
const A_SECRETS: [&str; 11] = [
    "a-user-1",
    "a-user-2",
    "a-merge@example.com",
    "a-anon-4",
    "13800138001",
    "a_custom_event",
    "a-seg-user",
    "a-account",
    "a-cred-secret",
    "a-template-text",
    "a-list",
];

async fn case_tenant_isolation_on_every_route(app: &TestApp) {
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    // A: profile 1 (user + phone, a buyer), 2, and 3 which absorbed 4; a refused merge; a
    // custom weight; a Segment message; its own channel account.
    let on_a_account = |event: Value| with(event, "account", json!("a-account"));
    app.ingest(
        &a.write_key,
        [
            event("shared-1", "follow", "douyin", json!({"user_id": "a-user-1", "phone": "13800138001"}), 3.0),
            with(event("a-2", "order_paid", "douyin", json!({"user_id": "a-user-1"}), 2.9), "amount", json!(88.0)),
            event("a-3", "like", "douyin", json!({"user_id": "a-user-2"}), 2.8),
            event("a-4", "view", "web", json!({"email": "a-merge@example.com"}), 2.7),
            event("a-5", "view", "web", json!({"anonymous_id": "a-anon-4"}), 2.6),
            event("a-6", "view", "web", json!({"email": "a-merge@example.com", "anonymous_id": "a-anon-4"}), 2.5),
            event("a-7", "like", "douyin", json!({"user_id": "a-user-2", "phone": "13800138001"}), 2.4),
        ]
        .into_iter()
        .map(on_a_account)
        .collect(),
    )
    .await;
    let mut settings = app.get(&a.secret_key, "/api/v1/settings").await.ok();
    settings["scores"]["weights"]["a_custom_event"] = json!(7.0);
    app.put(&a.secret_key, "/api/v1/settings", &settings).await.ok();
    let seg = json!({"userId": "a-seg-user", "event": "Product Viewed", "messageId": "shared-seg"});
    assert_eq!(segment(app, &a.write_key, "track", &seg).await.ok()["accepted"], 1);
    // A's tags and segments (ids 1 and 2 of each), profile 1 tagged.
    for name in ["a-group-1", "a-group-2"] {
        app.post(&a.secret_key, "/api/v1/tag-groups", &json!({"name": name})).await.ok();
    }
    for name in ["a-tag-1", "a-tag-2"] {
        app.post(&a.secret_key, "/api/v1/tags", &json!({"name": name, "group_id": 1})).await.ok();
    }
    app.post(&a.secret_key, "/api/v1/profiles/1/tags", &json!({"add": ["a-tag-1"]})).await.ok();
    for (name, condition) in [("a-seg-1", "tagged(\"a-tag-1\")"), ("a-seg-2", "channel = douyin")] {
        app.post(&a.secret_key, "/api/v1/segments", &json!({"name": name, "condition": condition})).await.ok();
    }
    let a_segment_2 = app.get(&a.secret_key, "/api/v1/segments/2").await.ok();
    assert!(a_segment_2["size"].as_u64().unwrap() >= 1, "{a_segment_2}");
    // A's reach: a send account with a credential, two templates, a campaign planned to segment
    // 2, a suppression list.
    // A's WeCom account, on a stand-in, with a contact way of its own.
    let wecom = siyu_connect::wecom::stand_in::StandInConfig::default();
    let (wecom_url, wecom_stand_in) =
        siyu_connect::wecom::stand_in::WeComStandIn::start(wecom.clone()).await.expect("the wecom stand-in");
    settings["send_accounts"] = json!({"a-send": {"channel": "douyin", "connector": "log",
        "base_url": "/dev/null", "credentials": {"secret": "a-cred-secret"}},
        "a-wecom": {"channel": "wecom", "connector": "wecom", "base_url": wecom_url, "staff": ["a-staff"],
            "credentials": {"corp_id": wecom.corp_id, "corp_secret": wecom.corp_secret}}});
    let masked = app.put(&a.secret_key, "/api/v1/settings", &settings).await.ok();
    assert_eq!(masked["send_accounts"]["a-send"]["credentials"]["secret"], "••••••", "{masked}");
    let settings = app.get(&a.secret_key, "/api/v1/settings").await.ok();
    assert!(!settings.to_string().contains("a-cred-secret"), "A's own answer shows the secret: {settings}");
    for name in ["a-template-1", "a-template-2"] {
        let definition = json!({"variants": {"default": {"text": "a-template-text {{ name }}"}}});
        app.post(&a.secret_key, "/api/v1/templates", &json!({"name": name, "definition": definition})).await.ok();
    }
    let a_spec = json!({"template_id": 2, "audience": {"segment_id": 2}, "channel": "douyin", "account": "a-send",
        "scope": "direct"});
    app.post(&a.secret_key, "/api/v1/campaigns", &json!({"name": "a-campaign", "spec": a_spec})).await.ok();
    app.post(&a.secret_key, "/api/v1/campaigns/1/send", &json!({})).await.ok();
    let a_campaign = app.get(&a.secret_key, "/api/v1/campaigns/1").await.ok();
    let suppression = json!({"list": "a-list", "identities": [{"kind": "phone", "value": "13800138001"}]});
    assert_eq!(app.post(&a.secret_key, "/api/v1/suppressions", &suppression).await.ok()["added"], 1);
    let a_way = json!({"account": "a-wecom", "staff": ["a-staff"], "state": "a-cw-state"});
    app.post(&a.secret_key, "/api/v1/contact-ways", &a_way).await.ok();
    let a_ways = app.get(&a.secret_key, "/api/v1/contact-ways").await.ok();
    assert_eq!(a_ways.as_array().map(Vec::len), Some(1), "{a_ways}");
    // B: one profile of its own.
    app.ingest(&b.write_key, vec![event("b-1", "like", "douyin", json!({"user_id": "b-user-1"}), 1.0)]).await;

    // A sees its own data, so the checks below are not vacuous.
    let a_summary = app.get(&a.secret_key, "/api/v1/summary").await.ok();
    assert_eq!((a_summary["profiles"].clone(), a_summary["events"].clone()), (json!(4), json!(8)), "{a_summary}");
    assert_eq!(a_summary["merges"], 1, "{a_summary}");
    let a_ids: Vec<u64> = (1..=4).collect();
    for id in &a_ids {
        app.get(&a.secret_key, &format!("/api/v1/profiles/{id}")).await.ok();
    }
    assert_eq!(app.get(&a.secret_key, "/api/v1/profiles/3/merges").await.ok().as_array().map(Vec::len), Some(1));
    let a_refusals = app.get(&a.secret_key, "/api/v1/identity/refusals").await.ok();
    assert!(!a_refusals.as_array().unwrap().is_empty(), "A must hold a refusal: {a_refusals}");
    let a_profile_1 = app.lookup(&a.secret_key, "user_id", "a-user-1").await.expect("A's profile");
    let b_own = app.profile_id(&b.secret_key, "user_id", "b-user-1").await;

    let assert_clean = |what: &str, reply: &Reply| {
        for secret in A_SECRETS {
            assert!(!reply.text.contains(secret), "{what}: B sees A's {secret:?}: {}", reply.text);
        }
    };

    // Every route of the OpenAPI document, ingestion last (it adds data to B).
    let doc = app.send(app.client.get(app.url("/openapi.json"))).await.ok();
    let mut routes: Vec<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .filter(|(_, path)| !["/healthz", "/metrics", "/openapi.json"].contains(&path.as_str()))
        .collect();
    routes.sort_by_key(|(method, path)| {
        (method == "post" && (path == "/api/v1/events" || path == "/v1/{call}"), path.clone())
    });
    let mut checked = BTreeSet::new();
    for (method, path) in &routes {
        let what = format!("{} {path}", method.to_uppercase());
        match (method.as_str(), path.as_str()) {
            ("get", "/api/v1/profiles") => {
                let reply = app.get_query(&b.secret_key, path, &[("limit", "1000")]).await;
                assert_clean(&what, &reply);
                assert_eq!(ids_of(&reply.ok()), set(&[b_own]), "{what}");
                for (key, value) in [("q", "a-user"), ("q", "13800138001"), ("channel", "web")] {
                    let reply = app.get_query(&b.secret_key, path, &[(key, value)]).await;
                    assert_clean(&what, &reply);
                    assert_eq!(reply.ok()["items"], json!([]), "{what}?{key}={value}");
                }
            }
            ("get", "/api/v1/profiles/{id}") => {
                for id in &a_ids {
                    let reply = app.get(&b.secret_key, &format!("/api/v1/profiles/{id}")).await;
                    assert_clean(&what, &reply);
                    if *id != b_own {
                        reply.assert_error(404, "no_such_profile");
                    }
                }
            }
            ("get", "/api/v1/profiles/lookup") => {
                for (kind, value) in [
                    ("user_id", "a-user-1"),
                    ("user_id", "a-user-2"),
                    ("phone", "13800138001"),
                    ("email", "a-merge@example.com"),
                    ("anonymous_id", "a-anon-4"),
                    ("user_id", "a-seg-user"),
                ] {
                    // (The 404 message echoes B's own query, so no assert_clean here.)
                    let reply = app.get_query(&b.secret_key, path, &[("kind", kind), ("value", value)]).await;
                    reply.assert_error(404, "no_such_profile");
                    assert!(reply.json.get("id").is_none(), "{what}: {}", reply.text);
                }
            }
            ("get", "/api/v1/profiles/{id}/events") => {
                for id in &a_ids {
                    let reply = app.get(&b.secret_key, &format!("/api/v1/profiles/{id}/events")).await;
                    assert_clean(&what, &reply);
                    if *id == b_own {
                        assert_eq!(reply.ok().as_array().map(Vec::len), Some(1), "{what}");
                    } else {
                        reply.assert_error(404, "no_such_profile");
                    }
                }
            }
            ("get", "/api/v1/profiles/{id}/merges") => {
                for id in &a_ids {
                    let reply = app.get(&b.secret_key, &format!("/api/v1/profiles/{id}/merges")).await;
                    assert_clean(&what, &reply);
                    if *id == b_own {
                        assert_eq!(reply.ok(), json!([]), "{what}");
                    } else {
                        reply.assert_error(404, "no_such_profile");
                    }
                }
            }
            ("post", "/api/v1/profiles/{id}/unmerge") => {
                let reply = app.post(&b.secret_key, "/api/v1/profiles/3/unmerge", &json!({"merged_id": 4})).await;
                assert_clean(&what, &reply);
                assert!(reply.status.is_client_error(), "{what}: {}", reply.text);
                let reply = app.post(&b.secret_key, "/api/v1/profiles/1/unmerge", &json!({"merged_id": 4})).await;
                assert!(reply.status.is_client_error(), "{what}: {}", reply.text);
                let merges = app.get(&a.secret_key, "/api/v1/profiles/3/merges").await.ok();
                assert_eq!(merges.as_array().map(Vec::len), Some(1), "B undid A's merge: {merges}");
            }
            ("get", "/api/v1/summary") => {
                let reply = app.get(&b.secret_key, path).await;
                assert_clean(&what, &reply);
                let summary = reply.ok();
                assert_eq!(summary["profiles"], 1, "{what}: {summary}");
                assert_eq!(summary["events"], 1, "{what}: {summary}");
                assert_eq!(summary["orders"], 0, "{what}: {summary}");
                assert_eq!(summary["net_revenue"], 0.0, "{what}: {summary}");
                assert_eq!(summary["merges"], 0, "{what}: {summary}");
                assert_eq!(summary["refused_merges"], 0, "{what}: {summary}");
                assert_eq!(summary["tenant_id"], b.id.0, "{what}: {summary}");
            }
            ("get", "/api/v1/settings") => {
                let reply = app.get(&b.secret_key, path).await;
                assert_clean(&what, &reply);
                assert_eq!(reply.ok()["scores"]["weights"]["like"], 1.0);
            }
            ("put", "/api/v1/settings") => {
                let mut mine = app.get(&b.secret_key, "/api/v1/settings").await.ok();
                mine["scores"]["weights"]["like"] = json!(77.0);
                let reply = app.put(&b.secret_key, path, &mine).await;
                assert_clean(&what, &reply);
                reply.ok();
                let theirs = app.get(&a.secret_key, "/api/v1/settings").await.ok();
                assert_eq!(theirs, settings, "{what}: B's PUT changed A's settings");
            }
            ("get", "/api/v1/accounts") => {
                let theirs = app.get(&a.secret_key, path).await.ok();
                assert!(theirs.to_string().contains("a-account"), "A must see its account: {theirs}");
                let reply = app.get(&b.secret_key, path).await;
                assert_clean(&what, &reply);
                let mine = reply.ok();
                let mine = mine.as_array().expect("accounts");
                assert_eq!(mine.len(), 1, "{what}: {mine:?}");
                assert_eq!((mine[0]["account"].clone(), mine[0]["events"].clone()), (json!("brand-main"), json!(1)));
            }
            ("get", "/api/v1/identity/refusals") => {
                let reply = app.get(&b.secret_key, path).await;
                assert_clean(&what, &reply);
                assert_eq!(reply.ok(), json!([]), "{what}");
            }
            ("get", "/api/v1/tag-groups") | ("get", "/api/v1/tags") | ("get", "/api/v1/segments") => {
                let reply = app.get(&b.secret_key, path).await;
                assert_clean(&what, &reply);
                assert_eq!(reply.ok(), json!([]), "{what}");
            }
            ("post", "/api/v1/tag-groups") | ("post", "/api/v1/tags") => {
                let reply = app.post(&b.secret_key, path, &json!({"name": "a-tag-1"})).await;
                reply.ok();
                assert_eq!(app.get(&a.secret_key, path).await.ok().as_array().map(Vec::len), Some(2), "{what}");
                if path == "/api/v1/tags" {
                    // A rule tag in B cannot read A's tags.
                    let rule = json!({"name": "b-rule", "condition": "tagged(\"a-tag-2\")"});
                    app.post(&b.secret_key, path, &rule).await.assert_error(400, "invalid_condition");
                }
            }
            ("delete", "/api/v1/tag-groups/{id}") | ("delete", "/api/v1/tags/{id}") => {
                let reply =
                    app.send(app.client.delete(app.url(&path.replace("{id}", "2"))).bearer_auth(&b.secret_key)).await;
                assert_clean(&what, &reply);
                assert_eq!(reply.status.as_u16(), 404, "{what}: {}", reply.text);
                let list = path.trim_end_matches("/{id}");
                assert_eq!(app.get(&a.secret_key, list).await.ok().as_array().map(Vec::len), Some(2), "{what}");
            }
            ("get", "/api/v1/profiles/{id}/tags")
            | ("get", "/api/v1/profiles/{id}/segments")
            | ("get", "/api/v1/profiles/{id}/activity") => {
                for id in &a_ids {
                    let reply = app.get(&b.secret_key, &path.replace("{id}", &id.to_string())).await;
                    assert_clean(&what, &reply);
                    if *id != b_own {
                        reply.assert_error(404, "no_such_profile");
                    }
                }
            }
            ("post", "/api/v1/profiles/{id}/tags") => {
                for id in &a_ids {
                    let reply = app
                        .post(&b.secret_key, &format!("/api/v1/profiles/{id}/tags"), &json!({"remove": ["a-tag-1"]}))
                        .await;
                    assert!(reply.status.is_client_error(), "{what}: {}", reply.text);
                }
                let tags = app.get(&a.secret_key, "/api/v1/profiles/1/tags").await.ok();
                assert_eq!(tags["tags"], json!(["a-tag-1"]), "B changed A's tags: {tags}");
            }
            ("post", "/api/v1/segments") => {
                let reply = app.post(&b.secret_key, path, &json!({"name": "b-seg", "condition": "reachable"})).await;
                assert_clean(&what, &reply);
                assert_eq!(reply.ok()["id"], 1, "{what}");
            }
            ("post", "/api/v1/segments/preview") => {
                let reply = app.post(&b.secret_key, path, &json!({"condition": "channel = douyin"})).await;
                assert_clean(&what, &reply);
                assert_eq!(reply.ok()["size"], 1, "{what}");
                let reply = app.post(&b.secret_key, path, &json!({"condition": "tagged(\"a-tag-1\")"})).await;
                reply.assert_error(400, "invalid_condition");
            }
            ("put", "/api/v1/tags/{id}") => {
                // B cannot redefine A's tags (B may have a manual tag 1 of its own by now).
                let before = app.get(&a.secret_key, "/api/v1/tags").await.ok();
                for id in [1, 2] {
                    let concrete = path.replace("{id}", &id.to_string());
                    let request = app.client.put(app.url(&concrete)).json(&json!({"condition": "reachable"}));
                    let reply = app.send(request.bearer_auth(&b.secret_key)).await;
                    assert_clean(&what, &reply);
                    assert!(matches!(reply.status.as_u16(), 400 | 404), "{what}: {}", reply.text);
                }
                assert_eq!(app.get(&a.secret_key, "/api/v1/tags").await.ok(), before, "{what}");
            }
            (_, p) if p.starts_with("/api/v1/segments/{id}") => {
                let concrete = path.replace("{id}", "2");
                let request = match method.as_str() {
                    "get" => app.client.get(app.url(&concrete)),
                    "put" => app.client.put(app.url(&concrete)).json(&json!({"name": "x"})),
                    "delete" => app.client.delete(app.url(&concrete)),
                    _ => app.client.post(app.url(&concrete)).json(&json!({"add": ["a-tag-1"]})),
                };
                let reply = app.send(request.bearer_auth(&b.secret_key)).await;
                assert_clean(&what, &reply);
                reply.assert_error(404, "no_such_segment");
                assert_eq!(app.get(&a.secret_key, "/api/v1/segments/2").await.ok(), a_segment_2, "{what}");
            }
            ("get", "/api/v1/templates")
            | ("get", "/api/v1/campaigns")
            | ("get", "/api/v1/suppressions")
            | ("get", "/api/v1/staff-tasks") => {
                let reply = app.get(&b.secret_key, path).await;
                assert_clean(&what, &reply);
                assert_eq!(reply.ok(), json!([]), "{what}");
            }
            ("post", "/api/v1/templates") => {
                let definition = json!({"variants": {"default": {"text": "b"}}});
                let reply =
                    app.post(&b.secret_key, path, &json!({"name": "a-template-1", "definition": definition})).await;
                assert_clean(&what, &reply);
                assert_eq!(reply.ok()["id"], 1, "{what}");
                assert_eq!(app.get(&a.secret_key, path).await.ok().as_array().map(Vec::len), Some(2), "{what}");
            }
            (_, p) if p.starts_with("/api/v1/templates/{id}") => {
                let concrete = path.replace("{id}", "2");
                let request = match method.as_str() {
                    "get" => app.client.get(app.url(&concrete)),
                    "put" => app.client.put(app.url(&concrete)).json(&json!({"variants": {"default": {"text": "x"}}})),
                    "delete" => app.client.delete(app.url(&concrete)),
                    _ => app.client.post(app.url(&concrete)).json(&json!({"profile_id": 1})),
                };
                let reply = app.send(request.bearer_auth(&b.secret_key)).await;
                assert_clean(&what, &reply);
                reply.assert_error(404, "no_such_template");
                let a_template = app.get(&a.secret_key, "/api/v1/templates/2").await.ok();
                assert!(a_template.to_string().contains("a-template-text"), "{what}: {a_template}");
            }
            ("post", "/api/v1/campaigns") | ("post", "/api/v1/campaigns/dry-run") => {
                let body = if path.ends_with("dry-run") {
                    a_spec.clone()
                } else {
                    json!({"name": "a-campaign", "spec": a_spec})
                };
                let reply = app.post(&b.secret_key, path, &body).await;
                assert_clean(&what, &reply);
                reply.assert_error(400, "invalid_campaign");
                assert_eq!(app.get(&a.secret_key, "/api/v1/campaigns").await.ok().as_array().map(Vec::len), Some(1));
            }
            (_, p) if p.starts_with("/api/v1/campaigns/{id}") => {
                let concrete = path.replace("{id}", "1");
                let request = match method.as_str() {
                    "get" => app.client.get(app.url(&concrete)),
                    _ => app.client.post(app.url(&concrete)).json(&json!({})),
                };
                let reply = app.send(request.bearer_auth(&b.secret_key)).await;
                assert_clean(&what, &reply);
                reply.assert_error(404, "no_such_campaign");
                assert_eq!(app.get(&a.secret_key, "/api/v1/campaigns/1").await.ok(), a_campaign, "{what}");
            }
            ("post", "/api/v1/suppressions") => {
                let mine = json!({"list": "b-list", "identities": [{"kind": "phone", "value": "13800138001"}]});
                let reply = app.post(&b.secret_key, path, &mine).await;
                assert_eq!(reply.ok()["added"], 1, "{what}");
                let theirs = app.get(&a.secret_key, path).await.ok();
                assert_eq!(theirs.as_array().map(Vec::len), Some(1), "{what}: {theirs}");
            }
            ("delete", "/api/v1/suppressions") => {
                let query = [("list", "a-list"), ("kind", "phone"), ("value", "13800138001")];
                let reply = app.send(app.client.delete(app.url(path)).query(&query).bearer_auth(&b.secret_key)).await;
                assert_clean(&what, &reply);
                reply.assert_error(404, "not_found");
                let theirs = app.get(&a.secret_key, "/api/v1/suppressions").await.ok();
                assert_eq!(theirs[0]["list"], "a-list", "{what}: {theirs}");
            }
            ("get", "/api/v1/contact-ways") => {
                let reply = app.get(&b.secret_key, path).await;
                assert_clean(&what, &reply);
                assert!(!reply.text.contains("a-cw-state"), "{what}: {}", reply.text);
                assert_eq!(reply.ok(), json!([]), "{what}");
            }
            ("post", "/api/v1/contact-ways") | ("post", "/api/v1/wecom/sync") | ("post", "/api/v1/wecom/mark-tag") => {
                // B names A's account: B has no such account, and nothing reaches A's WeCom.
                let body = json!({"account": "a-wecom", "staff": ["a-staff"], "state": "a-cw-state", "segment_id": 2,
                    "add_tag": ["a-tag"]});
                let body = if path.ends_with("mark-tag") { with(body, "staff", json!("a-staff")) } else { body };
                let reply = app.post(&b.secret_key, path, &body).await;
                assert_clean(&what, &reply);
                reply.assert_error(404, "no_send_account");
                assert_eq!(app.get(&a.secret_key, "/api/v1/contact-ways").await.ok(), a_ways, "{what}");
                let received = wecom_stand_in.state.received();
                assert_eq!((received.contact_ways.len(), received.tags.len()), (1, 0), "{what}");
                assert_eq!(received.calls_to("/cgi-bin/externalcontact/batch/get_by_user"), 0, "{what}");
            }
            ("post", "/api/v1/events") => {
                // B sends with A's message_id and A's identity: B's own event, A untouched.
                let reply = app
                    .events(&b.write_key, &event("shared-1", "like", "douyin", json!({"user_id": "a-user-1"}), 1.0))
                    .await;
                assert_eq!(reply.ok(), json!({"accepted": 1, "duplicates": 0, "errors": []}), "{what}");
            }
            ("post", "/v1/{call}") => {
                let reply = segment(app, &b.write_key, "track", &seg).await.ok();
                assert_eq!((reply["accepted"].clone(), reply["duplicates"].clone()), (json!(1), json!(0)), "{what}");
            }
            _ => panic!("{what} has no tenant-isolation check: add one to case_tenant_isolation_on_every_route"),
        }
        checked.insert(what);
    }
    assert!(checked.len() >= 12, "the OpenAPI document lists too few routes: {checked:?}");

    // After B's writes, A is exactly as before.
    let a_after = app.get(&a.secret_key, "/api/v1/summary").await.ok();
    assert_eq!(a_after["events"], a_summary["events"], "{a_after}");
    assert_eq!(a_after["profiles"], a_summary["profiles"], "{a_after}");
    let a_profile_1_after = app.lookup(&a.secret_key, "user_id", "a-user-1").await.expect("A's profile");
    assert_eq!(a_profile_1_after["event_count"], a_profile_1["event_count"]);
    assert_eq!(a_profile_1_after["id"], a_profile_1["id"]);
}

async fn case_same_message_id_in_two_tenants(app: &TestApp) {
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let shared = event("same-id", "like", "douyin", json!({"user_id": "someone"}), 1.0);
    for t in [&a, &b] {
        let reply = app.events(&t.write_key, &shared).await.ok();
        assert_eq!(reply, json!({"accepted": 1, "duplicates": 0, "errors": []}), "tenant {}", t.id);
    }
    for t in [&a, &b] {
        let reply = app.events(&t.write_key, &shared).await.ok();
        assert_eq!(reply["duplicates"], 1, "tenant {}", t.id);
        let seg = json!({"userId": "someone", "event": "Product Viewed", "messageId": "same-seg"});
        assert_eq!(segment(app, &t.write_key, "track", &seg).await.ok()["accepted"], 1, "tenant {}", t.id);
        let profile = app.lookup(&t.secret_key, "user_id", "someone").await.expect("profile");
        assert_eq!(profile["event_count"], 2, "tenant {}: {profile}", t.id);
    }
}

// ---------------------------------------------------------------------------------------------
// 7. operations

async fn case_ops_endpoints(app: &TestApp) {
    let t = app.tenant("acme").await;
    let health = app.send(app.client.get(app.url("/healthz"))).await;
    assert!(health.content_type.starts_with("application/json"));
    let health = health.ok();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["tenants"], 1, "{health}");
    assert_eq!(health["store"], app.backend, "{health}");

    app.ingest(
        &t.write_key,
        vec![
            event("o-1", "like", "douyin", json!({"user_id": "o1"}), 2.0),
            event("o-2", "like", "douyin", json!({"phone": "13700137000"}), 1.5),
            event("o-3", "like", "douyin", json!({"user_id": "o1", "phone": "13700137000"}), 1.0),
        ],
    )
    .await;
    app.events(&t.write_key, &event("o-3", "like", "douyin", json!({"user_id": "o1"}), 1.0)).await.ok();
    app.events(&t.write_key, &json!({"type": "like"})).await.assert_error(400, "missing_identity");

    let metrics = app.send(app.client.get(app.url("/metrics"))).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.content_type.starts_with("text/plain"), "{}", metrics.content_type);
    let text = metrics.text;
    for needle in [
        "# TYPE siyu_events_ingested counter",
        "siyu_events_ingested_total{path=\"api\"} 3",
        "siyu_events_duplicate_total{path=\"api\"} 1",
        "# TYPE siyu_ingest_commit_seconds histogram",
        "siyu_ingest_commit_seconds_bucket{le=",
        "siyu_ingest_commit_seconds_count ",
        "# TYPE siyu_http_request_seconds histogram",
        "siyu_http_request_seconds_count{path=\"/api/v1/events\"} 3",
        "siyu_http_request_seconds_bucket{le=\"+Inf\",path=\"/api/v1/events\"} 3",
        "siyu_http_requests_total{route=\"/api/v1/events\",status=\"200\"}",
        "siyu_http_requests_total{route=\"/api/v1/events\",status=\"400\"}",
        "siyu_events_rejected_total{code=\"missing_identity\"} 1",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle:?}:\n{text}");
    }
    assert_eq!(metric_value(&text, "siyu_profile_merges_total"), 1.0, "{text}");
    assert!(metric_value(&text, "siyu_ingest_commit_seconds_count") >= 2.0, "{text}");

    let doc = app.send(app.client.get(app.url("/openapi.json"))).await;
    assert!(doc.content_type.starts_with("application/json"));
    let doc = doc.ok();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{doc}");
    let paths: BTreeSet<&str> = doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
    let expected = [
        "/api/v1/events",
        "/api/v1/profiles",
        "/api/v1/profiles/{id}",
        "/api/v1/profiles/lookup",
        "/api/v1/profiles/{id}/events",
        "/api/v1/profiles/{id}/merges",
        "/api/v1/profiles/{id}/unmerge",
        "/api/v1/summary",
        "/api/v1/settings",
        "/api/v1/identity/refusals",
        "/api/v1/accounts",
        "/api/v1/tags",
        "/api/v1/tag-groups",
        "/api/v1/segments",
        "/api/v1/segments/preview",
        "/api/v1/segments/{id}/members",
        "/api/v1/segments/{id}/export",
        "/api/v1/profiles/{id}/tags",
        "/v1/{call}",
        "/healthz",
        "/metrics",
    ];
    for path in expected {
        assert!(paths.contains(path), "/openapi.json lacks {path}: {paths:?}");
    }
    assert!(doc["paths"]["/api/v1/settings"]["get"].is_object() && doc["paths"]["/api/v1/settings"]["put"].is_object());
    // And every documented route exists: none answers no_such_route or 405.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let Ok(method) = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()) else { continue };
            let concrete = path.replace("{id}", "1").replace("{call}", "track");
            let reply =
                app.send(app.client.request(method.clone(), app.url(&concrete)).bearer_auth(&t.secret_key)).await;
            assert_ne!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(reply.code(), "no_such_route", "{method} {path}: {}", reply.text);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 8. tags and segments

async fn case_tags_and_segments_end_to_end(app: &TestApp) {
    let t = app.tenant("acme").await;
    let ids = seed_profiles(app, &t).await;
    let key = t.secret_key.clone();
    let group = app.post(&key, "/api/v1/tag-groups", &json!({"name": "意向"})).await.ok();
    let tag = app.post(&key, "/api/v1/tags", &json!({"name": "高意向", "group_id": group["id"]})).await.ok();
    assert_eq!((tag["kind"].clone(), tag["group_id"].clone()), (json!("manual"), group["id"].clone()), "{tag}");
    app.post(&key, "/api/v1/tags", &json!({"name": "高意向"})).await.assert_error(409, "name_taken");
    app.post(&key, "/api/v1/tags", &json!({"name": "x", "group_id": 99})).await.assert_error(400, "invalid_request");

    // Manual tags: on the profile, in its history, in the list filter.
    let fan = ids["fan"];
    let tagged = app.post(&key, &format!("/api/v1/profiles/{fan}/tags"), &json!({"add": ["高意向"]})).await.ok();
    assert_eq!(tagged["tags"], json!(["高意向"]), "{tagged}");
    assert_eq!(tagged["history"][0]["action"], "added", "{tagged}");
    assert_eq!(tagged["history"][0]["actor"], "api", "{tagged}");
    app.post(&key, &format!("/api/v1/profiles/{fan}/tags"), &json!({"add": ["高意象"]}))
        .await
        .assert_error(404, "no_such_tag");
    app.post(&key, "/api/v1/profiles/999/tags", &json!({"add": ["高意向"]})).await.assert_error(404, "no_such_profile");
    let page = app.get_query(&key, "/api/v1/profiles", &[("tag", "高意向")]).await.ok();
    assert_eq!(ids_of(&page), set(&[fan]), "{page}");
    assert_eq!(app.get(&key, "/api/v1/tags").await.ok()[0]["profiles"], 1);

    // Preview, then save.
    let condition = "reachable and not tagged(\"高意向\")";
    let preview = app.post(&key, "/api/v1/segments/preview", &json!({"condition": condition, "sample": 1})).await.ok();
    assert_eq!(preview["size"], 2, "{preview}");
    assert_eq!(preview["sample"].as_array().map(Vec::len), Some(1), "{preview}");
    let seg = app.post(&key, "/api/v1/segments", &json!({"name": "可触达未跟进", "condition": condition})).await.ok();
    assert_eq!(seg["size"], 2, "{seg}");
    let sid = seg["id"].as_i64().unwrap();
    let dup = app.post(&key, "/api/v1/segments", &json!({"name": "可触达未跟进", "condition": "reachable"})).await;
    dup.assert_error(409, "name_taken");

    // An event makes lurk reachable: it enters at once, with the event on record.
    let lurk = ids["lurk"];
    app.ingest(&t.write_key, vec![event("s-1", "follow", "kuaishou", json!({"user_id": "lurk1"}), 0.1)]).await;
    assert_eq!(app.get(&key, &format!("/api/v1/segments/{sid}")).await.ok()["size"], 3);
    let mine = app.get(&key, &format!("/api/v1/profiles/{lurk}/segments")).await.ok();
    assert_eq!(mine["segments"][0]["id"], sid, "{mine}");
    assert_eq!(mine["history"][0]["change"], "entered", "{mine}");
    assert!(mine["history"][0]["seq"].is_i64(), "{mine}");
    // A tag takes it out again.
    app.post(&key, &format!("/api/v1/profiles/{lurk}/tags"), &json!({"add": ["高意向"]})).await.ok();
    assert_eq!(app.get(&key, &format!("/api/v1/segments/{sid}")).await.ok()["size"], 2);
    let changes = app.get(&key, &format!("/api/v1/segments/{sid}/changes")).await.ok();
    assert_eq!(changes[0]["change"], "exited", "{changes}");
    assert_eq!(changes[0]["profile_id"], lurk, "{changes}");
    // The profile's activity tells the story, newest first: out because of the tag, which the
    // API put on; in because of the follow.
    let activity = app.get(&key, &format!("/api/v1/profiles/{lurk}/activity")).await.ok();
    let items = activity["items"].as_array().expect("items");
    let kinds: Vec<&str> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..3], ["segment", "tag", "segment"], "{activity}");
    assert_eq!(
        (items[0]["segment"]["change"].clone(), items[0]["segment"]["name"].clone()),
        (json!("exited"), json!("可触达未跟进"))
    );
    assert_eq!((items[1]["tag"]["tag"].clone(), items[1]["tag"]["action"].clone()), (json!("高意向"), json!("added")));
    assert_eq!(items[1]["tag"]["actor"], "api", "{activity}");
    assert_eq!(items[2]["segment"]["change"], "entered", "{activity}");
    let follow = items.iter().find(|i| i["event"]["type"] == "follow").expect("the follow event");
    assert_eq!(follow["seq"], items[2]["seq"], "entered because of the follow: {activity}");
    // Paging: two at a time, no item twice, none lost.
    let page = app.get_query(&key, &format!("/api/v1/profiles/{lurk}/activity"), &[("limit", "2")]).await.ok();
    let cursor = page["next_cursor"].as_str().expect("more").to_string();
    let next = app
        .get_query(&key, &format!("/api/v1/profiles/{lurk}/activity"), &[("limit", "2"), ("before", &cursor)])
        .await
        .ok();
    assert_eq!(next["items"][0], items[2], "{next}");
    app.get_query(&key, &format!("/api/v1/profiles/{lurk}/activity"), &[("before", "yesterday")])
        .await
        .assert_error(400, "invalid_query");
    app.get(&key, "/api/v1/profiles/999/activity").await.assert_error(404, "no_such_profile");

    // Members page by page; export with chosen fields.
    let first = app.get_query(&key, &format!("/api/v1/segments/{sid}/members"), &[("limit", "1")]).await.ok();
    let cursor = first["next_cursor"].as_str().expect("a second page").to_string();
    let second = app
        .get_query(&key, &format!("/api/v1/segments/{sid}/members"), &[("limit", "1"), ("cursor", &cursor)])
        .await
        .ok();
    assert_eq!(second["next_cursor"], Value::Null, "{second}");
    let members: BTreeSet<u64> = ids_of(&first).union(&ids_of(&second)).copied().collect();
    assert_eq!(members, set(&[ids["sub"], ids["asof"]]));
    let csv =
        app.get_query(&key, &format!("/api/v1/segments/{sid}/export"), &[("fields", "id,user_id,tier,tags")]).await;
    assert!(csv.content_type.starts_with("text/csv"), "{}", csv.content_type);
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines[0], "id,user_id,tier,tags");
    assert_eq!(lines.len(), 3, "{}", csv.text);
    assert!(lines.contains(&format!("{},sub1,passerby,", ids["sub"]).as_str()), "{}", csv.text);
    let ndjson = app
        .get_query(&key, &format!("/api/v1/segments/{sid}/export"), &[("format", "ndjson"), ("fields", "id,tier")])
        .await;
    let first_line: Value = serde_json::from_str(ndjson.text.lines().next().unwrap()).unwrap();
    assert_eq!(first_line["tier"], "passerby", "{}", ndjson.text);
    app.get_query(&key, &format!("/api/v1/segments/{sid}/export"), &[("fields", "id,password")])
        .await
        .assert_error(400, "invalid_request");

    // Bulk by segment.
    app.post(&key, "/api/v1/tags", &json!({"name": "VIP"})).await.ok();
    let bulk = app.post(&key, &format!("/api/v1/segments/{sid}/tags"), &json!({"add": ["VIP"]})).await.ok();
    assert_eq!(bulk["operations"], 2, "{bulk}");
    let vip = app.get_query(&key, "/api/v1/profiles", &[("tag", "VIP")]).await.ok();
    assert_eq!(ids_of(&vip), set(&[ids["sub"], ids["asof"]]));
    let history = app.get(&key, &format!("/api/v1/profiles/{}/tags", ids["sub"])).await.ok();
    assert_eq!(history["history"][0]["actor"], format!("segment:{sid}"), "{history}");

    // A tag a segment reads cannot be deleted.
    let tag_id = tag["id"].as_i64().unwrap();
    let reply = app.send(app.client.delete(app.url(&format!("/api/v1/tags/{tag_id}"))).bearer_auth(&key)).await;
    reply.assert_error(409, "in_use");

    // A rebuild from the log and the records reproduces tags and memberships.
    let before_tags = app.get(&key, &format!("/api/v1/profiles/{lurk}/tags")).await.ok()["tags"].clone();
    let before = app.get(&key, "/api/v1/segments").await.ok();
    app.engine.rebuild(t.id).await.expect("rebuild");
    assert_eq!(app.get(&key, "/api/v1/segments").await.ok(), before);
    assert_eq!(app.get(&key, &format!("/api/v1/profiles/{lurk}/tags")).await.ok()["tags"], before_tags);

    // The sweep records today's size.
    app.engine.sweep_segments().await.expect("sweep");
    let sizes = app.get(&key, &format!("/api/v1/segments/{sid}/sizes")).await.ok();
    assert_eq!(sizes[0]["size"], 2, "{sizes}");

    // Redefine, then delete.
    let updated = app
        .put(&key, &format!("/api/v1/segments/{sid}"), &json!({"condition": "tagged(\"VIP\") OR tier = 好感粉"}))
        .await
        .ok();
    assert_eq!(updated["condition"], "tagged(\"VIP\") or tier = 好感粉", "{updated}");
    assert_eq!(updated["size"], 3, "{updated}");
    let reply = app.send(app.client.delete(app.url(&format!("/api/v1/segments/{sid}"))).bearer_auth(&key)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    app.get(&key, &format!("/api/v1/segments/{sid}")).await.assert_error(404, "no_such_segment");
    let reply = app.send(app.client.delete(app.url(&format!("/api/v1/tags/{tag_id}"))).bearer_auth(&key)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let gone = app.get(&key, &format!("/api/v1/profiles/{fan}/tags")).await.ok();
    assert_eq!(gone["tags"], json!([]), "{gone}");
}

async fn case_rule_tags(app: &TestApp) {
    let t = app.tenant("acme").await;
    let ids = seed_profiles(app, &t).await;
    let key = t.secret_key.clone();
    let reachable = set(&[ids["fan"], ids["sub"], ids["asof"]]);

    // A rule tag is applied at once to everyone its condition matches.
    let rule = app.post(&key, "/api/v1/tags", &json!({"name": "可触达", "condition": "reachable = true"})).await.ok();
    assert_eq!((rule["kind"].clone(), rule["condition"].clone()), (json!("rule"), json!("reachable = true")), "{rule}");
    assert_eq!(rule["profiles"], 3, "{rule}");
    let rule_id = rule["id"].as_i64().unwrap();
    let page = app.get_query(&key, "/api/v1/profiles", &[("tag", "可触达")]).await.ok();
    assert_eq!(ids_of(&page), reachable, "{page}");
    let history = app.get(&key, &format!("/api/v1/profiles/{}/tags", ids["fan"])).await.ok();
    assert_eq!(history["tags"], json!(["可触达"]), "{history}");
    assert_eq!(history["history"][0]["actor"], format!("rule:{rule_id}"), "{history}");

    // A rule tag reading a rule tag, and a segment reading both.
    let chained = json!({"name": "快手可触达", "condition": "tagged(\"可触达\") and channel = kuaishou"});
    let chained = app.post(&key, "/api/v1/tags", &chained).await.ok();
    assert_eq!(chained["profiles"], 0, "{chained}");
    let seg =
        app.post(&key, "/api/v1/segments", &json!({"name": "s", "condition": "tagged(\"快手可触达\")"})).await.ok();
    let sid = seg["id"].as_i64().unwrap();
    assert_eq!(seg["size"], 0, "{seg}");

    // An event makes lurk reachable: both rule tags follow, in order, and the segment after them.
    let lurk = ids["lurk"];
    app.ingest(&t.write_key, vec![event("r-1", "follow", "kuaishou", json!({"user_id": "lurk1"}), 0.1)]).await;
    let tags = app.get(&key, &format!("/api/v1/profiles/{lurk}/tags")).await.ok();
    assert_eq!(tags["tags"].as_array().map(Vec::len), Some(2), "{tags}");
    let entry = tags["history"].as_array().unwrap().iter().find(|h| h["tag"] == "可触达").expect("recorded").clone();
    assert_eq!((entry["action"].clone(), entry["actor"].clone()), (json!("added"), json!(format!("rule:{rule_id}"))));
    let timeline = app.get(&key, &format!("/api/v1/segments/{sid}/changes")).await.ok();
    assert_eq!(timeline[0]["profile_id"], lurk, "{timeline}");
    assert_eq!(entry["after_seq"], timeline[0]["seq"], "the tag names the event that caused it: {tags}");
    assert_eq!(app.get(&key, &format!("/api/v1/segments/{sid}")).await.ok()["size"], 1);

    // Rule tags are not set by hand; what they read cannot be deleted.
    let manual = app.post(&key, &format!("/api/v1/profiles/{lurk}/tags"), &json!({"remove": ["可触达"]})).await;
    manual.assert_error(400, "rule_tag");
    let reply = app.send(app.client.delete(app.url(&format!("/api/v1/tags/{rule_id}"))).bearer_auth(&key)).await;
    reply.assert_error(409, "in_use");

    // Bad conditions and cycles are refused at save time.
    let reply = app.post(&key, "/api/v1/tags", &json!({"name": "x", "condition": "tire = 1"})).await;
    reply.assert_error(400, "invalid_condition");
    assert_eq!((reply.json["line"].as_u64(), reply.json["column"].as_u64()), (Some(1), Some(1)), "{}", reply.text);
    let reply = app.post(&key, "/api/v1/tags", &json!({"name": "自己", "condition": "not tagged(\"自己\")"})).await;
    reply.assert_error(400, "cycle");
    assert!(reply.json["message"].as_str().unwrap().contains("自己 → 自己"), "{}", reply.text);
    assert_eq!(app.get(&key, "/api/v1/tags").await.ok().as_array().map(Vec::len), Some(2));
    // Redefining the first rule tag to read the second would close a cycle.
    let chained_id = chained["id"].as_i64().unwrap();
    let cyclic = json!({"condition": "tagged(\"快手可触达\") or reachable"});
    let reply = app.put(&key, &format!("/api/v1/tags/{rule_id}"), &cyclic).await;
    reply.assert_error(400, "cycle");
    assert!(reply.json["message"].as_str().unwrap().contains("可触达 → 快手可触达 → 可触达"), "{}", reply.text);
    let widened = json!({"condition": "tagged(\"可触达\")"});
    let widened = app.put(&key, &format!("/api/v1/tags/{chained_id}"), &widened).await.ok();
    assert_eq!(widened["profiles"], 4, "{widened}");
    assert_eq!(app.get(&key, &format!("/api/v1/segments/{sid}")).await.ok()["size"], 4, "the segment follows");
    app.put(&key, &format!("/api/v1/tags/{}", 999), &json!({"condition": "reachable"}))
        .await
        .assert_error(404, "no_such_tag");

    // A rebuild reproduces rule tags, their history and what reads them.
    let before_tags = app.get(&key, &format!("/api/v1/profiles/{lurk}/tags")).await.ok();
    let before = app.get(&key, "/api/v1/tags").await.ok();
    app.engine.rebuild(t.id).await.expect("rebuild");
    assert_eq!(app.get(&key, "/api/v1/tags").await.ok(), before);
    assert_eq!(app.get(&key, &format!("/api/v1/profiles/{lurk}/tags")).await.ok(), before_tags);
    assert_eq!(app.get(&key, &format!("/api/v1/segments/{sid}")).await.ok()["size"], 4);
}

async fn case_condition_errors_at_save_time(app: &TestApp) {
    let t = app.tenant("acme").await;
    let key = &t.secret_key;
    let cases = [
        ("(tier = true_fan and reachable", "syntax", 1, 31),
        ("tire = true_fan", "unknown_field", 1, 1),
        ("tagged(\"已流失\")", "unknown_tag", 1, 8),
        ("reachable and\ncount(order_paid, 11y) > 1", "bad_window", 2, 19),
        ("tier = 3", "type_mismatch", 1, 8),
    ];
    for (condition, code, line, column) in cases {
        for path in ["/api/v1/segments", "/api/v1/segments/preview"] {
            let reply = app.post(key, path, &json!({"name": "s", "condition": condition})).await;
            reply.assert_error(400, "invalid_condition");
            reply.assert_field("condition");
            assert_eq!(
                (reply.json["line"].as_u64(), reply.json["column"].as_u64()),
                (Some(line), Some(column)),
                "{condition}: {}",
                reply.text
            );
            assert_eq!(reply.json["errors"][0]["code"], code, "{condition}: {}", reply.text);
        }
    }
    assert_eq!(app.get(key, "/api/v1/segments").await.ok(), json!([]));
    app.post(key, "/api/v1/segments", &json!({"name": " ", "condition": "reachable"}))
        .await
        .assert_error(400, "invalid_request");
}

/// `curl -d` sends `application/x-www-form-urlencoded`: management routes take the JSON anyway,
/// as the ingestion routes do, and a body that is not JSON is a JSON error.
async fn case_json_bodies_need_no_json_content_type(app: &TestApp) {
    let t = app.tenant("acme").await;
    let form = |path: &str, body: &str| {
        app.client
            .post(app.url(path))
            .bearer_auth(&t.secret_key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
    };
    let created = app.send(form("/api/v1/tags", r#"{"name": "高意向"}"#)).await;
    assert_eq!(created.status, 200, "{}", created.json);
    assert_eq!(created.json["name"], "高意向");
    let preview = app.send(form("/api/v1/segments/preview", r#"{"condition": "reachable = true"}"#)).await;
    assert_eq!(preview.status, 200, "{}", preview.json);
    assert_eq!(preview.json["size"], 0);
    app.send(form("/api/v1/tags", r#"{"name": "#)).await.assert_error(400, "invalid_json");
    app.send(form("/api/v1/tags", r#"{"title": "x"}"#)).await.assert_error(400, "invalid_body");
}
