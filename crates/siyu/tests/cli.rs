//! The binary end to end: `siyu tenant create`, `siyu import` (NDJSON and CSV, bad lines, re-runs),
//! `siyu serve` answering the shared score fixtures over HTTP after a restart, and `siyu rebuild`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_siyu");

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/scores")
}

fn siyu(db: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--database")
        .arg(db)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the siyu binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn create_tenant(db: &Path, name: &str) -> (String, String) {
    let out = siyu(db, &["tenant", "create", "--name", name, "--industry", "consumer_goods"]);
    assert!(out.status.success(), "tenant create failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let key = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"))
    };
    (key("write key"), key("secret key"))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve(db: &Path) -> (Server, String) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .arg("--database")
        .arg(db)
        .args(["serve", "--bind", &bind])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let base = format!("http://{bind}");
    for _ in 0..300 {
        if reqwest::get(format!("{base}/healthz")).await.is_ok_and(|r| r.status().is_success()) {
            return (server, base);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("siyu serve did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_through_import_and_the_api_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("siyu.db");
    let (_, secret) = create_tenant(&db, "fixture");
    let events = fixtures().join("events.ndjson");
    let lines = std::fs::read_to_string(&events).unwrap().lines().count();

    let out = siyu(&db, &["import", events.to_str().unwrap(), "--tenant", "fixture", "--quiet"]);
    assert!(out.status.success(), "import failed: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("{lines} appended")), "{}", text(&out.stderr));

    // A re-run is idempotent.
    let again = siyu(&db, &["import", events.to_str().unwrap(), "--tenant", "fixture", "--quiet"]);
    assert!(again.status.success());
    assert!(
        text(&again.stderr).contains(&format!("0 appended, {lines} duplicates skipped")),
        "{}",
        text(&again.stderr)
    );

    // A fresh server replays the log; every expected value comes back over HTTP.
    let (_server, base) = serve(&db).await;
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap();
    let as_of = expected["as_of"].as_str().unwrap();
    let client = reqwest::Client::new();
    let mut mismatches = Vec::new();
    for (user_id, want) in expected["profiles"].as_object().unwrap() {
        let view: serde_json::Value = client
            .get(format!("{base}/api/v1/profiles/lookup"))
            .query(&[("kind", "user_id"), ("value", user_id), ("as_of", as_of)])
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let scores = &view["scores"];
        for (field, value) in want.as_object().unwrap() {
            let got = &scores[field];
            let same = match (value.as_f64(), got.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                _ => value == got,
            };
            if !same {
                mismatches.push(format!("{user_id}.{field}: expected {value}, got {got}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    drop(_server);

    let rebuild = siyu(&db, &["rebuild"]);
    assert!(rebuild.status.success(), "{}{}", text(&rebuild.stdout), text(&rebuild.stderr));
    assert!(text(&rebuild.stdout).contains("verified"), "{}", text(&rebuild.stdout));
}

#[test]
fn bad_lines_are_reported_with_their_numbers_and_good_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("siyu.db");
    create_tenant(&db, "shop");
    let file = dir.path().join("mixed.ndjson");
    let mut content = Vec::new();
    content.extend_from_slice(
        br#"{"message_id":"a","type":"like","identities":{"user_id":"u1"},"timestamp":"2026-01-01T00:00:00Z"}"#,
    );
    content.extend_from_slice(b"\n{not json\n");
    content.extend_from_slice(br#"{"message_id":"c","type":"Like!","identities":{"user_id":"u1"}}"#);
    content.extend_from_slice(b"\n\xff\xfe broken bytes\n\n");
    content.extend_from_slice(br#"{"message_id":"e","type":"order_paid","identities":{"user_id":"u2"},"amount":9.9}"#);
    content.push(b'\n');
    std::fs::write(&file, content).unwrap();

    let out = siyu(&db, &["import", file.to_str().unwrap(), "--tenant", "shop", "--quiet"]);
    assert_eq!(out.status.code(), Some(3), "some lines were rejected");
    let stderr = text(&out.stderr);
    let name = file.display().to_string();
    assert!(stderr.contains(&format!("{name}:2: invalid_json")), "{stderr}");
    assert!(stderr.contains(&format!("{name}:3: unknown_event_type (type)")), "{stderr}");
    assert!(stderr.contains(&format!("{name}:4: invalid_encoding")), "{stderr}");
    assert!(stderr.contains("2 appended"), "{stderr}");

    let list = siyu(&db, &["tenant", "list"]);
    assert!(
        text(&list.stdout).lines().any(|l| l.contains("shop") && l.trim_end().ends_with(" 2")),
        "{}",
        text(&list.stdout)
    );
}

#[test]
fn csv_import_maps_columns_and_reports_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("siyu.db");
    create_tenant(&db, "shop");
    let file = dir.path().join("orders.csv");
    let mut content = b"message_id,type,channel,account,user_id,phone,timestamp,amount,properties.sku\n".to_vec();
    content.extend_from_slice(b"o1,order_paid,taobao,tmall-store,u1,138-0013-8000,2026-05-01T10:00:00Z,199.90,A1\n");
    content.extend_from_slice(b"o2,order_paid,taobao,tmall-store,u2,12,2026-05-01T10:00:00Z,10,A1\n");
    content.extend_from_slice(b"o3,follow,douyin,brand-main,u3,,2026-05-02T10:00:00Z,,\n");
    content.extend_from_slice(b"o4,follow,douyin,\xc4\xe3\xba\xc3,u4,,2026-05-02T10:00:00Z,,\n");
    std::fs::write(&file, content).unwrap();

    let out = siyu(&db, &["import", file.to_str().unwrap(), "--tenant", "shop", "--quiet"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(":3: invalid_identity (identities.phone)"), "{stderr}");
    assert!(stderr.contains(":5: invalid_encoding (account)"), "{stderr}");
    assert!(stderr.contains("2 appended"), "{stderr}");
}

#[test]
fn config_prints_the_defaults_and_bad_flags_fail_clearly() {
    let out = Command::new(BIN).arg("config").output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("group_max_events"));
    let out = Command::new(BIN).args(["tenant", "create", "--name", "x", "--industry", "spaceships"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown industry"), "{}", text(&out.stderr));
}

#[test]
fn tag_import_reports_bad_rows_keeps_good_ones_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("siyu.db");
    create_tenant(&db, "shop");
    let events = dir.path().join("events.csv");
    std::fs::write(
        &events,
        "message_id,type,channel,account,user_id,phone,timestamp\n\
         e1,follow,douyin,brand-main,u1,,2026-05-01T10:00:00Z\n\
         e2,follow,douyin,brand-main,u2,13800138000,2026-05-01T10:00:00Z\n",
    )
    .unwrap();
    let out = siyu(&db, &["import", events.to_str().unwrap(), "--tenant", "shop", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = siyu(&db, &["tag", "create", "--tenant", "shop", "--name", "高意向"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let file = dir.path().join("tags.csv");
    std::fs::write(
        &file,
        "user_id,phone,tag,action\n\
         u1,,高意向,\n\
         ,138-0013-8000,高意向,add\n\
         u9,,高意向,\n\
         u1,,不存在,add\n\
         u2,,高意向,delete\n",
    )
    .unwrap();
    let out = siyu(&db, &["tag", "import", "--tenant", "shop", file.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(":4: no profile holds user_id:u9"), "{stderr}");
    assert!(stderr.contains(":5: no tag"), "{stderr}");
    assert!(stderr.contains(":6: action must be add or remove"), "{stderr}");
    assert!(stderr.contains("2 changed, 0 already so, 3 bad rows"), "{stderr}");

    // Re-running changes nothing more.
    let out = siyu(&db, &["tag", "import", "--tenant", "shop", file.to_str().unwrap()]);
    assert!(text(&out.stderr).contains("0 changed, 2 already so, 3 bad rows"), "{}", text(&out.stderr));
    let list = siyu(&db, &["tag", "list", "--tenant", "shop"]);
    let listed = text(&list.stdout);
    assert!(
        listed.lines().any(|l| l.contains("高意向") && l.contains("manual") && l.trim_end().ends_with(" 2")),
        "{listed}"
    );

    // Remove by hand; rule tags cannot be set by hand.
    let out = siyu(&db, &["tag", "remove", "--tenant", "shop", "--name", "高意向", "--identity", "user_id:u1"]);
    assert!(out.status.success() && text(&out.stdout).contains("done"), "{}", text(&out.stderr));
    let out = siyu(&db, &["tag", "create", "--tenant", "shop", "--name", "有手机", "--condition", "has(phone)"]);
    assert!(text(&out.stdout).contains("rule): 1 profiles"), "{} {}", text(&out.stdout), text(&out.stderr));
    let out = siyu(&db, &["tag", "add", "--tenant", "shop", "--name", "有手机", "--identity", "user_id:u1"]);
    assert!(!out.status.success() && text(&out.stderr).contains("rule tag"), "{}", text(&out.stderr));
}
