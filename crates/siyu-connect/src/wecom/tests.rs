//! The client and the connector against the stand-in: tokens, errors, faults, mass tasks,
//! reconciliation and rate limits, counted from what the stand-in recorded (never timed).

use std::time::Duration;

use siyu_model::reach::{Attachment, MessageContent};
use siyu_model::{Channel, Identity, IdentityKind};

use super::client::{ContactWay, ContactWayScene, ContactWayType, Secret, WeComClient, WeComError};
use super::connector::{WeComConfig, WeComConnector};
use super::stand_in::{Fault, RateLimit, StandInConfig, StandInHandle, WeComStandIn};
use crate::outbound::{Accepted, Connector, Outbound, SendKind, TaskRecipientStatus};

const STAFF: &str = "zhangsan";
const LIST: &str = "/cgi-bin/externalcontact/list";
const ADD_TEMPLATE: &str = "/cgi-bin/externalcontact/add_msg_template";

fn stand_in_config(customers: &[&str]) -> StandInConfig {
    StandInConfig {
        contacts: customers.iter().map(|c| (STAFF.to_string(), c.to_string())).collect(),
        ..StandInConfig::default()
    }
}

async fn start(config: StandInConfig) -> (StandInHandle, WeComConfig) {
    let (corp_id, secret) = (config.corp_id.clone(), config.corp_secret.clone());
    let (base_url, handle) = WeComStandIn::start(config).await.unwrap();
    let mut wecom = WeComConfig::new("wecom-main", corp_id, Secret::new(secret));
    wecom.base_url = base_url;
    wecom.timeout_ms = 2_000;
    wecom.requests_per_second = 0.0;
    (handle, wecom)
}

fn client(config: &WeComConfig) -> WeComClient {
    WeComClient::new(config.client_config()).unwrap()
}

fn text(content: &str) -> MessageContent {
    MessageContent { text: Some(content.into()), attachments: Vec::new() }
}

fn outbound(key: &str, sender: &str, customer: &str, content: MessageContent, kind: SendKind) -> Outbound {
    Outbound {
        key: key.into(),
        channel: Channel::Wecom,
        account: "wecom-main".into(),
        sender: Some(sender.into()),
        recipient: Identity::new(IdentityKind::WecomExternalUserid, customer).unwrap(),
        content,
        kind,
    }
}

fn mass(key: &str, customer: &str, content: MessageContent) -> Outbound {
    outbound(key, STAFF, customer, content, SendKind::Mass)
}

fn task_id(outcome: &Result<Accepted, crate::SendError>) -> String {
    match outcome {
        Ok(Accepted::Task { task_id }) => task_id.clone(),
        other => panic!("expected a task, got {other:?}"),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn the_token_is_fetched_once_and_shared() {
    let (stand_in, config) = start(stand_in_config(&["wm1"])).await;
    let client = std::sync::Arc::new(client(&config));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.list_external_contacts(STAFF).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), ["wm1"]);
    }
    assert_eq!(client.list_external_contacts(STAFF).await.unwrap(), ["wm1"]);
    assert_eq!(client.token_fetches(), 1);
    assert_eq!(stand_in.state.received().gettoken_calls, 1);
}

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires() {
    let (stand_in, mut config) =
        start(StandInConfig { token_ttl: Duration::from_secs(1), ..stand_in_config(&["wm1"]) }).await;
    config.token_refresh_margin_secs = 0;
    let client = client(&config);
    client.list_external_contacts(STAFF).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    client.list_external_contacts(STAFF).await.unwrap();
    let received = stand_in.state.received();
    assert_eq!(received.gettoken_calls, 2);
    // Refreshed ahead of WeCom's expiry: no call had to be repeated after a 42001.
    assert_eq!(received.calls_to(LIST), 2);
}

#[tokio::test]
async fn an_expired_or_revoked_token_is_replaced_and_the_call_retried_once() {
    let (stand_in, config) = start(stand_in_config(&["wm1"])).await;
    let client = client(&config);
    client.list_external_contacts(STAFF).await.unwrap();
    stand_in.state.expire_tokens(); // 42001
    assert_eq!(client.list_external_contacts(STAFF).await.unwrap(), ["wm1"]);
    stand_in.state.revoke_tokens(); // 40014
    assert_eq!(client.list_external_contacts(STAFF).await.unwrap(), ["wm1"]);
    let received = stand_in.state.received();
    assert_eq!(received.gettoken_calls, 3);
    assert_eq!(client.token_fetches(), 3);
    assert_eq!(received.calls_to(LIST), 5);
}

