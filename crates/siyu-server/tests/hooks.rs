//! The channels' callbacks over HTTP, as WeCom and Douyin send them: a real encrypted WeCom
//! callback (siyu-connect's `MsgCrypt`, the same code WeCom's scheme is checked against) and signed
//! Douyin webhooks, into the real router over a fresh store; what they became is read back through
//! the API. Each case runs on SQLite, and on PostgreSQL when `SIYU_TEST_DATABASE_URL` names a
//! server.

// Each test binary compiles the shared helpers on its own and uses a part of them.
#[allow(dead_code)]
#[macro_use]
mod helpers;

use base64::Engine as _;
use helpers::{Reply, Tenant, TestApp};
use serde_json::{json, Value};
use siyu_connect::douyin::sign;
use siyu_connect::wecom::MsgCrypt;
use siyu_model::Millis;

backend_tests! {
    case_wecom_url_check_echoes_the_decrypted_echostr,
    case_wecom_add_callback_makes_a_profile_once,
    case_wecom_refusals_have_their_codes,
    case_wecom_callbacks_never_cross_tenants,
    case_douyin_challenge_events_and_td,
    case_douyin_refusals_and_secrets,
}

// Two corps' callback configurations: WeCom's published sample keys (siyu-connect's crypto tests
// check the scheme against them), used here as two tenants' own.
const TOKEN_A: &str = "QDG6eK";
const KEY_A: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const CORP_A: &str = "wx5823bf96d3bd56c7";
const TOKEN_B: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY_B: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const CORP_B: &str = "ww1436e0e65a779aee";

const CUSTOMER: &str = "wmAJ2GCAAAXtWyujaWJHDDGi0mACas1w";
const DOUYIN_SECRET: &str = "douyin-client-secret";
const OPEN_ID: &str = "ac6479a5-d7a6-4018-84be-c29bfc00000";

fn wecom_account(token: &str, key: &str, corp: &str) -> Value {
    json!({
        "channel": "wecom",
        "connector": "wecom",
        "credentials": {"corp_id": corp, "corp_secret": "corp-secret", "callback_token": token, "encoding_aes_key": key},
    })
}

fn douyin_account(credentials: Value) -> Value {
    json!({"channel": "douyin", "connector": "douyin", "credentials": credentials})
}

/// Gives the tenant these send accounts (through the settings API, as an operator would).
async fn set_accounts(app: &TestApp, t: &Tenant, accounts: Value) {
    let mut settings = app.get(&t.secret_key, "/api/v1/settings").await.ok();
    settings["send_accounts"] = accounts;
    app.put(&t.secret_key, "/api/v1/settings", &settings).await.ok();
}

fn now_secs() -> i64 {
    Millis::now().0 / 1000
}

/// A decrypted `add_external_contact` callback (WeCom's documented format).
fn add_contact(corp: &str, customer: &str, create_time: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
         <UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[{customer}]]></ExternalUserID>\
         <State><![CDATA[live-0105]]></State><WelcomeCode><![CDATA[WELCOME]]></WelcomeCode></xml>"
    )
}

/// One callback as WeCom POSTs it: the signed query and the XML envelope around `encrypt`.
#[derive(Clone)]
struct Callback {
    query: Vec<(&'static str, String)>,
    body: String,
}

impl Callback {
    /// `encrypt` signed with `token` at `timestamp`.
    fn signed(token: &str, corp: &str, encrypt: &str, timestamp: i64, nonce: &str) -> Callback {
        let timestamp = timestamp.to_string();
        let signature = siyu_connect::wecom::crypto::signature(token, &timestamp, nonce, encrypt);
        Callback {
            query: vec![("msg_signature", signature), ("timestamp", timestamp), ("nonce", nonce.to_string())],
            body: format!(
                "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt>\
                 <AgentID><![CDATA[]]></AgentID></xml>"
            ),
        }
    }

    /// `plaintext` encrypted for `crypt`'s corp and signed now.
    fn new(crypt: &MsgCrypt, token: &str, plaintext: &str) -> Callback {
        Callback::signed(token, crypt.receive_id(), &crypt.encrypt(plaintext), now_secs(), "1372623149")
    }

