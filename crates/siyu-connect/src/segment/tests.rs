//! Payloads shaped as analytics.js, analytics-python, @segment/analytics-node, the mobile SDKs and
//! RudderStack actually send them.

use siyu_model::event::EventKind;
use siyu_model::{Channel, EventError, EventType, Fen, IdentityKind, Source};

use super::*;

const RECEIVED: &str = "2024-03-05T10:00:02Z";

fn received() -> Millis {
    Millis::parse_rfc3339(RECEIVED).unwrap()
}

fn at(text: &str) -> Millis {
    Millis::parse_rfc3339(text).unwrap()
}

fn single(kind: CallKind, json: &str) -> Result<Event, SegmentError> {
    parse_single(
        kind,
        json.as_bytes(),
        received(),
        &Mapping::default(),
        &SegmentLimits::default(),
        TimeLimits::default(),
    )
}

fn single_err(kind: CallKind, json: &str) -> (&'static str, String) {
    let e = single(kind, json).unwrap_err();
    (e.code, e.field)
}

fn batch(json: &str) -> BatchParse {
    parse_batch(json.as_bytes(), received(), &Mapping::default(), &SegmentLimits::default(), TimeLimits::default())
        .unwrap()
}

fn identity(event: &Event, kind: IdentityKind) -> Option<&str> {
    event.identities.iter().find(|i| i.kind == kind).map(|i| i.value.as_str())
}

fn props(event: &Event) -> serde_json::Value {
    serde_json::from_str(event.properties.as_ref().unwrap().get()).unwrap()
}

const AJS_PAGE: &str = r#"{
  "timestamp": "2024-03-05T10:00:00.000Z",
  "integrations": {},
  "type": "page",
  "properties": {"path": "/shoes", "referrer": "https://www.baidu.com/", "search": "?utm_campaign=spring",
                 "title": "Shoes", "url": "https://shop.example.com/shoes"},
  "name": "Shoes",
  "category": "Catalog",
  "context": {
    "page": {"path": "/shoes", "referrer": "https://www.baidu.com/", "search": "?utm_campaign=spring",
             "title": "Shoes", "url": "https://shop.example.com/shoes"},
    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/122.0 Safari/537.36",
    "locale": "zh-CN",
    "library": {"name": "analytics.js", "version": "next-1.64.0"},
    "campaign": {"name": "spring", "source": "baidu", "medium": "cpc"}
  },
  "messageId": "ajs-next-6f3ba2c5e8e4d1a0b39c1f6e2d8a7b41",
  "anonymousId": "5c8f2a1e-7d3b-4e0a-9c61-2f7d0b8e4a13",
  "writeKey": "wk_live_3xAmPlE",
  "userId": null,
  "sentAt": "2024-03-05T10:00:00.050Z",
  "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}
}"#;

#[test]
fn analytics_js_page_becomes_a_web_view() {
    let e = single(CallKind::Page, AJS_PAGE).unwrap();
    assert_eq!(e.kind, EventKind::Known(EventType::View));
    assert_eq!(e.channel, Channel::Web);
    assert_eq!(e.message_id, "ajs-next-6f3ba2c5e8e4d1a0b39c1f6e2d8a7b41");
    assert_eq!(e.identities.len(), 1, "userId null is no identity");
    assert_eq!(identity(&e, IdentityKind::AnonymousId), Some("5c8f2a1e-7d3b-4e0a-9c61-2f7d0b8e4a13"));
    // The browser clock said 10:00:00.000 and sent at 10:00:00.050; we got it at 10:00:02.
    assert_eq!(e.timestamp, at("2024-03-05T10:00:01.950Z"));
    assert_eq!(e.received_at, received());
    let p = props(&e);
    assert_eq!(p["name"], "Shoes");
    assert_eq!(p["category"], "Catalog");
    assert_eq!(p["url"], "https://shop.example.com/shoes");
    assert_eq!(e.source.as_ref().map(Source::key).as_deref(), Some("campaign:spring"));
    assert!(e.context.as_ref().unwrap().get().contains("analytics.js"));
    assert_eq!(e.amount, None);
    assert_eq!(e.account, "");
    assert_eq!(write_key_from_body(AJS_PAGE.as_bytes()).as_deref(), Some("wk_live_3xAmPlE"));
}