#[tokio::test]
async fn errors_are_retryable_or_permanent() {
    let (_stand_in, config) = start(stand_in_config(&["wm1"])).await;
    let mut wrong_secret = config.clone();
    wrong_secret.corp_secret = Secret::new("wrong");
    let err = client(&wrong_secret).list_external_contacts(STAFF).await.unwrap_err();
    assert!(matches!(err, WeComError::Api { errcode: 40001, .. }), "{err:?}");
    assert!(!err.retryable());
    let err = client(&config).get_external_contact("wm-nobody", None).await.unwrap_err();
    assert!(matches!(err, WeComError::Api { errcode: 40096, .. }) && !err.retryable(), "{err:?}");
    let err = client(&config)
        .add_contact_way(&ContactWay {
            kind: ContactWayType::Single,
            scene: ContactWayScene::QrCode,
            style: None,
            remark: None,
            skip_verify: true,
            state: Some("x".repeat(31)),
            users: vec![STAFF.into()],
            parties: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, WeComError::Invalid(_)) && !err.retryable(), "{err:?}");
}

#[tokio::test]
async fn faults_become_errors_not_panics() {
    let (stand_in, mut config) = start(stand_in_config(&["wm1"])).await;
    config.timeout_ms = 300;
    let client = client(&config);
    client.access_token().await.unwrap();

    stand_in.state.inject(Fault::Unavailable, 1);
    let err = client.list_external_contacts(STAFF).await.unwrap_err();
    assert!(matches!(err, WeComError::Status { status: 503, .. }) && err.retryable(), "{err:?}");

    stand_in.state.inject(Fault::Garbage, 1);
    let err = client.list_external_contacts(STAFF).await.unwrap_err();
    assert!(matches!(err, WeComError::Decode { .. }) && err.retryable(), "{err:?}");

    stand_in.state.inject(Fault::Delay(Duration::from_secs(3)), 1);
    let err = client.list_external_contacts(STAFF).await.unwrap_err();
    assert!(matches!(err, WeComError::Timeout { .. }) && err.retryable(), "{err:?}");

    assert_eq!(client.list_external_contacts(STAFF).await.unwrap(), ["wm1"]);
}

#[tokio::test]
async fn a_503_is_a_retryable_send_error_and_nothing_is_recorded() {
    let (stand_in, config) = start(stand_in_config(&["wm1"])).await;
    let connector = WeComConnector::new(&config).unwrap();
    connector.client().access_token().await.unwrap();
    stand_in.state.inject(Fault::Unavailable, 1);
    let results = connector.send(&[mass("k1", "wm1", text("hello"))]).await;
    let err = results[0].as_ref().unwrap_err();
    assert!(err.retryable && err.code == "http_503" && err.connector == "wecom", "{err:?}");
    assert!(stand_in.state.received().templates.is_empty());
}