    fn without(mut self, parameter: &str) -> Callback {
        self.query.retain(|(k, _)| *k != parameter);
        self
    }
}

/// Sends a hook request. The hooks are not in `/openapi.json` (see src/hooks/mod.rs), so their
/// refusals are checked here against the error schema every other route declares.
async fn hook(app: &TestApp, request: reqwest::RequestBuilder) -> Reply {
    let reply = app.send(request).await;
    if !reply.status.is_success() {
        assert!(reply.content_type.starts_with("application/json"), "{}: {}", reply.content_type, reply.text);
        let schema = json!({"$ref": "#/components/schemas/ErrorBody"});
        app.openapi().await.validate(&schema, &reply.json).unwrap_or_else(|e| panic!("{e:?}: {}", reply.text));
    }
    reply
}

async fn post_wecom(app: &TestApp, tenant: i64, account: &str, callback: &Callback) -> Reply {
    let url = app.url(&format!("/hooks/wecom/{tenant}/{account}"));
    hook(app, app.client.post(url).query(&callback.query).body(callback.body.clone())).await
}

#[track_caller]
fn assert_success(reply: &Reply) {
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
    assert!(reply.content_type.starts_with("text/plain"), "{}", reply.content_type);
    assert_eq!(reply.text, "success");
}

/// `name{labels} value` from the Prometheus text, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

fn hook_count(text: &str, hook: &str, code: &str) -> f64 {
    metric(text, &format!("siyu_hook_requests_total{{hook=\"{hook}\",code=\"{code}\"}}"))
}

/// The types of a profile's events, oldest first.
async fn timeline(app: &TestApp, t: &Tenant, id: u64) -> Vec<Value> {
    let mut events = app.get(&t.secret_key, &format!("/api/v1/profiles/{id}/events")).await.ok();
    let list = events.as_array_mut().expect("a list of events");
    list.reverse();
    std::mem::take(list)
}

async fn case_wecom_url_check_echoes_the_decrypted_echostr(app: &TestApp) {
    let t = app.tenant("acme").await;
    set_accounts(app, &t, json!({"wecom-main": wecom_account(TOKEN_A, KEY_A, CORP_A)})).await;
    let crypt = MsgCrypt::new(TOKEN_A, KEY_A, CORP_A).unwrap();
    // An echostr whose base64 holds a `+`, which must survive the query's encoding.
    let echostr = (0u8..)
        .map(|i| crypt.encrypt_with_random("1616140317555161061", [i; 16]))
        .find(|e| e.contains('+'))
        .expect("some prefix gives a `+`");
    let timestamp = now_secs().to_string();
    let signature = crypt.signature(&timestamp, "263014780", &echostr);
    let url = app.url(&format!("/hooks/wecom/{}/wecom-main", t.id));
    let query = [("msg_signature", signature.as_str()), ("timestamp", &timestamp), ("nonce", "263014780")];
    let reply = hook(app, app.client.get(&url).query(&query).query(&[("echostr", &echostr)])).await;
    assert_eq!((reply.status.as_u16(), reply.text.as_str()), (200, "1616140317555161061"), "{}", reply.text);
    assert!(reply.content_type.starts_with("text/plain"), "{}", reply.content_type);
    // A console that forgot to encode `+`: decoded as a space, still the same base64.
    let raw = format!("{url}?msg_signature={signature}&timestamp={timestamp}&nonce=263014780&echostr={echostr}");
    let reply = hook(app, app.client.get(raw)).await;
    assert_eq!(reply.text, "1616140317555161061", "{}", reply.text);

    let tampered = query.map(|(k, v)| (k, if k == "timestamp" { "1409659590" } else { v }));
    let reply = hook(app, app.client.get(&url).query(&tampered).query(&[("echostr", &echostr)])).await;
    reply.assert_error(401, "bad_signature");
    let reply = hook(app, app.client.get(&url).query(&query)).await;
    reply.assert_error(400, "invalid_query");
    reply.assert_field("echostr");
    // The URL check leaves the log alone.
    assert_eq!(app.get(&t.secret_key, "/api/v1/summary").await.ok()["events"], 0);
    let metrics = app.metrics().await;
    assert_eq!(hook_count(&metrics, "wecom", "verified"), 2.0, "{metrics}");
    assert_eq!(hook_count(&metrics, "wecom", "bad_signature"), 1.0, "{metrics}");
}

async fn case_wecom_add_callback_makes_a_profile_once(app: &TestApp) {
    let t = app.tenant("acme").await;
    set_accounts(app, &t, json!({"wecom-main": wecom_account(TOKEN_A, KEY_A, CORP_A)})).await;
    let crypt = MsgCrypt::new(TOKEN_A, KEY_A, CORP_A).unwrap();
    let created = now_secs() - 60;
    let callback = Callback::new(&crypt, TOKEN_A, &add_contact(CORP_A, CUSTOMER, created));
    assert_success(&post_wecom(app, t.id.0, "wecom-main", &callback).await);

    let profile = app.lookup(&t.secret_key, "wecom_external_userid", CUSTOMER).await.expect("the customer's profile");
    assert_eq!(profile["event_count"], 1, "{profile}");
    assert_eq!(profile["relationships"]["wecom_contact"][0]["account"], "wecom-main", "{profile}");
    let id = profile["id"].as_u64().unwrap();
    let events = timeline(app, &t, id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let added = &events[0];
    assert_eq!((added["type"].as_str(), added["channel"].as_str()), (Some("wecom_add"), Some("wecom")), "{added}");
    assert_eq!(added["account"], "wecom-main");
    assert_eq!(added["source"], "contact_way:live-0105");
    assert_eq!(added["properties"]["staff_userid"], "zhangsan");
    assert_eq!(Millis::parse_rfc3339(added["timestamp"].as_str().unwrap()), Some(Millis(created * 1000)));

    // WeCom's retry: the same request, then the same callback encrypted afresh with a new nonce.
    assert_success(&post_wecom(app, t.id.0, "wecom-main", &callback).await);
    let again = Callback::signed(
        TOKEN_A,
        CORP_A,
        &crypt.encrypt(&add_contact(CORP_A, CUSTOMER, created)),
        now_secs(),
        "other-nonce",
    );
    assert_success(&post_wecom(app, t.id.0, "wecom-main", &again).await);
    let profile = app.lookup(&t.secret_key, "wecom_external_userid", CUSTOMER).await.unwrap();
    assert_eq!(profile["event_count"], 1, "a retry was appended again: {profile}");
    assert_eq!(app.get(&t.secret_key, "/api/v1/summary").await.ok()["events"], 1);

    // The customer leaves; a tag-catalogue change is acknowledged and records nothing.
    let deleted = add_contact(CORP_A, CUSTOMER, created + 30).replace("add_external_contact", "del_follow_user");
    assert_success(&post_wecom(app, t.id.0, "wecom-main", &Callback::new(&crypt, TOKEN_A, &deleted)).await);
    let tag = format!(
        "<xml><ToUserName>{CORP_A}</ToUserName><CreateTime>{created}</CreateTime><MsgType>event</MsgType>\
         <Event>change_external_tag</Event><Id>TAG_ID</Id><TagType>tag</TagType><ChangeType>create</ChangeType></xml>"
    );
    assert_success(&post_wecom(app, t.id.0, "wecom-main", &Callback::new(&crypt, TOKEN_A, &tag)).await);
    let events = timeline(app, &t, id).await;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["wecom_add", "wecom_delete"]);

    let metrics = app.metrics().await;
    for (code, n) in [("ingested", 2.0), ("duplicate", 2.0), ("ignored", 1.0)] {
        assert_eq!(hook_count(&metrics, "wecom", code), n, "{code}: {metrics}");
    }
    assert_eq!(metric(&metrics, "siyu_events_ingested_total{path=\"hooks/wecom\"}"), 2.0, "{metrics}");
}

async fn case_wecom_refusals_have_their_codes(app: &TestApp) {
    let t = app.tenant("acme").await;
    let mut unconfigured = wecom_account(TOKEN_A, KEY_A, CORP_A);
    unconfigured["credentials"].as_object_mut().unwrap().remove("encoding_aes_key");
    let mut bad_key = wecom_account(TOKEN_A, KEY_A, CORP_A);
    bad_key["credentials"]["encoding_aes_key"] = json!("too-short");
    let accounts =
        json!({"wecom-main": wecom_account(TOKEN_A, KEY_A, CORP_A), "no-key": unconfigured, "bad-key": bad_key});
    set_accounts(app, &t, accounts).await;
    let crypt = MsgCrypt::new(TOKEN_A, KEY_A, CORP_A).unwrap();
    let plaintext = add_contact(CORP_A, CUSTOMER, now_secs());
    let good = Callback::new(&crypt, TOKEN_A, &plaintext);
    let tenant = t.id.0;
    let post = |callback: Callback| async move { post_wecom(app, tenant, "wecom-main", &callback).await };

    let reply = post(Callback::new(&crypt, "not-the-token", &plaintext)).await;
    reply.assert_error(401, "bad_signature");
    reply.assert_field("msg_signature");
    // The signature covers the ciphertext: the good query over another encryption fails too.
    let mut moved = Callback::new(&crypt, TOKEN_A, &plaintext);
    moved.query.clone_from(&good.query);
    post(moved).await.assert_error(401, "bad_signature");
    post(Callback::new(&crypt, TOKEN_A, &plaintext).without("msg_signature"))
        .await
        .assert_error(401, "missing_signature");
    post(Callback::new(&crypt, TOKEN_A, &plaintext).without("nonce")).await.assert_error(400, "invalid_query");

    // A replay: a correctly signed callback whose timestamp is older than the 300 s window.
    let stale = Callback::signed(TOKEN_A, CORP_A, &crypt.encrypt(&plaintext), now_secs() - 301, "n");
    let reply = post(stale).await;
    reply.assert_error(401, "stale_timestamp");
    reply.assert_field("timestamp");

    // Ciphertexts that are not whole, not ours, not base64 — each signed, so the crypto decides.
    let raw = base64::engine::general_purpose::STANDARD.decode(crypt.encrypt(&plaintext)).unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let signed = |encrypt: &str| Callback::signed(TOKEN_A, CORP_A, encrypt, now_secs(), "n");
    let reply = post(signed(&b64(&raw[..raw.len() - 5]))).await;
    reply.assert_error(400, "truncated_ciphertext");
    reply.assert_field("Encrypt");
    // One AES block less: whole blocks, but the last one now ends inside the message.
    post(signed(&b64(&raw[..raw.len() - 16]))).await.assert_error(400, "bad_padding");
    post(signed("not base64!")).await.assert_error(400, "invalid_ciphertext");
    let other_corp = MsgCrypt::new(TOKEN_A, KEY_A, CORP_B).unwrap();
    post(signed(&other_corp.encrypt(&plaintext))).await.assert_error(401, "receive_id_mismatch");

    // XML that is not WeCom's: the envelope, then a decrypted message.
    let mut broken = good.clone();
    broken.body = "<xml><Encrypt>".into();
    post(broken).await.assert_error(400, "malformed_xml");
    post(Callback::new(&crypt, TOKEN_A, "<xml><Event>")).await.assert_error(400, "malformed_xml");
    let no_user = plaintext.replace("<UserID><![CDATA[zhangsan]]></UserID>", "");
    let reply = post(Callback::new(&crypt, TOKEN_A, &no_user)).await;
    reply.assert_error(400, "invalid_callback");
    reply.assert_field("UserID");

    // Accounts without usable callback credentials.
    let reply = post_wecom(app, t.id.0, "no-key", &good).await;
    reply.assert_error(404, "hook_not_configured");
    reply.assert_field("send_accounts.no-key.credentials");
    post_wecom(app, t.id.0, "bad-key", &good).await.assert_error(404, "hook_not_configured");

    // None of it reached the log; the good callback still does.
    assert_eq!(app.get(&t.secret_key, "/api/v1/summary").await.ok()["events"], 0);
    assert_success(&post(good).await);
    let metrics = app.metrics().await;
    for (code, n) in [
        ("bad_signature", 2.0),
        ("missing_signature", 1.0),
        ("invalid_query", 1.0),
        ("stale_timestamp", 1.0),
        ("truncated_ciphertext", 1.0),
        ("bad_padding", 1.0),
        ("invalid_ciphertext", 1.0),
        ("receive_id_mismatch", 1.0),
        ("malformed_xml", 2.0),
        ("invalid_callback", 1.0),
        ("hook_not_configured", 2.0),
        ("ingested", 1.0),
    ] {
        assert_eq!(hook_count(&metrics, "wecom", code), n, "{code}: {metrics}");
    }
    assert_eq!(metric(&metrics, "siyu_events_rejected_total{code=\"stale_timestamp\"}"), 1.0, "{metrics}");
}

async fn case_wecom_callbacks_never_cross_tenants(app: &TestApp) {
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    set_accounts(
        app,
        &a,
        json!({"wecom-main": wecom_account(TOKEN_A, KEY_A, CORP_A), "a-only": wecom_account(TOKEN_A, KEY_A, CORP_A)}),
    )
    .await;
    // B: the same account name with its own corp; one that (wrongly) shares A's token and key;
    // a Douyin account.
    let accounts = json!({
        "wecom-main": wecom_account(TOKEN_B, KEY_B, CORP_B),
        "shared-keys": wecom_account(TOKEN_A, KEY_A, CORP_B),
        "douyin-main": douyin_account(json!({"client_secret": DOUYIN_SECRET})),
    });
    set_accounts(app, &b, accounts).await;
    let crypt_a = MsgCrypt::new(TOKEN_A, KEY_A, CORP_A).unwrap();
    let a_callback = Callback::new(&crypt_a, TOKEN_A, &add_contact(CORP_A, CUSTOMER, now_secs()));

    // A's callback at B's URLs: refused by B's token, or by B's corp when the keys are shared.
    post_wecom(app, b.id.0, "wecom-main", &a_callback).await.assert_error(401, "bad_signature");
    post_wecom(app, b.id.0, "shared-keys", &a_callback).await.assert_error(401, "receive_id_mismatch");
    post_wecom(app, b.id.0, "a-only", &a_callback).await.assert_error(404, "no_such_hook");
    post_wecom(app, b.id.0, "douyin-main", &a_callback).await.assert_error(404, "no_such_hook");
    for tenant in ["9999", "not-a-tenant", "-1"] {
        let url = app.url(&format!("/hooks/wecom/{tenant}/wecom-main"));
        let reply = hook(app, app.client.post(url).query(&a_callback.query).body(a_callback.body.clone())).await;
        reply.assert_error(404, "no_such_hook");
    }
    assert_eq!(app.get(&b.secret_key, "/api/v1/summary").await.ok()["events"], 0, "B holds A's callback");
    assert!(app.lookup(&b.secret_key, "wecom_external_userid", CUSTOMER).await.is_none());

    // At A's own URL it lands in A, and only there.
    assert_success(&post_wecom(app, a.id.0, "wecom-main", &a_callback).await);
    assert!(app.lookup(&a.secret_key, "wecom_external_userid", CUSTOMER).await.is_some());
    assert!(app.lookup(&b.secret_key, "wecom_external_userid", CUSTOMER).await.is_none());
    // B's own callback at B's URL lands in B.
    let crypt_b = MsgCrypt::new(TOKEN_B, KEY_B, CORP_B).unwrap();
    let b_callback = Callback::new(&crypt_b, TOKEN_B, &add_contact(CORP_B, "wm-b-customer", now_secs()));
    assert_success(&post_wecom(app, b.id.0, "wecom-main", &b_callback).await);
    post_wecom(app, a.id.0, "wecom-main", &b_callback).await.assert_error(401, "bad_signature");
    assert!(app.lookup(&b.secret_key, "wecom_external_userid", "wm-b-customer").await.is_some());
    assert!(app.lookup(&a.secret_key, "wecom_external_userid", "wm-b-customer").await.is_none());
    assert_eq!(app.get(&a.secret_key, "/api/v1/summary").await.ok()["events"], 1);
    assert_eq!(app.get(&b.secret_key, "/api/v1/summary").await.ok()["events"], 1);
}

/// A Douyin push: the body signed with `secret`, with a `Msg-Id`.
async fn post_douyin(app: &TestApp, tenant: i64, account: &str, secret: &str, body: &str, msg_id: &str) -> Reply {
    let url = app.url(&format!("/hooks/douyin/{tenant}/{account}"));
    let request = app
        .client
        .post(url)
        .header("X-Douyin-Signature", sign(secret, body.as_bytes()))
        .header("Msg-Id", msg_id)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    hook(app, request).await
}

fn received(text: &str, server_message_id: &str) -> String {
    json!({
        "event": "im_receive_msg",
        "client_key": "awr8bfr64vxgk036",
        "from_user_id": OPEN_ID,
        "to_user_id": "brand-open-id",
        "log_id": format!("log-{server_message_id}"),
        "content": {
            "conversation_short_id": "@conv-1",
            "server_message_id": server_message_id,
            "conversation_type": 1,
            "message_type": "text",
            "text": text,
            "source": "",
            "create_time": Millis::now().0 - 5_000,
            "user_infos": [{"open_id": OPEN_ID, "nick_name": "小王"}],
        },
    })
    .to_string()
}

#[track_caller]
fn assert_ack(reply: Reply, accepted: u64, duplicates: u64) {
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
    assert_eq!(reply.json, json!({"accepted": accepted, "duplicates": duplicates}), "{}", reply.text);
}

async fn case_douyin_challenge_events_and_td(app: &TestApp) {
    let t = app.tenant("acme").await;
    set_accounts(
        app,
        &t,
        json!({"brand-main": douyin_account(json!({"client_key": "ck", "client_secret": DOUYIN_SECRET}))}),
    )
    .await;
    let tenant = t.id.0;
    let post = |body: String, msg_id: &'static str| async move {
        post_douyin(app, tenant, "brand-main", DOUYIN_SECRET, &body, msg_id).await
    };

