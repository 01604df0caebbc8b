//! `spawn_app()` and friends: the real router served on 127.0.0.1:0 over a fresh store, and a
//! reqwest client that talks to it like any outside caller. Every test case runs on SQLite, and
//! also on PostgreSQL when `SIYU_TEST_DATABASE_URL` names a server (each run in its own database).
//! Every reply is checked against the schema `/openapi.json` declares for it (see `openapi`).

pub mod openapi;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value;
use siyu_engine::{Engine, EngineConfig};
use siyu_model::{Industry, Millis, TenantId};
use siyu_server::{app, AppState};
use tokio::sync::OnceCell;

use self::openapi::OpenApi;

/// One `#[tokio::test]` per case and back-end: `sqlite::case_x` and `postgres::case_x`, for the
/// `async fn case_x(app: &TestApp)` cases at the root of a test file.
macro_rules! backend_tests {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::helpers::on_sqlite(|app| async move { super::$case(&app).await }).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::helpers::on_postgres(|app| async move { super::$case(&app).await }).await
                }
            )*
        }
    };
}

pub const PG_URL_VAR: &str = "SIYU_TEST_DATABASE_URL";

/// The app under test, its address and a client.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub engine: Arc<Engine>,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// `/openapi.json`, fetched on the first reply.
    openapi: OnceCell<OpenApi>,
    _dir: Option<tempfile::TempDir>,
}

/// A tenant's keys, as `siyu tenant create` would print them.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub write_key: String,
    pub secret_key: String,
}