#[test]
fn page_properties_win_over_top_level_name() {
    let e = single(CallKind::Page, r#"{"anonymousId":"a1","name":"Top","properties":{"name":"Inner"}}"#).unwrap();
    assert_eq!(props(&e)["name"], "Inner");
    // Nothing added: the original bytes are stored untouched.
    assert_eq!(e.properties.unwrap().get(), r#"{"name":"Inner"}"#);
    let bare = single(CallKind::Page, r#"{"anonymousId":"a1"}"#).unwrap();
    assert!(bare.properties.is_none());
}

const ORDER_COMPLETED: &str = r#"{
  "type": "track",
  "event": "Order Completed",
  "userId": "u-1001",
  "anonymousId": "5c8f2a1e-7d3b-4e0a-9c61-2f7d0b8e4a13",
  "properties": {
    "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
    "order_id": "50314b8e9bcf000000000000",
    "affiliation": "Tmall Store",
    "total": 367.54,
    "subtotal": 340.00,
    "revenue": 350.04,
    "shipping": 12,
    "tax": 5.5,
    "discount": 0,
    "coupon": "spring10",
    "currency": "cny",
    "products": [
      {"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32", "name": "Monopoly: 3rd Edition",
       "price": 19.99, "quantity": 1, "category": "Games"}
    ]
  },
  "context": {
    "library": {"name": "analytics.js", "version": "next-1.64.0"},
    "page": {"url": "https://shop.example.com/checkout/done"},
    "traits": {"phone": "138-0013-8000", "email": "Ann@Example.COM"}
  },
  "integrations": {"All": true, "Mixpanel": false},
  "messageId": "ajs-next-0c1e51b0a4b7f23d9e88c7d7a1a2b3c4",
  "timestamp": "2024-03-05T10:00:01.000Z",
  "sentAt": "2024-03-05T10:00:01.000Z"
}"#;

#[test]
fn order_completed_carries_exact_money() {
    let e = single(CallKind::Track, ORDER_COMPLETED).unwrap();
    assert_eq!(e.kind, EventKind::Known(EventType::OrderPaid));
    // total wins over revenue, and is exact: 367.54 as f64 would not round-trip through * 100.
    assert_eq!(e.amount, Some(Fen(36754)));
    assert_eq!(e.currency.as_deref(), Some("CNY"));
    assert_eq!(props(&e)["order_id"], "50314b8e9bcf000000000000");
    // Properties are stored byte for byte: money digits are never re-encoded.
    assert!(e.properties.as_ref().unwrap().get().contains("\"subtotal\": 340.00"));
    assert_eq!(identity(&e, IdentityKind::UserId), Some("u-1001"));
    assert_eq!(identity(&e, IdentityKind::Phone), Some("+8613800138000"));
    assert_eq!(identity(&e, IdentityKind::Email), Some("ann@example.com"));
    assert_eq!(e.identities.len(), 4);
    assert_eq!(e.channel, Channel::Web, "context.page marks a browser");
    assert!(e.traits.as_ref().unwrap().get().contains("138-0013-8000"));
    assert_eq!(e.timestamp, received(), "sentAt = timestamp, so the event is as old as its arrival");
}

#[test]
fn amount_falls_back_from_total_to_revenue_to_value() {
    let track = |props: &str| {
        single(CallKind::Track, &format!(r#"{{"userId":"u","event":"Order Completed","properties":{props}}}"#))
    };
    assert_eq!(track(r#"{"revenue": 25.00, "value": 1}"#).unwrap().amount, Some(Fen(2500)));
    assert_eq!(track(r#"{"value": 0.1}"#).unwrap().amount, Some(Fen(10)));
    assert_eq!(track(r#"{"total": null, "revenue": 8.8}"#).unwrap().amount, Some(Fen(880)));
    assert_eq!(track(r#"{"total": "199.00"}"#).unwrap().amount, Some(Fen(19900)));
    assert_eq!(track(r#"{"total": 1.5e2}"#).unwrap().amount, Some(Fen(15000)));
    let no_currency = track(r#"{"total": 5}"#).unwrap();
    assert_eq!(no_currency.currency, None, "absent currency means the tenant default (CNY)");
    assert_eq!(track(r#"{"total": 5, "currency": "RMB"}"#).unwrap().currency.as_deref(), Some("CNY"));
}

#[test]
fn order_amount_errors_name_their_field() {
    let track = |event: &str, props: &str| {
        let json = format!(r#"{{"userId":"u","event":"{event}","properties":{props}}}"#);
        let e = single(CallKind::Track, &json).unwrap_err();
        (e.code, e.field)
    };
    let expect = |code: &str, field: &str| (code.to_string(), field.to_string());
    let cases = [
        (track("Order Completed", r#"{"order_id":"A1"}"#), expect("missing_amount", "properties.total")),
        (track("Order Refunded", r#"{}"#), expect("missing_amount", "properties.total")),
        (track("Order Completed", r#"{"total": 1.005}"#), expect("invalid_amount", "properties.total")),
        (track("Order Completed", r#"{"revenue": -3}"#), expect("invalid_amount", "properties.revenue")),
        (track("Order Completed", r#"{"value": "lots"}"#), expect("invalid_amount", "properties.value")),
        (track("live_gift", r#"{"total": true}"#), expect("invalid_amount", "properties.total")),
        (
            track("Order Completed", r#"{"total": 1, "currency": "yuan"}"#),
            expect("invalid_field", "properties.currency"),
        ),
    ];
    for ((code, field), (want_code, want_field)) in cases {
        assert_eq!((code.to_string(), field), (want_code, want_field));
    }
    let none = single(CallKind::Track, r#"{"userId":"u","event":"Order Completed"}"#).unwrap_err();
    assert_eq!(none.code, codes::MISSING_AMOUNT);
}

#[test]
fn order_refunded_and_live_gift_keep_their_amounts() {
    let refund = single(
        CallKind::Track,
        r#"{"userId":"u","event":"Order Refunded","properties":{"order_id":"A1","total":30,"currency":"CNY"}}"#,
    )
    .unwrap();
    assert_eq!(refund.kind, EventKind::Known(EventType::OrderRefunded));
    assert_eq!(refund.amount, Some(Fen(3000)));
    let gift = single(CallKind::Track, r#"{"userId":"u","event":"live_gift","properties":{"value":6.6}}"#).unwrap();
    assert_eq!(gift.kind, EventKind::Known(EventType::LiveGift));
    assert_eq!(gift.amount, Some(Fen(660)));
    let gift_without = single(CallKind::Track, r#"{"userId":"u","event":"live_gift"}"#).unwrap();
    assert_eq!(gift_without.amount, None, "a gift may be free");
}

#[test]
fn money_like_properties_on_other_events_never_reject_them() {
    // Segment's Product Viewed spec has a `value`; a sloppy one must not cost the view.
    let e = single(
        CallKind::Track,
        r#"{"anonymousId":"a","event":"Product Viewed","properties":{"product_id":"p1","price":19.999,"value":19.999,"currency":"???"}}"#,
    )
    .unwrap();
    assert_eq!(e.kind, EventKind::Known(EventType::View));
    assert_eq!((e.amount, e.currency), (None, None));
    let valued = single(
        CallKind::Track,
        r#"{"anonymousId":"a","event":"Product Added","properties":{"value":20,"currency":"usd"}}"#,
    )
    .unwrap();
    assert_eq!(valued.kind, EventKind::Custom("product_added".into()));
    assert_eq!((valued.amount, valued.currency.as_deref()), (Some(Fen(2000)), Some("USD")));
}

const PYTHON_BATCH: &str = r#"{
  "batch": [
    {
      "traits": {"name": "张三", "phone": "+86 138 0013 8000", "email": "zhang@example.com", "plan": "vip"},
      "timestamp": "2024-03-05T09:59:58.123456+00:00",
      "context": {"library": {"name": "analytics-python", "version": "2.3.2"}},
      "integrations": {},
      "type": "identify",
      "userId": "u-1001",
      "anonymousId": null,
      "messageId": "0a3b1c5e-4f6d-4e2b-9a8c-7d6e5f4a3b2c"
    },
    {
      "properties": {"order_id": "A1001", "total": 199.0, "currency": "CNY"},
      "timestamp": "2024-03-05T09:59:59.000000+00:00",
      "context": {"library": {"name": "analytics-python", "version": "2.3.2"}},
      "integrations": {},
      "event": "Order Completed",
      "type": "track",
      "userId": "u-1001",
      "anonymousId": null,
      "messageId": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
    }
  ],
  "sentAt": "2024-03-05T10:00:00.000000+00:00"
}"#;

#[test]
fn analytics_python_batch_identify_and_track() {
    let out = batch(PYTHON_BATCH);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.write_key, None);
    let [(0, identify), (1, order)] = &out.events[..] else {
        panic!("expected two events in order, got {:?}", out.events);
    };
    assert_eq!(identify.kind, EventKind::Known(EventType::Identify));
    assert_eq!(identify.message_id, "0a3b1c5e-4f6d-4e2b-9a8c-7d6e5f4a3b2c");
    assert_eq!(identity(identify, IdentityKind::Phone), Some("+8613800138000"));
    assert_eq!(identity(identify, IdentityKind::Email), Some("zhang@example.com"));
    assert_eq!(identity(identify, IdentityKind::UserId), Some("u-1001"));
    assert!(identify.traits.as_ref().unwrap().get().contains("\"plan\": \"vip\""));
    assert_eq!(identify.channel, Channel::Other, "a server library reveals no channel");
    // The batch-level sentAt (10:00:00) corrects every message: skew is +2 s.
    assert_eq!(identify.timestamp, at("2024-03-05T10:00:00.123Z"));
    assert_eq!(order.timestamp, at("2024-03-05T10:00:01Z"));
    assert_eq!(order.amount, Some(Fen(19900)));
}

const NODE_BATCH: &str = r#"{
  "batch": [
    {
      "userId": 42,
      "event": "Store Visit",
      "properties": {"store": "shanghai-jingan"},
      "type": "track",
      "messageId": "node-next-1709632800000-6c2f4e1a-8b3d-4a5f-9e7c-1d2b3a4c5e6f",
      "timestamp": "2024-03-05T10:00:00.000Z",
      "context": {"library": {"name": "@segment/analytics-node", "version": "2.1.0"}},
      "integrations": {},
      "_metadata": {"nodeVersion": "20.11.1", "jsRuntime": "node"}
    },
    {
      "userId": 42,
      "groupId": "acme-corp",
      "traits": {"name": "Acme", "email": "sales@acme.example", "employees": 120},
      "type": "group",
      "messageId": "node-next-1709632800001-0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f",
      "timestamp": "2024-03-05T10:00:00.500Z",
      "context": {"library": {"name": "@segment/analytics-node", "version": "2.1.0"}},
      "_metadata": {"nodeVersion": "20.11.1", "jsRuntime": "node"}
    }
  ],
  "writeKey": "wk_node",
  "sentAt": "2024-03-05T10:00:01.000Z"
}"#;

#[test]
fn analytics_node_batch_custom_track_and_group() {
    let out = batch(NODE_BATCH);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.write_key.as_deref(), Some("wk_node"));
    let visit = &out.events[0].1;
    assert_eq!(visit.kind, EventKind::Custom("store_visit".into()));
    assert_eq!(identity(visit, IdentityKind::UserId), Some("42"), "numeric userId accepted");
    assert_eq!(visit.timestamp, at("2024-03-05T10:00:01Z"));

    let group = &out.events[1].1;
    assert_eq!(group.kind, EventKind::Custom("group".into()));
    assert_ne!(group.kind, EventKind::Known(EventType::GroupJoin));
    let p = props(group);
    assert_eq!(p["group_id"], "acme-corp");
    assert_eq!(p["employees"], 120);
    assert_eq!(group.group_id, None, "not a fan group");
    assert_eq!(
        group.identities.iter().map(|i| i.kind.clone()).collect::<Vec<_>>(),
        vec![IdentityKind::UserId],
        "the company's email is not the person's"
    );
}

#[test]
fn one_bad_message_does_not_sink_the_batch() {
    let big =
        format!(r#"{{"type":"track","event":"x","userId":"u","properties":{{"blob":"{}"}}}}"#, "x".repeat(40_000));
    let body = format!(
        r#"{{"batch":[
        {{"type":"track","event":"Product Viewed","anonymousId":"a1","messageId":"m0"}},
        {{"type":"track","event":"like","userId":"u","timestamp":"not a time"}},
        {{"event":"like","userId":"u"}},
        {big},
        {{"type":"identify","userId":"bad\u0001id"}},
        "just a string",
        {{"type":"Track","event":"follow","userId":"u2","messageId":"m6"}},
        {{"type":"checkout","userId":"u"}}
    ]}}"#
    );
    let out = batch(&body);
    let kept: Vec<usize> = out.events.iter().map(|(i, _)| *i).collect();
    assert_eq!(kept, vec![0, 6]);
    assert_eq!(out.events[1].1.kind, EventKind::Known(EventType::Follow));
    let rejected: Vec<(usize, &str, &str)> = out.rejected.iter().map(|(i, e)| (*i, e.code, e.field.as_str())).collect();
    assert_eq!(
        rejected,
        vec![
            (1, "invalid_timestamp", "batch[1].timestamp"),
            (2, "unknown_type", "batch[2].type"),
            (3, "message_too_large", "batch[3]"),
            (4, "invalid_identity", "batch[4].userId"),
            (5, "invalid_json", "batch[5]"),
            (7, "unknown_type", "batch[7].type"),
        ]
    );
    for (_, e) in &out.rejected {
        assert!(!e.is_too_large() || e.code == codes::MESSAGE_TOO_LARGE);
        assert!(!e.message.ends_with('.'), "{}", e.message);
        assert!(!e.message.starts_with(|c: char| c.is_uppercase()), "{}", e.message);
        assert!(!e.message.contains("RawMessage"), "no internal names leak: {}", e.message);
    }
}

#[test]
fn whole_body_errors_are_distinct() {
    let limits = SegmentLimits { max_message_bytes: 32 * 1024, max_batch_bytes: 200, max_batch_messages: 2 };
    let parse =
        |body: &[u8]| parse_batch(body, received(), &Mapping::default(), &limits, TimeLimits::default()).unwrap_err();
    let too_big = parse(format!(r#"{{"batch":[{{"type":"track","event":"{}"}}]}}"#, "x".repeat(300)).as_bytes());
    assert_eq!((too_big.code, too_big.field.as_str(), too_big.http_status()), ("batch_too_large", "body", 413));
    let too_many = parse(br#"{"batch":[{},{},{}]}"#);
    assert_eq!((too_many.code, too_many.field.as_str(), too_many.http_status()), ("batch_too_large", "batch", 413));
    assert!(too_many.is_too_large());
    for (body, code, field) in [
        (&b"not json"[..], "invalid_json", "body"),
        (&b"[1,2]"[..], "invalid_json", "body"),
        (&b"{\"batch\": \xff}"[..], "invalid_json", "body"),
        (&br#"{"batch": {"type":"track"}}"#[..], "invalid_json", "body"),
        (&br#"{"sentAt": "2024-03-05T10:00:00Z"}"#[..], "missing_field", "batch"),
        (&br#"{"batch": [], "sentAt": "yesterday"}"#[..], "invalid_timestamp", "sentAt"),
        (&br#"{"batch": [], "context": [1]}"#[..], "invalid_field", "context"),
    ] {
        let e = parse(body);
        assert_eq!(
            (e.code, e.field.as_str(), e.http_status()),
            (code, field, 400),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(batch(r#"{"batch": []}"#).events.is_empty());
}

#[test]
fn single_call_size_and_json_errors() {
    let limits = SegmentLimits { max_message_bytes: 64, ..SegmentLimits::default() };
    let body = format!(r#"{{"userId":"u","event":"{}"}}"#, "x".repeat(80));
    let e =
        parse_single(CallKind::Track, body.as_bytes(), received(), &Mapping::default(), &limits, TimeLimits::default())
            .unwrap_err();
    assert_eq!((e.code, e.field.as_str(), e.http_status()), ("message_too_large", "body", 413));
    assert_eq!(single_err(CallKind::Track, "{"), ("invalid_json", "body".into()));
    assert_eq!(single_err(CallKind::Track, r#""track""#), ("invalid_json", "body".into()));
    assert_eq!(
        single_err(CallKind::Track, r#"{"userId":"u","event":"x","properties":[1]}"#),
        ("invalid_field", "properties".into())
    );
    assert_eq!(
        single_err(CallKind::Track, r#"{"userId":"u","event":"x","context":"web"}"#),
        ("invalid_field", "context".into())
    );
    assert_eq!(single_err(CallKind::Identify, r#"{"userId":"u","traits":"vip"}"#), ("invalid_field", "traits".into()));
}

#[test]
fn identity_rules() {
    // A malformed phone in traits is dropped; the event survives on its other identities.
    let e =
        single(CallKind::Identify, r#"{"userId":"u1","traits":{"phone":"12345","email":"not-an-email","name":"Li"}}"#)
            .unwrap();
    assert_eq!(e.identities.len(), 1);
    assert_eq!(identity(&e, IdentityKind::UserId), Some("u1"));
    // Numeric phones are common in Chinese CRMs.
    let numeric = single(CallKind::Identify, r#"{"userId":"u1","traits":{"phone":13800138000}}"#).unwrap();
    assert_eq!(identity(&numeric, IdentityKind::Phone), Some("+8613800138000"));
    // identify falls back to context.traits when the SDK put them there.
    let ctx_traits =
        single(CallKind::Identify, r#"{"anonymousId":"a","context":{"traits":{"email":"X@Y.CN"}}}"#).unwrap();
    assert_eq!(identity(&ctx_traits, IdentityKind::Email), Some("x@y.cn"));
    assert!(ctx_traits.traits.unwrap().get().contains("X@Y.CN"));
    // Deliberate ids must be valid.
    assert_eq!(
        single_err(CallKind::Track, r#"{"userId":"a\u0007b","event":"like"}"#),
        ("invalid_identity", "userId".into())
    );
    let long = format!(r#"{{"userId":"{}","event":"like"}}"#, "u".repeat(300));
    assert_eq!(single_err(CallKind::Track, &long), ("invalid_identity", "userId".into()));
    assert_eq!(
        single_err(CallKind::Track, r#"{"userId":{"id":1},"event":"like"}"#),
        ("invalid_identity", "userId".into())
    );
    assert_eq!(
        single_err(CallKind::Track, r#"{"anonymousId":true,"event":"like"}"#),
        ("invalid_identity", "anonymousId".into())
    );
    // Nobody at all.
    assert_eq!(single_err(CallKind::Track, r#"{"event":"like"}"#), ("missing_identity", "userId".into()));
    assert_eq!(
        single_err(CallKind::Track, r#"{"userId":"","anonymousId":null,"event":"like"}"#),
        ("missing_identity", "userId".into())
    );
    // An invalid traits phone is no identity, so it cannot rescue an anonymous message.
    assert_eq!(
        single_err(CallKind::Track, r#"{"event":"like","context":{"traits":{"phone":"1"}}}"#),
        ("missing_identity", "userId".into())
    );
}

#[test]
fn external_ids_become_identities() {
    let e = single(
        CallKind::Track,
        r#"{"event":"follow","context":{"externalIds":[
            {"id":"oUnion-123","type":"wechat_unionid","collection":"users","encoding":"none"},
            {"id":"o-9f2","type":"douyin_open_id","collection":"users","encoding":"none"},
            {"id":"13900139000","type":"phone","collection":"users","encoding":"none"},
            {"id":"Z@Example.com","type":"email"},
            {"id":"br-1","type":"brazeExternalId","collection":"users","encoding":"none"},
            {"id":"12","type":"phone"},
            {"id":null,"type":"member_no"},
            {"type":"wechat_openid"}
        ]}}"#,
    )
    .unwrap();
    assert_eq!(identity(&e, IdentityKind::WechatUnionid), Some("oUnion-123"));
    assert_eq!(identity(&e, IdentityKind::DouyinOpenId), Some("o-9f2"));
    assert_eq!(identity(&e, IdentityKind::Phone), Some("+8613900139000"));
    assert_eq!(identity(&e, IdentityKind::Email), Some("z@example.com"));
    assert_eq!(e.identities.len(), 4, "{:?}", e.identities);
    // Malformed externalIds are enrichment, not the message's identity: skipped, not fatal.
    let odd =
        single(CallKind::Track, r#"{"userId":"u","event":"follow","context":{"externalIds":{"id":"x"}}}"#).unwrap();
    assert_eq!(odd.identities.len(), 1);
}

#[test]
fn duplicate_identities_are_collapsed() {
    let e = single(
        CallKind::Identify,
        r#"{"userId":"u","traits":{"phone":"13800138000"},"context":{"externalIds":[{"id":"+86 138 0013 8000","type":"phone"},{"id":"u","type":"user_id"}]}}"#,
    )
    .unwrap();
    assert_eq!(e.identities.len(), 2, "{:?}", e.identities);
}

#[test]
fn alias_links_previous_id_as_anonymous_id() {
    let e = single(
        CallKind::Alias,
        r#"{"type":"alias","previousId":"5c8f2a1e-7d3b","userId":"u-1001","anonymousId":"5c8f2a1e-7d3b",
            "context":{"library":{"name":"analytics.js","version":"next-1.64.0"}},
            "messageId":"ajs-next-aa","timestamp":"2024-03-05T10:00:00Z"}"#,
    )
    .unwrap();
    assert_eq!(e.kind, EventKind::Known(EventType::Alias));
    assert_eq!(identity(&e, IdentityKind::UserId), Some("u-1001"));
    assert_eq!(identity(&e, IdentityKind::AnonymousId), Some("5c8f2a1e-7d3b"));
    assert_eq!(e.identities.len(), 2);
    assert_eq!(props(&e)["previous_id"], "5c8f2a1e-7d3b");
    assert_eq!(single_err(CallKind::Alias, r#"{"userId":"u"}"#), ("missing_field", "previousId".into()));
    assert_eq!(
        single_err(CallKind::Alias, r#"{"previousId":"a","anonymousId":"a"}"#),
        ("missing_identity", "userId".into())
    );
    assert_eq!(
        single_err(CallKind::Alias, r#"{"previousId":[1],"userId":"u"}"#),
        ("invalid_identity", "previousId".into())
    );
}

#[test]
fn group_needs_a_group_id() {
    assert_eq!(
        single_err(CallKind::Group, r#"{"userId":"u","traits":{"name":"Acme"}}"#),
        ("missing_field", "groupId".into())
    );
    assert_eq!(single_err(CallKind::Group, r#"{"userId":"u","groupId":""}"#), ("missing_field", "groupId".into()));
    let numeric = single(CallKind::Group, r#"{"userId":"u","groupId":7788}"#).unwrap();
    assert_eq!(props(&numeric), serde_json::json!({"group_id": "7788"}));
    // Our group_id wins over a trait of the same name.
    let clash = single(CallKind::Group, r#"{"userId":"u","groupId":"g1","traits":{"group_id":"other"}}"#).unwrap();
    assert_eq!(props(&clash)["group_id"], "g1");
}

#[test]
fn mobile_screen_is_an_app_view() {
    let e = single(
        CallKind::Screen,
        r#"{
          "anonymousId": "B7E0F3A2-9C1D-4E5F-8A6B-3C2D1E0F9A8B",
          "name": "Product Detail",
          "properties": {"product_id": "p-88"},
          "context": {
            "app": {"build": "312", "name": "Siyu Shop", "namespace": "com.example.shop", "version": "3.1.2"},
            "device": {"id": "1F6B9D", "manufacturer": "Apple", "model": "iPhone15,2", "type": "ios"},
            "library": {"name": "analytics-ios", "version": "4.1.8"},
            "locale": "zh-CN",
            "network": {"wifi": true},
            "os": {"name": "iOS", "version": "17.3"},
            "screen": {"height": 852, "width": 393},
            "timezone": "Asia/Shanghai"
          },
          "messageId": "3A4B5C6D-7E8F-4091-A2B3-C4D5E6F7A8B9",
          "timestamp": "2024-03-05T10:00:00.250Z",
          "sentAt": "2024-03-05T10:00:00.750Z",
          "type": "screen"
        }"#,
    )
    .unwrap();
    assert_eq!(e.kind, EventKind::Known(EventType::View));
    assert_eq!(e.channel, Channel::App);
    assert_eq!(props(&e), serde_json::json!({"product_id": "p-88", "name": "Product Detail"}));
    assert_eq!(e.timestamp, at("2024-03-05T10:00:01.500Z"));
}

#[test]
fn channel_precedence() {
    let channel = |json: &str| single(CallKind::Track, json).unwrap().channel;
    assert_eq!(
        channel(r#"{"userId":"u","event":"like","context":{"siyu":{"channel":"douyin"},"channel":"jd","page":{}}}"#),
        Channel::Douyin
    );
    assert_eq!(
        channel(r#"{"userId":"u","event":"like","context":{"channel":"wechat_mp","app":{}}}"#),
        Channel::WechatMp
    );
    assert_eq!(
        channel(
            r#"{"userId":"u","event":"like","context":{"channel":"somewhere"},"properties":{"channel":"mini_program"}}"#
        ),
        Channel::MiniProgram
    );
    // Segment's and RudderStack's own top-level channel.
    assert_eq!(channel(r#"{"userId":"u","event":"like","channel":"browser"}"#), Channel::Web);
    assert_eq!(channel(r#"{"userId":"u","event":"like","channel":"mobile"}"#), Channel::App);
    assert_eq!(channel(r#"{"userId":"u","event":"like","channel":"web"}"#), Channel::Web);
    assert_eq!(channel(r#"{"userId":"u","event":"like","channel":"server"}"#), Channel::Other);
    // Android sends a userAgent too; app/device win.
    assert_eq!(
        channel(r#"{"userId":"u","event":"like","context":{"userAgent":"Dalvik/2.1.0","device":{"model":"Pixel"}}}"#),
        Channel::App
    );
    assert_eq!(channel(r#"{"userId":"u","event":"like","context":{"userAgent":"Mozilla/5.0"}}"#), Channel::Web);
    assert_eq!(channel(r#"{"userId":"u","event":"like"}"#), Channel::Other);
    let bad = single(CallKind::Track, r#"{"userId":"u","event":"like","context":{"siyu":{"channel":"myspace"}}}"#)
        .unwrap_err();
    assert_eq!((bad.code, bad.field.as_str()), ("unknown_channel", "context.siyu.channel"));
    assert_eq!(
        single_err(CallKind::Track, r#"{"userId":"u","event":"like","context":{"siyu":"x"}}"#),
        ("invalid_field", "context.siyu".into())
    );
}

#[test]
fn account_and_source_hints() {
    let e = single(
        CallKind::Track,
        r#"{"userId":"u","event":"live_watch","properties":{"account":"from-props"},
            "context":{"siyu":{"account":"brand-main","source":{"kind":"live","id":"live-20240305"}},
                       "campaign":{"name":"ignored-when-siyu-source"}}}"#,
    )
    .unwrap();
    assert_eq!(e.account, "brand-main");
    assert_eq!(e.source.unwrap().key(), "live:live-20240305");
    let props_account =
        single(CallKind::Track, r#"{"userId":"u","event":"like","properties":{"account":"shop-2"}}"#).unwrap();
    assert_eq!(props_account.account, "shop-2");
    let long = format!(r#"{{"userId":"u","event":"like","context":{{"siyu":{{"account":"{}"}}}}}}"#, "a".repeat(129));
    assert_eq!(single_err(CallKind::Track, &long), ("invalid_field", "context.siyu.account".into()));
    assert_eq!(
        single_err(CallKind::Track, r#"{"userId":"u","event":"like","context":{"siyu":{"source":"qr"}}}"#),
        ("invalid_field", "context.siyu.source".into())
    );
}

#[test]
fn rudderstack_original_timestamp_is_skew_corrected() {
    let e = single(
        CallKind::Track,
        r#"{"anonymousId":"d6a1c4f0","channel":"web","event":"Product Shared",
            "context":{"library":{"name":"RudderLabs JavaScript SDK","version":"3.0.0"},"traits":{},"locale":"zh-CN"},
            "rudderId":"8f2c1a0e","messageId":"0c2b6d1e-3f4a-4b5c-8d7e-9f0a1b2c3d4e",
            "originalTimestamp":"2024-03-05T18:00:00.000+08:00","sentAt":"2024-03-05T18:00:01.000+08:00",
            "properties":{"share_via":"wechat","product_id":"p1"},"type":"track"}"#,
    )
    .unwrap();
    assert_eq!(e.kind, EventKind::Known(EventType::Share));
    assert_eq!(e.channel, Channel::Web);
    assert_eq!(e.timestamp, at("2024-03-05T10:00:01Z"));
}

#[test]
fn timestamp_rules() {
    let ts = |json: &str| single(CallKind::Track, json);
    assert_eq!(ts(r#"{"userId":"u","event":"like"}"#).unwrap().timestamp, received(), "missing means now");
    assert_eq!(
        ts(r#"{"userId":"u","event":"like","sentAt":"2024-03-05T09:00:00Z"}"#).unwrap().timestamp,
        received(),
        "sentAt alone corrects nothing"
    );
    // `timestamp` wins over `originalTimestamp`; without sentAt no correction.
    assert_eq!(
        ts(r#"{"userId":"u","event":"like","timestamp":"2024-03-01T00:00:00Z","originalTimestamp":"2024-03-02T00:00:00Z"}"#)
            .unwrap()
            .timestamp,
        at("2024-03-01T00:00:00Z")
    );
    let errors = [
        (r#"{"userId":"u","event":"like","timestamp":"yesterday"}"#, "invalid_timestamp", "timestamp"),
        (r#"{"userId":"u","event":"like","timestamp":1709632800000}"#, "invalid_timestamp", "timestamp"),
        (r#"{"userId":"u","event":"like","timestamp":"2024-03-05T10:00:00"}"#, "invalid_timestamp", "timestamp"),
        (r#"{"userId":"u","event":"like","originalTimestamp":"soon"}"#, "invalid_timestamp", "originalTimestamp"),
        (
            r#"{"userId":"u","event":"like","timestamp":"2024-03-05T10:00:00Z","sentAt":"x"}"#,
            "invalid_timestamp",
            "sentAt",
        ),
        (r#"{"userId":"u","event":"like","timestamp":"2030-01-01T00:00:00Z"}"#, "timestamp_in_future", "timestamp"),
        (
            r#"{"userId":"u","event":"like","originalTimestamp":"1999-01-01T00:00:00Z"}"#,
            "timestamp_too_old",
            "originalTimestamp",
        ),
        // The correction is applied before the range check; 2 s cannot rescue 1999.
        (
            r#"{"userId":"u","event":"like","timestamp":"1999-12-31T00:00:00Z","sentAt":"2024-03-05T10:00:00Z"}"#,
            "timestamp_too_old",
            "timestamp",
        ),
    ];
    for (json, code, field) in errors {
        assert_eq!(single_err(CallKind::Track, json), (code, field.to_string()), "{json}");
    }
    // A device clock two days fast is fine once corrected.
    let fast_clock =
        ts(r#"{"userId":"u","event":"like","timestamp":"2024-03-07T10:00:00Z","sentAt":"2024-03-07T10:00:01Z"}"#)
            .unwrap();
    assert_eq!(fast_clock.timestamp, at("2024-03-05T10:00:01Z"));
}

#[test]
fn message_sent_at_overrides_batch_sent_at() {
    let out = batch(
        r#"{"batch":[
            {"type":"track","event":"like","userId":"u","timestamp":"2024-03-05T09:00:00Z"},
            {"type":"track","event":"like","userId":"u","timestamp":"2024-03-05T09:00:00Z","sentAt":"2024-03-05T09:00:00Z"}
        ],"sentAt":"2024-03-05T09:30:00Z"}"#,
    );
    assert_eq!(out.events[0].1.timestamp, at("2024-03-05T09:30:02Z"));
    assert_eq!(out.events[1].1.timestamp, received());
}

#[test]
fn batch_context_is_merged_under_message_context() {
    let out = batch(
        r#"{"batch":[
            {"type":"track","event":"like","userId":"u"},
            {"type":"track","event":"like","userId":"u","context":{"ip":"10.0.0.1","library":{"name":"own"}}}
        ],"context":{"library":{"name":"analytics-java","version":"3.5.1"},"app":{"name":"pos"}}}"#,
    );
    let ctx = |i: usize| -> serde_json::Value {
        serde_json::from_str(out.events[i].1.context.as_ref().unwrap().get()).unwrap()
    };
    assert_eq!(ctx(0)["library"]["name"], "analytics-java");
    assert_eq!(ctx(1)["library"]["name"], "own");
    assert_eq!(ctx(1)["app"]["name"], "pos");
    assert_eq!(ctx(1)["ip"], "10.0.0.1");
    assert_eq!(out.events[0].1.channel, Channel::App, "the batch context's app counts");
}

#[test]
fn message_ids_are_kept_or_derived_stably() {
    let e = single(CallKind::Track, r#"{"userId":"u","event":"like","messageId":12345}"#).unwrap();
    assert_eq!(e.message_id, "12345");
    // A retry re-stamps sentAt (and the key order may change); the derived id must not.
    let a = single(
        CallKind::Track,
        r#"{"userId":"u","event":"like","timestamp":"2024-03-05T09:00:00Z","sentAt":"2024-03-05T09:00:01Z"}"#,
    )
    .unwrap();
    let b = single(
        CallKind::Track,
        r#"{"sentAt":"2024-03-05T09:05:00Z","event":"like","userId":"u","timestamp":"2024-03-05T09:00:00Z"}"#,
    )
    .unwrap();
    assert!(a.message_id.starts_with("h-"));
    assert_eq!(a.message_id, b.message_id);
    // A batch item with `type` and the same single call agree.
    let in_batch =
        batch(r#"{"batch":[{"type":"track","userId":"u","event":"like","timestamp":"2024-03-05T09:00:00Z"}]}"#);
    assert_eq!(in_batch.events[0].1.message_id, a.message_id);
    // Same body, different call: different facts.
    let page = single(CallKind::Page, r#"{"anonymousId":"a","name":"Home"}"#).unwrap();
    let screen = single(CallKind::Screen, r#"{"anonymousId":"a","name":"Home"}"#).unwrap();
    assert_ne!(page.message_id, screen.message_id);
    let other =
        single(CallKind::Track, r#"{"userId":"u","event":"share","timestamp":"2024-03-05T09:00:00Z"}"#).unwrap();
    assert_ne!(other.message_id, a.message_id);
    let blank = single(CallKind::Track, r#"{"userId":"u","event":"like","messageId":"  "}"#).unwrap();
    assert!(blank.message_id.starts_with("h-"));
    let long = format!(r#"{{"userId":"u","event":"like","messageId":"{}"}}"#, "m".repeat(201));
    assert_eq!(single_err(CallKind::Track, &long), ("invalid_field", "messageId".into()));
}

#[test]
fn track_event_names() {
    let kind = |name: &str| single(CallKind::Track, &format!(r#"{{"userId":"u","event":{name}}}"#)).map(|e| e.kind);
    assert_eq!(kind(r#""Store Visit""#).unwrap(), EventKind::Custom("store_visit".into()));
    assert_eq!(kind(r#""follow""#).unwrap(), EventKind::Known(EventType::Follow));
    assert_eq!(kind(r#""Coupon Applied""#).unwrap(), EventKind::Known(EventType::CouponRedeemed));
    assert_eq!(kind(r#""加入购物车""#).unwrap_err().code, codes::INVALID_EVENT_NAME);
    assert_eq!(kind(r#""identify""#).unwrap_err().code, codes::INVALID_EVENT_NAME);
    assert_eq!(kind(r#""  ""#).unwrap_err().code, codes::MISSING_FIELD);
    assert_eq!(kind(r#"{"n":1}"#).unwrap_err().field, "event");
    assert_eq!(single_err(CallKind::Track, r#"{"userId":"u"}"#), ("missing_field", "event".into()));
    // The tenant's table is honoured.
    let mut mapping = Mapping::default();
    mapping.event_names.insert("加入购物车".into(), "add_to_cart".into());
    let e = parse_single(
        CallKind::Track,
        r#"{"userId":"u","event":"加入购物车"}"#.as_bytes(),
        received(),
        &mapping,
        &SegmentLimits::default(),
        TimeLimits::default(),
    )
    .unwrap();
    assert_eq!(e.kind, EventKind::Custom("add_to_cart".into()));
}

#[test]
fn fan_group_events_through_track_need_their_group() {
    let e =
        single(CallKind::Track, r#"{"userId":"u","event":"group_join","properties":{"group_id":"wg-001"}}"#).unwrap();
    assert_eq!(e.kind, EventKind::Known(EventType::GroupJoin));
    assert_eq!(e.group_id.as_deref(), Some("wg-001"));
    assert_eq!(
        single_err(CallKind::Track, r#"{"userId":"u","event":"group_leave","properties":{}}"#),
        ("missing_field", "properties.group_id".into())
    );
}

#[test]
fn snake_case_field_aliases_are_tolerated() {
    let e = single(
        CallKind::Track,
        r#"{"user_id":"u9","anonymous_id":"a9","message_id":"m9","event":"like","timestamp":"2024-03-05T09:00:00Z","sent_at":"2024-03-05T09:00:00Z"}"#,
    )
    .unwrap();
    assert_eq!(identity(&e, IdentityKind::UserId), Some("u9"));
    assert_eq!(identity(&e, IdentityKind::AnonymousId), Some("a9"));
    assert_eq!(e.message_id, "m9");
    assert_eq!(e.timestamp, received());
}

#[test]
fn single_call_ignores_the_body_type() {
    let e = single(CallKind::Page, r#"{"type":"track","event":"Order Completed","anonymousId":"a"}"#).unwrap();
    assert_eq!(e.kind, EventKind::Known(EventType::View));
}

#[test]
fn write_keys_from_bodies() {
    let out = batch(r#"{"batch":[{"type":"track","event":"like","userId":"u","writeKey":"wk3"}]}"#);
    assert_eq!(out.write_key.as_deref(), Some("wk3"));
    assert_eq!(out.events.len(), 1);
    assert_eq!(write_key_from_body(br#"{"writeKey":" wk1 ","userId":"u"}"#).as_deref(), Some("wk1"));
    assert_eq!(write_key_from_body(br#"{"batch":[{"writeKey":"wk2"}]}"#).as_deref(), Some("wk2"));
    assert_eq!(write_key_from_body(br#"{"writeKey":"top","batch":[{"writeKey":"item"}]}"#).as_deref(), Some("top"));
    for body in [&br#"{"writeKey":""}"#[..], br#"{"writeKey":5}"#, br#"{"batch":[]}"#, b"nope", br#"{"userId":"u"}"#] {
        assert_eq!(write_key_from_body(body), None, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn endpoints_from_paths() {
    let cases = [
        ("/v1/identify", Some(Endpoint::Call(CallKind::Identify))),
        ("/v1/t", Some(Endpoint::Call(CallKind::Track))),
        ("/v1/p/", Some(Endpoint::Call(CallKind::Page))),
        ("v1/screen", Some(Endpoint::Call(CallKind::Screen))),
        ("/v1/g", Some(Endpoint::Call(CallKind::Group))),
        ("/v1/ALIAS", Some(Endpoint::Call(CallKind::Alias))),
        ("/v1/i?x=1", Some(Endpoint::Call(CallKind::Identify))),
        ("/v1/batch", Some(Endpoint::Batch)),
        ("/v1/b", Some(Endpoint::Batch)),
        ("/v1/import", Some(Endpoint::Batch)),
        ("track", Some(Endpoint::Call(CallKind::Track))),
        ("/v2/track", None),
        ("/v1/trace", None),
        ("/v1/x", None),
        ("", None),
    ];
    for (path, expected) in cases {
        assert_eq!(Endpoint::from_path(path), expected, "{path}");
    }
    for kind in CallKind::ALL {
        assert_eq!(CallKind::parse(kind.as_str()), Some(kind));
        assert_eq!(CallKind::parse(&kind.as_str().to_uppercase()), Some(kind));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!(CallKind::parse("t"), None, "the one-letter forms are for paths only");
}

#[test]
fn errors_convert_both_ways_and_display() {
    let model = EventError::new("timestamp_too_old", "timestamp", "too old");
    let seg = SegmentError::from(model.clone());
    assert_eq!((seg.code, seg.field.as_str(), seg.message.as_str()), ("timestamp_too_old", "timestamp", "too old"));
    assert_eq!(EventError::from(seg.clone()), model);
    assert_eq!(seg.to_string(), "timestamp: too old");
    assert_eq!(seg.under("batch[2]").field, "batch[2].timestamp");
}