    let challenge = r#"{"event":"verify_webhook","client_key":"ck","content":{"challenge":12345}}"#;
    let reply = post(challenge.into(), "verify-1").await;
    assert_eq!((reply.status.as_u16(), reply.text.as_str()), (200, r#"{"challenge":12345}"#));
    assert!(reply.content_type.starts_with("application/json"), "{}", reply.content_type);

    assert_ack(post(received("你好，想问下价格", "@msg-1"), "push-1").await, 1, 0);
    assert_ack(post(received("你好，想问下价格", "@msg-1"), "push-1").await, 0, 1);
    let profile = app.lookup(&t.secret_key, "douyin_open_id", OPEN_ID).await.expect("the sender's profile");
    assert_eq!(profile["event_count"], 1, "{profile}");
    assert_eq!(profile["traits"]["nickname"], "小王", "{profile}");

    // 退订 / TD: the message and an unsubscribe, once each however often Douyin retries.
    assert_ack(post(received("TD", "@msg-2"), "push-2").await, 2, 0);
    assert_ack(post(received("TD", "@msg-2"), "push-2").await, 0, 2);
    let id = profile["id"].as_u64().unwrap();
    let events = timeline(app, &t, id).await;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["message_in", "message_in", "unsubscribe"], "{events:?}");
    let unsubscribe = &events[2];
    assert_eq!(unsubscribe["message_id"], "douyin:im_receive_msg:push-2:unsubscribe");
    assert_eq!(
        (unsubscribe["channel"].as_str(), unsubscribe["account"].as_str()),
        (Some("douyin"), Some("brand-main"))
    );
    assert_eq!(unsubscribe["properties"]["message_id"], "douyin:im_receive_msg:push-2");
    assert_eq!(unsubscribe["timestamp"], events[1]["timestamp"]);
    assert_eq!(events[1]["properties"]["unsubscribe"], true);

    // A follow is recorded; an event siyu does not map is acknowledged and dropped.
    let follow = json!({"event": "new_follow_action", "from_user_id": "follower-1", "to_user_id": "brand-open-id",
        "content": "{\"action_type\":1}", "log_id": "log-follow"})
    .to_string();
    assert_ack(post(follow, "push-3").await, 1, 0);
    assert!(app.lookup(&t.secret_key, "douyin_open_id", "follower-1").await.is_some());
    let video = r#"{"event":"create_video","from_user_id":"u","client_key":"ck","content":{"item_id":"1"}}"#;
    assert_ack(post(video.into(), "push-4").await, 0, 0);

    let metrics = app.metrics().await;
    for (code, n) in [("verified", 1.0), ("ingested", 3.0), ("duplicate", 2.0), ("ignored", 1.0)] {
        assert_eq!(hook_count(&metrics, "douyin", code), n, "{code}: {metrics}");
    }
    assert_eq!(metric(&metrics, "siyu_events_ingested_total{path=\"hooks/douyin\"}"), 4.0, "{metrics}");
}

async fn case_douyin_refusals_and_secrets(app: &TestApp) {
    let t = app.tenant("acme").await;
    let accounts = json!({
        "brand-main": douyin_account(json!({"client_secret": DOUYIN_SECRET})),
        "mini-app": douyin_account(json!({"client_secret": DOUYIN_SECRET, "webhook_secret": "mini-webhook-secret"})),
        "no-secret": douyin_account(json!({"client_key": "ck"})),
        "wecom-main": wecom_account(TOKEN_A, KEY_A, CORP_A),
    });
    set_accounts(app, &t, accounts).await;
    let body = received("你好", "@msg-1");

    let reply = post_douyin(app, t.id.0, "brand-main", "another-secret", &body, "m-1").await;
    reply.assert_error(401, "bad_signature");
    reply.assert_field("X-Douyin-Signature");
    let url = app.url(&format!("/hooks/douyin/{}/brand-main", t.id));
    let reply = hook(app, app.client.post(&url).body(body.clone())).await;
    reply.assert_error(401, "missing_signature");
    let tampered = app
        .client
        .post(&url)
        .header("X-Douyin-Signature", sign(DOUYIN_SECRET, body.as_bytes()))
        .body(body.replace("你好", "TD"));
    hook(app, tampered).await.assert_error(401, "bad_signature");
    post_douyin(app, t.id.0, "brand-main", DOUYIN_SECRET, "{not json", "m-2").await.assert_error(400, "invalid_json");
    let anonymous = json!({"event": "new_follow_action", "content": {"action_type": 1}}).to_string();
    post_douyin(app, t.id.0, "brand-main", DOUYIN_SECRET, &anonymous, "m-3")
        .await
        .assert_error(400, "invalid_callback");

    // The webhook secret, where there is one, is the one that signs.
    post_douyin(app, t.id.0, "mini-app", DOUYIN_SECRET, &body, "m-4").await.assert_error(401, "bad_signature");
    assert_ack(post_douyin(app, t.id.0, "mini-app", "mini-webhook-secret", &body, "m-4").await, 1, 0);
    let reply = post_douyin(app, t.id.0, "no-secret", DOUYIN_SECRET, &body, "m-5").await;
    reply.assert_error(404, "hook_not_configured");
    post_douyin(app, t.id.0, "wecom-main", DOUYIN_SECRET, &body, "m-6").await.assert_error(404, "no_such_hook");
    post_douyin(app, t.id.0 + 1, "brand-main", DOUYIN_SECRET, &body, "m-7").await.assert_error(404, "no_such_hook");

    // Hook bodies are small: the limit is 256 KiB, not the event API's 8 MiB.
    let huge = json!({"event": "im_receive_msg", "padding": "x".repeat(300 * 1024)}).to_string();
    let reply = post_douyin(app, t.id.0, "brand-main", DOUYIN_SECRET, &huge, "m-8").await;
    reply.assert_error(413, "payload_too_large");

    assert_eq!(app.get(&t.secret_key, "/api/v1/summary").await.ok()["events"], 1);
    let metrics = app.metrics().await;
    for (code, n) in [
        ("payload_too_large", 1.0),
        ("bad_signature", 3.0),
        ("missing_signature", 1.0),
        ("invalid_json", 1.0),
        ("invalid_callback", 1.0),
        ("hook_not_configured", 1.0),
        ("no_such_hook", 2.0),
        ("ingested", 1.0),
    ] {
        assert_eq!(hook_count(&metrics, "douyin", code), n, "{code}: {metrics}");
    }
}