/// A decoded response: status, raw text, and the JSON body (`Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
    pub json: Value,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Reply {
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.expect("failed to read the response body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, content_type, text, json }
    }

    /// The error `code` of a JSON error body.
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or_default()
    }

    /// Asserts a JSON error body with this status and code (and a non-empty message).
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "status of {code}: {}", self.text);
        assert!(self.content_type.starts_with("application/json"), "{code} is not JSON: {}", self.content_type);
        assert_eq!(self.code(), code, "body: {}", self.text);
        assert!(
            self.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error {code} has no message: {}",
            self.text
        );
    }

    /// Asserts the error names this field.
    #[track_caller]
    pub fn assert_field(&self, field: &str) {
        assert_eq!(self.json["field"].as_str(), Some(field), "field of {}: {}", self.code(), self.text);
    }

    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "expected 200: {}", self.text);
        self.json
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A new tenant with its write and secret keys.
    pub async fn tenant(&self, name: &str) -> Tenant {
        let created =
            self.engine.create_tenant(name, Industry::ConsumerGoods).await.expect("failed to create a tenant");
        Tenant { id: created.record.id, write_key: created.write_key, secret_key: created.secret_key }
    }

    /// Sends a request and reads the reply, which must match what `/openapi.json` declares for
    /// its method, route and status (replies the document declares no JSON body for are counted,
    /// not checked).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let (client, request) = request.build_split();
        let request = request.expect("failed to build a request");
        let (method, path) = (request.method().clone(), request.url().path().to_string());
        let reply = Reply::from(client.execute(request).await.expect("failed to send a request")).await;
        let openapi = self.openapi().await;
        if let Err(mismatch) =
            openapi.check(method.as_str(), &path, reply.status.as_u16(), &reply.content_type, &reply.text)
        {
            panic!("{mismatch}");
        }
        reply
    }

    /// The app's `/openapi.json`, fetched once.
    pub async fn openapi(&self) -> &OpenApi {
        self.openapi
            .get_or_init(|| async {
                let response = self.client.get(self.url("/openapi.json")).send().await;
                let response = response.expect("failed to fetch /openapi.json");
                assert_eq!(response.status(), StatusCode::OK, "GET /openapi.json");
                OpenApi::new(response.json().await.expect("/openapi.json is not JSON"))
            })
            .await
    }

    /// `GET path` with a bearer key.
    pub async fn get(&self, key: &str, path: &str) -> Reply {
        self.send(self.client.get(self.url(path)).bearer_auth(key)).await
    }

    /// `GET path?query` with a bearer key; the query is URL-encoded here.
    pub async fn get_query(&self, key: &str, path: &str, query: &[(&str, &str)]) -> Reply {
        self.send(self.client.get(self.url(path)).bearer_auth(key).query(query)).await
    }

    /// `POST path` with a JSON body and a bearer key.
    pub async fn post(&self, key: &str, path: &str, body: &Value) -> Reply {
        self.send(self.client.post(self.url(path)).bearer_auth(key).json(body)).await
    }

    pub async fn put(&self, key: &str, path: &str, body: &Value) -> Reply {
        self.send(self.client.put(self.url(path)).bearer_auth(key).json(body)).await
    }

    /// `POST /api/v1/events`.
    pub async fn events(&self, key: &str, body: &Value) -> Reply {
        self.post(key, "/api/v1/events", body).await
    }

    /// Sends events that must all be accepted.
    pub async fn ingest(&self, key: &str, events: Vec<Value>) {
        let n = events.len();
        let body = self.events(key, &serde_json::json!({ "batch": events })).await.ok();
        assert_eq!(body["accepted"], n, "not every event was accepted: {body}");
    }

    /// A profile by identity (secret key); `None` on 404.
    pub async fn lookup(&self, key: &str, kind: &str, value: &str) -> Option<Value> {
        let reply = self.get_query(key, "/api/v1/profiles/lookup", &[("kind", kind), ("value", value)]).await;
        match reply.status {
            StatusCode::NOT_FOUND => None,
            _ => Some(reply.ok()),
        }
    }

    /// The live profile id holding an identity.
    pub async fn profile_id(&self, key: &str, kind: &str, value: &str) -> u64 {
        let profile = self.lookup(key, kind, value).await.unwrap_or_else(|| panic!("no profile holds {kind}:{value}"));
        profile["id"].as_u64().expect("profile id")
    }

    /// The Prometheus exposition text.
    pub async fn metrics(&self) -> String {
        let reply = self.send(self.client.get(self.url("/metrics"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.text
    }
}

impl Drop for TestApp {
    /// Prints what was checked against `/openapi.json` (shown with `--nocapture` or on failure).
    fn drop(&mut self) {
        if let Some(openapi) = self.openapi.get() {
            println!("openapi.json check on {}: {}", self.backend, openapi.tally());
        }
    }
}

/// An RFC 3339 time `days` before now.
pub fn days_ago(days: f64) -> String {
    Millis::now().days_before(days).to_rfc3339()
}

/// Starts the real application on an ephemeral port over `store`.
async fn serve(store: Arc<dyn siyu_store::Store>, backend: &'static str, dir: Option<tempfile::TempDir>) -> TestApp {
    let engine = Engine::start(store, EngineConfig::default()).await.expect("failed to start the engine");
    let router = app(AppState::new(engine.clone(), Default::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("failed to bind a port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("the server failed");
    });
    // No proxy: the environment's HTTP(S)_PROXY must not intercept 127.0.0.1.
    let client = reqwest::Client::builder().no_proxy().build().expect("failed to build the client");
    TestApp { addr, client, engine, backend, openapi: OnceCell::new(), _dir: dir }
}

/// The app over a fresh SQLite file in a temporary directory.
pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let path = dir.path().join("siyu.db").display().to_string();
    let store = siyu_store::open(&path).await.expect("failed to open the sqlite store");
    serve(store, "sqlite", Some(dir)).await
}

/// The app over a fresh PostgreSQL database `url`.
pub async fn spawn_app_on_postgres(url: &str) -> TestApp {
    let store = siyu_store::open(url).await.expect("failed to open the postgres store");
    serve(store, "postgres", None).await
}

/// Runs a case on SQLite.
pub async fn on_sqlite<F, Fut>(case: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()>,
{
    case(spawn_app().await).await;
}

/// Runs a case on a fresh PostgreSQL database, dropped afterwards; skipped (with a note) when
/// `SIYU_TEST_DATABASE_URL` is not set.
pub async fn on_postgres<F, Fut>(case: F)
where
    F: FnOnce(TestApp) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(scratch) = siyu_store::scratch::ScratchDatabase::from_test_env().await else {
        println!("note: {PG_URL_VAR} is not set; skipping the postgres run of this test");
        return;
    };
    let url = scratch.url.clone();
    // Spawned so that a failure (or a panic in the store) still lets us drop the database.
    let outcome = tokio::spawn(async move {
        let app = spawn_app_on_postgres(&url).await;
        let engine = app.engine.clone();
        case(app).await;
        engine.shutdown();
    })
    .await;
    scratch.drop_database().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