#[tokio::test]
async fn mass_messages_become_one_task_per_sender_and_content() {
    let (stand_in, mut config) = start(StandInConfig {
        contacts: vec![
            (STAFF.into(), "wm1".into()),
            (STAFF.into(), "wm2".into()),
            (STAFF.into(), "wm3".into()),
            ("lisi".into(), "wm1".into()),
        ],
        ..StandInConfig::default()
    })
    .await;
    config.max_recipients_per_task = 2;
    let connector = WeComConnector::new(&config).unwrap();
    let promo = MessageContent {
        text: Some("双十一".into()),
        attachments: vec![Attachment::Link {
            title: "sale".into(),
            url: "https://shop.example/sale".into(),
            pic_url: None,
            desc: None,
        }],
    };
    let batch = [
        mass("a1", "wm1", promo.clone()),
        mass("a2", "wm2", promo.clone()),
        mass("b1", "wm1", text("other")),
        mass("a3", "wm3", promo.clone()),
        mass("a4", "wm-stranger", promo.clone()),
        outbound("c1", "lisi", "wm1", promo.clone(), SendKind::Mass),
    ];
    let results = connector.send(&batch).await;
    // Content a: 4 recipients in chunks of 2 -> 2 tasks; content b -> 1; sender lisi -> 1.
    let (a1, a2, b1, a3, c1) =
        (task_id(&results[0]), task_id(&results[1]), task_id(&results[2]), task_id(&results[3]), task_id(&results[5]));
    assert_eq!(a1, a2);
    assert_ne!(a1, a3);
    assert_ne!(a1, b1);
    assert_ne!(a1, c1);
    let stranger = results[4].as_ref().unwrap_err();
    assert!(!stranger.retryable && stranger.code == "fail_list", "{stranger:?}");

    let received = stand_in.state.received();
    assert_eq!(received.templates.len(), 4);
    assert_eq!(received.templates[0].external_userids, ["wm1", "wm2"]);
    assert_eq!(received.templates[0].attachments[0]["msgtype"], "link");
    assert_eq!(received.templates[0].attachments[0]["link"]["url"], "https://shop.example/sale");
    assert_eq!(received.messages_to("wm1"), 3); // a, b, and lisi's
    assert_eq!(received.messages_to("wm2"), 1);
    assert_eq!(received.messages_to("wm3"), 1);
    assert_eq!(received.messages_to("wm-stranger"), 0);
}

#[tokio::test]
async fn task_results_follow_the_staff_confirmation() {
    let (stand_in, config) = start(stand_in_config(&["wm1", "wm2"])).await;
    let connector = WeComConnector::new(&config).unwrap();
    let results = connector.send(&[mass("k1", "wm1", text("hi")), mass("k2", "wm2", text("hi"))]).await;
    let msgid = task_id(&results[0]);
    let mut statuses = connector.task_results(&msgid, STAFF).await.unwrap();
    statuses.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        statuses,
        [("wm1".to_string(), TaskRecipientStatus::Unsent), ("wm2".to_string(), TaskRecipientStatus::Unsent)]
    );
    assert!(stand_in.state.confirm(&msgid));
    stand_in.state.set_status(&msgid, "wm2", 3);
    let mut statuses = connector.task_results(&msgid, STAFF).await.unwrap();
    statuses.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        statuses,
        [("wm1".to_string(), TaskRecipientStatus::Delivered), ("wm2".to_string(), TaskRecipientStatus::QuotaReached)]
    );
    // Paging: one recipient per page still reads them all.
    let first = connector.client().get_groupmsg_send_result(&msgid, STAFF, None, 1).await.unwrap();
    assert_eq!(first.send_list.len(), 1);
    let second = connector.client().get_groupmsg_send_result(&msgid, STAFF, Some(&first.next_cursor), 1).await.unwrap();
    assert_eq!(second.send_list.len(), 1);
    assert!(second.next_cursor.is_empty());
}

#[tokio::test]
async fn reconciliation_finds_the_earlier_task_so_nothing_is_sent_twice() {
    let (stand_in, config) = start(stand_in_config(&["wm1", "wm2", "wm3"])).await;
    let connector = WeComConnector::new(&config).unwrap();
    let attempted_at = unix_now();
    let batch = [mass("k1", "wm1", text("hello")), mass("k2", "wm2", text("hello"))];
    let sent = connector.send(&batch).await;
    let msgid = task_id(&sent[0]);

    // Suppose the outcome was lost: the dispatcher asks before trying again.
    let later =
        [batch[0].clone(), batch[1].clone(), mass("k3", "wm3", text("hello")), mass("k4", "wm1", text("other"))];
    let found = connector.find_accepted(&later, attempted_at).await.unwrap();
    assert_eq!(found[0], Some(Accepted::Task { task_id: msgid.clone() }));
    assert_eq!(found[1], Some(Accepted::Task { task_id: msgid }));
    assert_eq!(found[2], None, "wm3 was not in the task");
    assert_eq!(found[3], None, "different content");
    assert_eq!(stand_in.state.received().templates.len(), 1);
    assert!(!connector.deduplicates());
}

