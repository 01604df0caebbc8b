//! Reach over HTTP as an operator meets it: templates refused at save time with the field, line
//! and column of each problem; a preview against a real profile; a campaign's dry run naming
//! every rule that holds people back; campaigns refused for a missing segment, template, account
//! or variable; the results after planning. Every reply is checked against `/openapi.json` by the
//! helpers. SQLite always; PostgreSQL when `SIYU_TEST_DATABASE_URL` is set.

// Each test binary compiles the shared helpers on its own and uses a part of them.
#[allow(dead_code)]
#[macro_use]
mod helpers;

use helpers::{days_ago, Tenant, TestApp};
use serde_json::{json, Value};

backend_tests! {
    case_templates_are_checked_at_save_with_positions,
    case_a_preview_renders_for_a_real_profile,
    case_campaigns_are_checked_and_dry_runs_name_every_rule,
}

fn event(id: &str, kind: &str, identities: Value, days: f64) -> Value {
    json!({"message_id": id, "type": kind, "channel": "wecom", "account": "corp", "identities": identities,
        "timestamp": days_ago(days)})
}

async fn shop(app: &TestApp) -> Tenant {
    let t = app.tenant("shop").await;
    let mut settings = app.get(&t.secret_key, "/api/v1/settings").await.ok();
    settings["reach"]["quiet_hours"] = Value::Null;
    settings["send_accounts"] = json!({"dry": {"channel": "wecom", "connector": "log", "base_url": "/dev/null"}});
    app.put(&t.secret_key, "/api/v1/settings", &settings).await.ok();
    t
}

async fn case_templates_are_checked_at_save_with_positions(app: &TestApp) {
    let t = shop(app).await;
    let key = t.secret_key.as_str();
    let save = |definition: Value| {
        let body = json!({"name": "welcome", "definition": definition});
        async move { app.post(key, "/api/v1/templates", &body).await }
    };
    // An unknown variable on line 2: the field, the line and the column of the name.
    let reply = save(json!({"variants": {"wecom": {"text": "您好\n{{ nmae }}，欢迎"}}})).await;
    reply.assert_error(400, "invalid_template");
    reply.assert_field("variants.wecom.text");
    assert_eq!((reply.json["line"].clone(), reply.json["column"].clone()), (json!(2), json!(4)), "{}", reply.text);
    assert_eq!(reply.json["errors"][0]["code"], "unknown_variable", "{}", reply.text);
    // A syntax error, an unknown field of a closed object, and an unknown channel, each reported.
    let reply = save(json!({"variants": {
        "default": {"text": "{{ name "},
        "douyin": {"text": "{{ event.amout }}"},
        "fax": {"text": "hi"}
    }}))
    .await;
    reply.assert_error(400, "invalid_template");
    let codes: Vec<&str> = reply.json["errors"].as_array().unwrap().iter().filter_map(|e| e["code"].as_str()).collect();
    for code in ["template_syntax", "unknown_field", "unknown_channel"] {
        assert!(codes.contains(&code), "{code} missing from {}", reply.text);
    }
    // Not JSON of a template at all.
    save(json!({"variants": "hello"})).await.assert_error(400, "invalid_template");
    // A good one saves, and the name is then taken.
    let good = json!({"purpose": "marketing", "vars": ["coupon_code"],
        "variants": {"default": {"text": "{{ name | default('亲') }}，券码 {{ vars.coupon_code }}"}}});
    let saved = save(good.clone()).await.ok();
    assert_eq!(saved["definition"]["purpose"], "marketing");
    save(good).await.assert_error(409, "name_taken");
    app.get(key, "/api/v1/templates/99").await.assert_error(404, "no_such_template");
}

async fn case_a_preview_renders_for_a_real_profile(app: &TestApp) {
    let t = shop(app).await;
    let mut add = event("add-1", "wecom_add", json!({"wecom_external_userid": "wm-1"}), 1.0);
    add["traits"] = json!({"name": "王小明"});
    app.ingest(&t.write_key, vec![add]).await;
    let id = app.profile_id(&t.secret_key, "wecom_external_userid", "wm-1").await;
    let definition = json!({"vars": ["coupon_code"], "variants": {
        "default": {"text": "{{ name | default('亲') }}，{{ tier_label }}专属券 {{ vars.coupon_code }}"},
        "wecom": {"text": "{{ name }}，企微专属券 {{ vars.coupon_code }}",
                  "attachments": [{"type": "link", "title": "领券", "url": "https://example.com/c/{{ vars.coupon_code }}"}]}
    }});
    let template =
        app.post(&t.secret_key, "/api/v1/templates", &json!({"name": "券", "definition": definition})).await.ok();
    let path = format!("/api/v1/templates/{}/preview", template["id"]);
    let wecom = app
        .post(&t.secret_key, &path, &json!({"profile_id": id, "channel": "wecom", "vars": {"coupon_code": "HG26"}}))
        .await
        .ok();
    assert_eq!(wecom["text"], "王小明，企微专属券 HG26", "{wecom}");
    assert_eq!(wecom["attachments"][0]["url"], "https://example.com/c/HG26", "{wecom}");
    let identity = json!({"kind": "wecom_external_userid", "value": "wm-1"});
    let other = app
        .post(&t.secret_key, &path, &json!({"identity": identity, "channel": "web", "vars": {"coupon_code": "X"}}))
        .await
        .ok();
    assert_eq!(other["text"], "王小明，路人粉专属券 X", "{other}");
    app.post(&t.secret_key, &path, &json!({"profile_id": 999, "vars": {"coupon_code": "X"}}))
        .await
        .assert_error(404, "no_such_profile");
    app.post(&t.secret_key, &path, &json!({"profile_id": id, "channel": "fax"}))
        .await
        .assert_error(400, "unknown_channel");
}

