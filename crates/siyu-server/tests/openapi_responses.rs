//! The response check itself under test: `helpers` validates every reply of the API suite against
//! `/openapi.json`, which only means something if a body that breaks the document is refused and
//! one that keeps it is accepted. Each case runs on SQLite, and on PostgreSQL when
//! `SIYU_TEST_DATABASE_URL` names a server.

// Each test binary compiles the shared helpers on its own and uses a part of them.
#[allow(dead_code)]
#[macro_use]
mod helpers;

use helpers::openapi::Declared;
use helpers::{days_ago, Tenant, TestApp};
use serde_json::{json, Value};

backend_tests! {
    case_routes_match_the_most_literal_template,
    case_a_body_that_breaks_the_schema_is_refused,
    case_a_profile_without_traits_matches_the_document,
}

const LOOKUP: &str = "/api/v1/profiles/lookup";

/// The schema `/openapi.json` declares for a JSON reply; panics when it declares none.
async fn json_schema(app: &TestApp, method: &str, path: &str, status: u16) -> Value {
    match app.openapi().await.declared(method, path, status) {
        Declared::Json { schema, .. } => schema.clone(),
        other => panic!("{method} {path} {status} declares no JSON body: {other:?}"),
    }
}

/// A profile holding `user_id:u`, made by one event without traits.
async fn profile_without_traits(app: &TestApp, t: &Tenant) -> Value {
    let like = json!({
        "message_id": "m-1",
        "type": "like",
        "channel": "douyin",
        "account": "brand-main",
        "identities": {"user_id": "u"},
        "timestamp": days_ago(1.0),
    });
    app.ingest(&t.write_key, vec![like]).await;
    app.lookup(&t.secret_key, "user_id", "u").await.expect("the profile of user_id:u")
}

async fn case_routes_match_the_most_literal_template(app: &TestApp) {
    let openapi = app.openapi().await;
    assert_eq!(openapi.template(LOOKUP), Some(LOOKUP));
    assert_eq!(openapi.template("/api/v1/profiles/42"), Some("/api/v1/profiles/{id}"));
    assert_eq!(openapi.template("/api/v1/profiles/42/events"), Some("/api/v1/profiles/{id}/events"));
    assert_eq!(openapi.template("/api/v1/nowhere"), None);
    assert!(matches!(openapi.declared("GET", LOOKUP, 200), Declared::Json { template: LOOKUP, .. }));
    assert!(matches!(openapi.declared("DELETE", "/api/v1/events", 405), Declared::UndocumentedRoute));
    assert!(matches!(openapi.declared("GET", "/metrics", 200), Declared::NotJson { .. }));
    assert!(matches!(openapi.declared("GET", LOOKUP, 418), Declared::UndeclaredStatus { .. }));
}

async fn case_a_body_that_breaks_the_schema_is_refused(app: &TestApp) {
    let t = app.tenant("acme").await;
    let profile = profile_without_traits(app, &t).await;
    let openapi = app.openapi().await;
    let schema = json_schema(app, "GET", LOOKUP, 200).await;
    openapi.validate(&schema, &profile).unwrap_or_else(|e| panic!("a real profile is refused: {e:?}"));

    let wrong: [(&str, Value); 4] = [
        ("/traits", json!(null)),
        ("/id", json!("one")),
        ("/scores", json!([])),
        ("/identities", json!({"user_id": "u"})),
    ];
    for (pointer, value) in wrong {
        let mut body = profile.clone();
        *body.pointer_mut(pointer).expect("the profile has this field") = value.clone();
        let errors = openapi.validate(&schema, &body).expect_err(&format!("{pointer} = {value} was accepted"));
        assert!(errors.iter().any(|e| e.starts_with(&format!("at {pointer}:"))), "{pointer}: {errors:?}");
    }
    let mut missing = profile.clone();
    missing.as_object_mut().expect("an object").remove("as_of");
    let errors = openapi.validate(&schema, &missing).expect_err("a profile without as_of was accepted");
    assert!(errors.iter().any(|e| e.contains("as_of")), "{errors:?}");

    // The same check as a reply: this is what `TestApp::send` runs on every response.
    let text = serde_json::to_string(&with_null_traits(profile)).expect("serialise");
    let mismatch = openapi.check("GET", LOOKUP, 200, "application/json", &text).expect_err("null traits were accepted");
    for part in ["GET /api/v1/profiles/lookup", "200", "at /traits:", "body: {"] {
        assert!(mismatch.contains(part), "the message lacks {part:?}: {mismatch}");
    }
    let error = json!({"code": "not_found", "message": "no profile holds this identity"}).to_string();
    openapi.check("GET", LOOKUP, 404, "application/json", &error).unwrap_or_else(|e| panic!("{e}"));
    openapi.check("GET", LOOKUP, 404, "text/plain", "Not Found").expect_err("a plain-text error was accepted");
}

async fn case_a_profile_without_traits_matches_the_document(app: &TestApp) {
    let t = app.tenant("acme").await;
    let doc = app.send(app.client.get(app.url("/openapi.json"))).await.ok();
    let schema = &doc["components"]["schemas"]["ProfileView"];
    assert_eq!(schema["properties"]["traits"]["type"], "object", "ProfileView: {schema}");
    // `lookup` goes through `TestApp::send`, which validates the reply.
    let profile = profile_without_traits(app, &t).await;
    assert_eq!(profile["traits"], json!({}), "{profile}");
    let id = profile["id"].as_u64().expect("id");
    app.get(&t.secret_key, &format!("/api/v1/profiles/{id}")).await.ok();
    assert!(app.openapi().await.tally().validated >= 2, "{}", app.openapi().await.tally());
}

fn with_null_traits(mut profile: Value) -> Value {
    profile["traits"] = Value::Null;
    profile
}