#[tokio::test]
async fn an_answer_lost_after_the_task_was_created_is_recovered_at_once() {
    let (stand_in, config) = start(stand_in_config(&["wm1", "wm2"])).await;
    let connector = WeComConnector::new(&config).unwrap();
    connector.client().access_token().await.unwrap();
    stand_in.state.inject(Fault::AnswerLost, 1);
    let batch = [mass("k1", "wm1", text("hello")), mass("k2", "wm2", text("hello"))];
    let results = connector.send(&batch).await;
    let received = stand_in.state.received();
    assert_eq!(received.templates.len(), 1);
    assert_eq!(task_id(&results[0]), received.templates[0].msgid);
    assert_eq!(task_id(&results[1]), received.templates[0].msgid);
    assert_eq!(received.messages_to("wm1"), 1);
    assert_eq!(received.messages_to("wm2"), 1);
}

#[tokio::test]
async fn welcome_messages_use_their_code_once_and_direct_messages_are_refused() {
    let (stand_in, config) = start(stand_in_config(&["wm1"])).await;
    let connector = WeComConnector::new(&config).unwrap();
    let code = stand_in.state.issue_welcome_code(STAFF, "wm1");
    let welcome = outbound(
        "w1",
        STAFF,
        "wm1",
        MessageContent {
            text: Some("欢迎".into()),
            attachments: vec![Attachment::Image { pic_url: Some("https://p/w.png".into()), media_id: None }],
        },
        SendKind::Welcome { welcome_code: code },
    );
    let direct = outbound("d1", STAFF, "wm1", text("hi"), SendKind::Direct);
    let results = connector.send(&[direct.clone(), welcome.clone()]).await;
    let refused = results[0].as_ref().unwrap_err();
    assert!(!refused.retryable && refused.code == "direct_unsupported", "{refused:?}");
    assert_eq!(results[1], Ok(Accepted::Sent { remote_id: None }));
    let again = connector.send(&[welcome]).await;
    let used = again[0].as_ref().unwrap_err();
    assert!(!used.retryable && used.code == "40058", "{used:?}");
    let received = stand_in.state.received();
    assert_eq!(received.welcomes.len(), 1);
    assert_eq!(received.welcomes[0].attachments[0]["image"]["pic_url"], "https://p/w.png");
    assert_eq!(received.messages_to("wm1"), 1);
}

#[tokio::test]
async fn messages_wecom_cannot_address_are_refused_without_a_call() {
    let (stand_in, config) = start(stand_in_config(&["wm1"])).await;
    let connector = WeComConnector::new(&config).unwrap();
    let mut wrong_channel = mass("k1", "wm1", text("hi"));
    wrong_channel.channel = Channel::Douyin;
    let mut wrong_identity = mass("k2", "wm1", text("hi"));
    wrong_identity.recipient = Identity::new(IdentityKind::Phone, "13800138000").unwrap();
    let mut no_sender = mass("k3", "wm1", text("hi"));
    no_sender.sender = None;
    let results = connector.send(&[wrong_channel, wrong_identity, no_sender]).await;
    let codes: Vec<&str> = results.iter().map(|r| r.as_ref().unwrap_err().code.as_str()).collect();
    assert_eq!(codes, ["wrong_channel", "bad_recipient", "missing_sender"]);
    assert!(results.iter().all(|r| !r.as_ref().unwrap_err().retryable));
    assert_eq!(stand_in.state.received().calls_to(ADD_TEMPLATE), 0);
}

#[tokio::test]
async fn wecom_frequency_limits_stop_the_batch_and_say_when_to_come_back() {
    let (stand_in, config) = start(StandInConfig {
        rate_limit: Some(RateLimit { max_calls: 2, window: Duration::from_secs(600) }),
        ..stand_in_config(&["wm1"])
    })
    .await;
    let connector = WeComConnector::new(&config).unwrap();
    let batch: Vec<Outbound> = (0..4).map(|i| mass(&format!("k{i}"), "wm1", text(&format!("message {i}")))).collect();
    let results = connector.send(&batch).await;
    assert!(results[0].is_ok() && results[1].is_ok());
    for result in &results[2..] {
        let err = result.as_ref().unwrap_err();
        assert!(err.retryable, "{err:?}");
        assert_eq!(err.retry_after, Some(Duration::from_secs(config.rate_limit_backoff_secs)));
    }
    assert_eq!(results[2].as_ref().unwrap_err().code, "45009");
    // The fourth was not tried, and while paused nothing reaches WeCom.
    assert_eq!(stand_in.state.received().calls_to(ADD_TEMPLATE), 3);
    let later = connector.send(&batch[3..]).await;
    assert_eq!(later[0].as_ref().unwrap_err().code, "rate_limited");
    assert_eq!(stand_in.state.received().calls_to(ADD_TEMPLATE), 3);
}