async fn case_campaigns_are_checked_and_dry_runs_name_every_rule(app: &TestApp) {
    let t = shop(app).await;
    let mut events = Vec::new();
    for i in 0..10 {
        events.push(event(&format!("add-{i}"), "wecom_add", json!({"wecom_external_userid": format!("wm-{i}")}), 2.0));
    }
    for i in 0..3 {
        events.push(event(&format!("td-{i}"), "unsubscribe", json!({"wecom_external_userid": format!("wm-{i}")}), 1.0));
    }
    app.ingest(&t.write_key, events).await;
    let suppression = json!({"list": "complaints", "identities": [{"kind": "wecom_external_userid", "value": "wm-9"}]});
    app.post(&t.secret_key, "/api/v1/suppressions", &suppression).await.ok();
    let segment = app
        .post(&t.secret_key, "/api/v1/segments", &json!({"name": "all", "condition": "event_count >= 1"}))
        .await
        .ok();
    let definition = json!({"vars": ["coupon_code"], "variants": {"default": {"text": "券 {{ vars.coupon_code }}"}}});
    let template =
        app.post(&t.secret_key, "/api/v1/templates", &json!({"name": "券", "definition": definition})).await.ok();
    let spec = json!({"template_id": template["id"], "audience": {"segment_id": segment["id"]}, "channel": "wecom",
        "account": "dry", "sender": "zhang", "vars": {"coupon_code": "HG"}});
    let key = t.secret_key.as_str();
    let refused = |field: &str, change: Value| {
        let mut bad = spec.clone();
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let field = field.to_string();
        async move {
            let reply = app.post(key, "/api/v1/campaigns/dry-run", &bad).await;
            reply.assert_error(400, "invalid_campaign");
            reply.assert_field(&field);
        }
    };
    refused("audience.segment_id", json!({"audience": {"segment_id": 77}})).await;
    refused("template_id", json!({"template_id": 77})).await;
    refused("account", json!({"account": "nope"})).await;
    refused("channel", json!({"channel": "douyin"})).await;
    refused("send_at", json!({"send_at": "next friday"})).await;
    refused("holdout_percent", json!({"holdout_percent": 80})).await;
    // A variable the template reads but the campaign does not supply.
    let mut missing = spec.clone();
    missing["vars"] = json!({});
    app.post(&t.secret_key, "/api/v1/campaigns/dry-run", &missing).await.assert_error(400, "invalid_template");
    // Not a campaign at all.
    app.post(&t.secret_key, "/api/v1/campaigns/dry-run", &json!({"audience": 3}))
        .await
        .assert_error(400, "invalid_campaign");

    let dry = app.post(&t.secret_key, "/api/v1/campaigns/dry-run", &spec).await.ok();
    assert_eq!((dry["audience"].clone(), dry["would_send"].clone()), (json!(10), json!(6)), "{dry}");
    let held: Vec<(String, u64)> = dry["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["rule"].as_str().unwrap().to_string(), h["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(held, vec![("unsubscribed".to_string(), 3), ("suppression:complaints".to_string(), 1)], "{dry}");
    assert_eq!(dry["staff_confirms"], true, "{dry}");

    let campaign = app.post(&t.secret_key, "/api/v1/campaigns", &json!({"name": "双十二", "spec": spec})).await.ok();
    assert_eq!(campaign["state"], "scheduled");
    let path = format!("/api/v1/campaigns/{}", campaign["id"]);
    let sent = app.post(&t.secret_key, &format!("{path}/send"), &json!({})).await.ok();
    assert_eq!((sent["queued"].clone(), sent["held"].clone()), (json!(6), json!(4)), "{sent}");
    app.post(&t.secret_key, &format!("{path}/send"), &json!({})).await.assert_error(409, "wrong_state");
    let report = app.get(&t.secret_key, &path).await.ok();
    assert_eq!(report["planned"], 6, "{report}");
    assert_eq!(report["campaign"]["state"], "sending", "{report}");
    // The dry run now sees the reservations: the daily cap holds a second campaign.
    let again = app.post(&t.secret_key, "/api/v1/campaigns/dry-run", &spec).await.ok();
    assert_eq!(again["would_send"], 0, "{again}");
    assert!(again.to_string().contains("frequency:marketing_daily"), "{again}");
    let cancelled = app.post(&t.secret_key, &format!("{path}/cancel"), &json!({})).await.ok();
    assert_eq!(cancelled["cancelled"], 6, "{cancelled}");
    app.post(&t.secret_key, "/api/v1/campaigns", &json!({"name": "双十二", "spec": spec}))
        .await
        .assert_error(409, "name_taken");
}