#[tokio::test]
async fn the_client_limiter_lets_every_request_through_in_order() {
    let (stand_in, mut config) = start(stand_in_config(&["wm1"])).await;
    config.requests_per_second = 100.0;
    config.burst = 1;
    let connector = WeComConnector::new(&config).unwrap();
    let batch: Vec<Outbound> = (0..5).map(|i| mass(&format!("k{i}"), "wm1", text(&format!("m{i}")))).collect();
    let results = connector.send(&batch).await;
    assert!(results.iter().all(Result::is_ok));
    let texts: Vec<Option<String>> = stand_in.state.received().templates.into_iter().map(|t| t.text).collect();
    assert_eq!(texts, (0..5).map(|i| Some(format!("m{i}"))).collect::<Vec<_>>());
}

#[tokio::test]
async fn customer_lookups_tags_and_contact_ways() {
    let (stand_in, config) = start(stand_in_config(&["wm1", "wm2", "wm3"])).await;
    let client = client(&config);
    let detail = client.get_external_contact("wm2", None).await.unwrap();
    assert_eq!(detail.external_contact.external_userid, "wm2");
    assert_eq!(detail.follow_user[0].userid, STAFF);

    let first = client.batch_get_by_user(&[STAFF.to_string()], None, 2).await.unwrap();
    assert_eq!(first.external_contact_list.len(), 2);
    let rest = client.batch_get_by_user(&[STAFF.to_string()], Some(&first.next_cursor), 2).await.unwrap();
    assert_eq!(rest.external_contact_list.len(), 1);
    assert!(rest.next_cursor.is_empty());
    assert_eq!(rest.external_contact_list[0].follow_info.userid, STAFF);

    client.mark_tag(STAFF, "wm1", &["etVIP".to_string()], &[]).await.unwrap();
    let err = client.mark_tag(STAFF, "wm-nobody", &["etVIP".to_string()], &[]).await.unwrap_err();
    assert!(matches!(err, WeComError::Api { errcode: 84061, .. }), "{err:?}");

    let way = client
        .add_contact_way(&ContactWay {
            kind: ContactWayType::Single,
            scene: ContactWayScene::QrCode,
            style: None,
            remark: Some("双十一海报".into()),
            skip_verify: true,
            state: Some("poster-1111".into()),
            users: vec![STAFF.into()],
            parties: vec![],
        })
        .await
        .unwrap();
    assert!(!way.config_id.is_empty());
    assert!(way.qr_code.is_some());

    let received = stand_in.state.received();
    assert_eq!(received.tags.len(), 1);
    assert_eq!(received.tags[0].add_tag, ["etVIP"]);
    assert_eq!(received.contact_ways[0].request["state"], "poster-1111");
    assert_eq!(received.contact_ways[0].request["type"], 1);
    assert_eq!(received.contact_ways[0].request["scene"], 2);
}

#[tokio::test]
async fn the_debug_endpoint_shows_what_was_received() {
    let (stand_in, config) = start(stand_in_config(&["wm1"])).await;
    let connector = WeComConnector::new(&config).unwrap();
    connector.send(&[mass("k1", "wm1", text("hello"))]).await[0].as_ref().unwrap();
    let body: serde_json::Value =
        reqwest::get(format!("{}/__stand_in/received", config.base_url)).await.unwrap().json().await.unwrap();
    assert_eq!(body["gettoken_calls"], 1);
    assert_eq!(body["templates"][0]["external_userids"], serde_json::json!(["wm1"]));
    assert_eq!(body["templates"][0]["text"], "hello");
    assert_eq!(body["calls"][ADD_TEMPLATE], 1);
    drop(stand_in);
}
