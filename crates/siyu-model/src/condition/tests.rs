//! Tests of the condition language: parsing and its errors, the canonical printer, the checker and
//! its errors, the reference evaluator, and properties (round trip, boolean algebra).

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::json;

use super::ast::*;
use super::lexer::is_keyword;
use super::*;
use crate::channel::Channel;
use crate::money::Fen;
use crate::score::{FanTier, Ownership, PoolStage, RfmGroup};
use crate::time::{Millis, DAY};

const ISSUE_EXAMPLE: &str = "tier = true_fan and rfm in (重要价值, 重要保持) and count(order_paid, 365d) >= 2 \
                             and not tagged(\"已流失\") and last(message_out) before 30d ago";

fn schema() -> Schema {
    Schema {
        custom_event_types: ["shop.visit".to_string(), "store_checkin".to_string()].into(),
        tags: ["已流失".to_string(), "高意向".to_string()].into(),
        trait_keys: None,
        identity_kinds: ["member_no".to_string()].into(),
    }
}

fn ok(text: &str) -> Condition {
    compile(text, &schema()).unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

/// The first error of `text`, rendered.
fn first_error(text: &str) -> String {
    match compile(text, &schema()) {
        Ok(c) => panic!("{text} compiled to {c:?}"),
        Err(errors) => errors[0].to_string(),
    }
}

fn canonical(text: &str) -> String {
    parse(text).unwrap_or_else(|e| panic!("{text}: {e}")).to_string()
}

// ---------------------------------------------------------------- parsing and printing

#[test]
fn the_issue_example_parses_checks_and_prints_unchanged() {
    assert_eq!(canonical(ISSUE_EXAMPLE), ISSUE_EXAMPLE);
    let condition = ok(ISSUE_EXAMPLE);
    let Condition::And(parts) = &condition else { panic!("{condition:?}") };
    assert_eq!(parts.len(), 5);
    assert_eq!(
        parts[0],
        Condition::Compare {
            operand: Operand::Field(ProfileField::Tier),
            op: CmpOp::Eq,
            value: Scalar::Tier(FanTier::TrueFan)
        }
    );
    assert_eq!(
        parts[1],
        Condition::In {
            operand: Operand::Field(ProfileField::Rfm),
            values: vec![Scalar::Rfm(RfmGroup::ImportantValue), Scalar::Rfm(RfmGroup::ImportantKeep)],
        }
    );
    assert_eq!(parts[3], Condition::Not(Box::new(Condition::Tagged("已流失".into()))));
    let deps = condition.dependencies();
    assert_eq!(deps.fields, [ProfileField::Tier, ProfileField::Rfm].into());
    assert_eq!(deps.event_types, ["message_out".to_string(), "order_paid".to_string()].into());
    assert_eq!(condition.references_tags(), ["已流失".to_string()].into());
    assert!(condition.is_time_dependent());
    assert!(deps.tenant_wide, "rfm is graded against every buyer");
}

#[test]
fn canonical_form_normalises_spelling() {
    let cases = [
        ("tier = true_fan AND (reachable OR ownership >= L2)", "tier = true_fan and (reachable or ownership >= L2)"),
        ("((tier == 真爱粉))", "tier = 真爱粉"),
        ("tier <> none", "tier != none"),
        ("rfm in （重要价值，重要保持）", "rfm in (重要价值, 重要保持)"),
        ("tagged(“高意向”)", "tagged(\"高意向\")"),
        ("tagged(高意向)", "tagged(\"高意向\")"),
        ("count(order_paid,30天)>=2", "count(order_paid, 30d) >= 2"),
        ("last(message_out) before 2周 ago", "last(message_out) before 2w ago"),
        ("# who bought twice\ncount(order_paid, 1年) >= 2 # in a year\n", "count(order_paid, 1y) >= 2"),
        ("not(reachable)", "not reachable"),
        ("not not reachable", "not not reachable"),
        ("a = 1 and (b = 2 and c = 3)", "a = 1 and (b = 2 and c = 3)"),
        ("(a = 1 or b = 2) and c = 3", "(a = 1 or b = 2) and c = 3"),
        ("not (a = 1 and b = 2)", "not (a = 1 and b = 2)"),
        ("traits.\"vip level\" >= 3.50", "traits.\"vip level\" >= 3.5"),
        ("traits.address.city = \"上海\"", "traits.address.city = \"上海\""),
        ("count(\"shop.visit\", all) > 0", "count(shop.visit, all) > 0"),
        ("first_seen after 2026-11-01T00:00:00+08:00", "first_seen after 2026-11-01"),
        ("first_seen after 2026-11-01T02:15:00Z", "first_seen after 2026-11-01T10:15:00+08:00"),
        ("first_seen after 2026-11-01T10:15:00.5+08:00", "first_seen after 2026-11-01T10:15:00.500+08:00"),
        ("traits.note = \"a\\\"b\\\\c\\n\\u{1}\"", "traits.note = \"a\\\"b\\\\c\\n\\u{1}\""),
        ("x not in (1, -2.5, \"三\", true)", "x not in (1, -2.5, \"三\", true)"),
    ];
    for (text, expected) in cases {
        assert_eq!(canonical(text), expected, "{text}");
        assert_eq!(canonical(expected), expected, "canonical form of {text} is not a fixed point");
    }
}

#[test]
fn precedence_is_not_then_and_then_or() {
    let expr = parse("a = 1 or b = 2 and not c = 3").unwrap();
    let ExprKind::Or(alternatives) = &expr.kind else { panic!("{expr:?}") };
    assert!(matches!(alternatives[0].kind, ExprKind::Predicate(..)));
    let ExprKind::And(conjuncts) = &alternatives[1].kind else { panic!("{expr:?}") };
    assert!(matches!(conjuncts[1].kind, ExprKind::Not(_)));
    // `not` takes the whole comparison, not just the term.
    let ExprKind::Not(inner) = &conjuncts[1].kind else { unreachable!() };
    assert!(matches!(&inner.kind, ExprKind::Predicate(_, Some(_))));
}

#[test]
fn spans_point_at_the_text_counting_characters() {
    let expr = parse("traits.city = \"上海\" and\n  tier = 真爱粉").unwrap();
    let ExprKind::And(items) = &expr.kind else { panic!() };
    let ExprKind::Predicate(term, Some(test)) = &items[1].kind else { panic!() };
    assert_eq!((term.span.start.line, term.span.start.column), (2, 3));
    let TestKind::Compare(_, value) = &test.kind else { panic!() };
    assert_eq!((value.span.start.line, value.span.start.column, value.span.end.column), (2, 10, 13));
    let ExprKind::Predicate(_, Some(first)) = &items[0].kind else { panic!() };
    let TestKind::Compare(_, shanghai) = &first.kind else { panic!() };
    assert_eq!((shanghai.span.start.column, shanghai.span.end.column), (15, 19));
}

#[test]
fn syntax_errors_say_where_and_what_was_expected() {
    let cases = [
        ("tier = ", "line 1, column 8: expected a value after \"=\", found end of input"),
        (
            "(tier = true_fan and reachable",
            "line 1, column 31: expected \")\" after \"reachable\" to close the \"(\" at line 1, column 1, found end of input",
        ),
        ("tier = true_fan)", "line 1, column 16: unbalanced \")\": there is no \"(\" to close"),
        (
            "tier true_fan",
            "line 1, column 6: expected an operator (=, !=, <, <=, >, >=, in, not in, contains, before, after, within) \
             after \"tier\", found \"true_fan\"",
        ),
        (
            "tier = true_fan\nand rfm in (重要价值,\n  重要保持",
            "line 3, column 7: expected \",\" or \")\" after \"重要保持\" to close the list opened at line 2, column 12, \
             found end of input",
        ),
        ("tagged(\"已流失", "line 1, column 8: unterminated string: no closing \""),
        ("tagged(\"已流失\nor x", "line 1, column 8: unterminated string: no closing \" on this line"),
        (
            "count(order_paid, 30m) > 1",
            "line 1, column 21: unknown unit \"m\" after 30: use h, d, w, mo or y; \"m\" could mean minutes or months, \
             write \"mo\" for months (30 days)",
        ),
        ("count(order_paid, 30q) > 1", "line 1, column 21: unknown unit \"q\" after 30: use h, d, w, mo or y"),
        ("count(order_paid, 1.5d) > 1", "line 1, column 19: a duration is a whole, positive number of units, e.g. 30d or 12h"),
        (
            "count(order_paid, soon) > 1",
            "line 1, column 19: expected a window (e.g. 30d, 12h, 1y, or all) after \",\", found \"soon\"",
        ),
        ("count(, 30d) > 1", "line 1, column 7: expected an event type, e.g. order_paid after \"(\", found \",\""),
        ("last(message_out) before 30d", "line 1, column 29: expected \"ago\" (e.g. 30d ago) after \"30d\", found end of input"),
        (
            "last(message_out) before yesterday",
            "line 1, column 26: expected a time: a date like 2026-11-01 or a duration like 30d ago after \"before\", found \"yesterday\"",
        ),
        ("first_seen after 2026-02-30", "line 1, column 18: 2026-02-30 is not a date"),
        (
            "traits.x = 2026-11-01",
            "line 1, column 12: expected a value (dates go after \"before\" or \"after\") after \"=\", found the date 2026-11-01",
        ),
        ("tier = 'x'", "line 1, column 8: unexpected \"'\"; strings use double quotes: \"高意向\""),
        ("tier ! true_fan", "line 1, column 6: unexpected \"!\"; write \"!=\" for not equal or \"not\" to negate"),
        ("tier = true_fan and", "line 1, column 20: expected a condition (a field, traits.…, count(…), tagged(…), has(…), \"not\" or \"(\") after \"and\", found end of input"),
        ("", "line 1, column 1: expected a condition (a field, traits.…, count(…), tagged(…), has(…), \"not\" or \"(\"), found end of input"),
        ("rfm in 重要价值", "line 1, column 8: expected \"(\" and a list of values after \"in\", found \"重要价值\""),
        ("tier = true_fan or or reachable", "line 1, column 20: expected a condition (a field, traits.…, count(…), tagged(…), has(…), \"not\" or \"(\") after \"or\", found \"or\""),
        ("tier = true_fan reachable", "line 1, column 17: expected \"and\", \"or\" or the end of the condition after \"true_fan\", found \"reachable\""),
        ("traits. = 1", "line 1, column 9: expected a key name after \".\", found \"=\""),
    ];
    for (text, expected) in cases {
        let error = parse(text).expect_err(text);
        assert_eq!(error.code, ErrorCode::Syntax);
        assert_eq!(error.to_string(), expected, "{text}");
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let text = format!("{}reachable{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse(&text).unwrap_err().message.contains("nests deeper than 64 levels"));
    let nots = format!("{}reachable", "not ".repeat(10_000));
    assert!(parse(&nots).is_err());
    let fine = format!("{}reachable{}", "(".repeat(60), ")".repeat(60));
    assert_eq!(canonical(&fine), "reachable");
}

#[test]
fn dates_default_to_china_standard_time() {
    let at = |text: &str| match ok(text) {
        Condition::Time { test: TimeTest::After(TimeRef::At(t)), .. } => t,
        other => panic!("{other:?}"),
    };
    let midnight_cst = Millis::parse_rfc3339("2026-10-31T16:00:00Z").unwrap();
    assert_eq!(at("first_seen after 2026-11-01"), midnight_cst);
    assert_eq!(at("first_seen after 2026-11-01T00:00+08:00"), midnight_cst);
    assert_eq!(at("first_seen after 2026-10-31T16:00:00Z"), midnight_cst);
    assert_eq!(at("first_seen after 2026-11-01T10:15:30"), Millis::parse_rfc3339("2026-11-01T02:15:30Z").unwrap());
}

// ---------------------------------------------------------------- checking

#[test]
fn check_errors_name_the_problem_and_its_place() {
    let cases = [
        ("tire = true_fan", "line 1, column 1: unknown field \"tire\" (did you mean \"tier\"?)"),
        ("pool_stag = main_base", "line 1, column 1: unknown field \"pool_stag\" (did you mean \"pool_stage\"?)"),
        ("city = \"上海\"", "line 1, column 1: unknown field \"city\"; profile attributes are written traits.<key>, e.g. traits.city"),
        ("count(order_payed, 30d) > 1", "line 1, column 7: unknown event type \"order_payed\" (did you mean \"order_paid\"?)"),
        ("count(shop.vist, 30d) > 1", "line 1, column 7: unknown event type \"shop.vist\" (did you mean \"shop.visit\"?)"),
        ("tagged(\"高意象\")", "line 1, column 8: unknown tag \"高意象\" (did you mean \"高意向\"?)"),
        ("tagged(\"vip\")", "line 1, column 8: unknown tag \"vip\""),
        ("has(phnoe)", "line 1, column 5: unknown identity kind \"phnoe\" (did you mean \"phone\"?)"),
        ("count(order_paid, 0d) > 1", "line 1, column 19: 0d is an empty window; use at least 1h"),
        ("count(order_paid, 11y) > 1", "line 1, column 19: 11y is longer than the longest window, 10 years (3650d)"),
        ("count(order_paid, 3651d) > 1", "line 1, column 19: 3651d is longer than the longest window, 10 years (3650d)"),
        ("last(order_paid) before 0h ago", "line 1, column 25: 0h is an empty window; use at least 1h"),
        ("last(order_paid) within 522w", "line 1, column 25: 522w is longer than the longest window, 10 years (3650d)"),
        (
            "tier = 3",
            "line 1, column 8: tier is a fan tier, found the number 3; expected one of none, passerby, warm_fan, true_fan \
             (or 未分层, 路人粉, 好感粉, 真爱粉)",
        ),
        (
            "tier = gold",
            "line 1, column 8: \"gold\" is not a fan tier; expected one of none, passerby, warm_fan, true_fan \
             (or 未分层, 路人粉, 好感粉, 真爱粉)",
        ),
        (
            "pool_stage = main_bas",
            "line 1, column 14: \"main_bas\" is not a pool stage (did you mean \"main_base\"?); expected one of public, \
             incentive, reservoir, main_base (or 公域流量池, 私域激励池, 私域蓄水池, 私域主阵地)",
        ),
        ("count(order_paid, 30d) = \"x\"", "line 1, column 26: count(order_paid, 30d) is a number, found text \"x\""),
        ("paid_orders before 30d ago", "line 1, column 13: \"before\" compares times, but paid_orders is a number"),
        ("tier within 7d", "line 1, column 6: \"within\" compares times, but tier is a fan tier"),
        ("rfm > 重要价值", "line 1, column 5: rfm is an RFM group, which has no order; use =, != or in"),
        ("channel >= douyin", "line 1, column 9: channel is a channel, which has no order; use =, != or in"),
        ("reachable = 1", "line 1, column 13: reachable is true or false, found the number 1"),
        ("traits.vip > true", "line 1, column 14: true and false have no order; use = or != with traits.vip"),
        ("tier", "line 1, column 1: tier is a fan tier, not a condition; compare it with a value"),
        ("last(message_out)", "line 1, column 1: last(message_out) is a time, not a condition; compare it with before, after or within, e.g. last(order_paid) within 30d"),
        ("last(message_out) > 3", "line 1, column 19: last(message_out) is a time; compare it with before, after or within, e.g. last(order_paid) within 30d"),
        ("first_seen = 2", "line 1, column 12: first_seen is a time; compare it with before, after or within, e.g. last(order_paid) within 30d"),
        ("net_revenue > 99.999", "line 1, column 15: 99.999 has more than two decimals; amounts are in yuan, to the fen"),
        ("traits.city = 上海", "line 1, column 15: write text in double quotes: \"上海\" (bare words are only for tiers, channels and the like)"),
        ("tier contains \"fan\"", "line 1, column 6: \"contains\" works on traits and properties, but tier is a fan tier"),
        ("traits.tags contains 3", "line 1, column 22: \"contains\" looks for text, found the number 3"),
        ("channel = myspace", "line 1, column 11: \"myspace\" is not a channel; expected one of douyin, kuaishou, wecom, wechat_mp, mini_program, taobao, jd, youzan, offline, web, app, other"),
        ("account = \"brand-main\"", "line 1, column 11: \"brand-main\" is not an account: write \"channel/name\", e.g. \"douyin/brand-main\""),
        ("count(order_paid) > 1", "line 1, column 1: count(…) needs a window: count(order_paid, 30d), or count(order_paid, all) for the whole history"),
        ("last(order_paid, 30d) within 7d", "line 1, column 18: last(…) takes no window; compare its time instead, e.g. last(order_paid) within 30d"),
        ("properties.sku = \"A1\"", "line 1, column 1: properties belong to events; filter events with where, e.g. count(order_paid where properties.sku = \"A1\", 90d)"),
        ("count(order_paid where tier = true_fan, 30d) > 0", "line 1, column 24: tier is a profile field; inside a where filter use the event's channel, account, amount or properties.…"),
        ("count(order_paid where traits.city = \"上海\", 30d) > 0", "line 1, column 24: traits belong to the profile; inside a where filter use the event's properties.…"),
        ("count(order_paid where tagged(\"高意向\"), 30d) > 0", "line 1, column 24: tagged(…) is about the profile and cannot be used inside a where filter"),
        ("count(order_paid where count(view, 1d) > 1, 30d) > 0", "line 1, column 24: count(…) cannot be used inside a where filter"),
        ("count(order_paid where amout > 1, 30d) > 0", "line 1, column 24: unknown event field \"amout\" (did you mean \"amount\"?); events have channel, account, amount and properties.…"),
        ("amount > 100", "line 1, column 1: unknown field \"amount\"; amount belongs to events: use sum(order_paid, 30d), or amount inside a where filter"),
    ];
    for (text, expected) in cases {
        assert_eq!(first_error(text), expected, "{text}");
    }
}

#[test]
fn every_check_error_is_reported_in_text_order() {
    let errors = compile("tire = 3 or count(order_payed, 0d) > \"x\" or tagged(\"nope\")", &schema()).unwrap_err();
    let rendered: Vec<(u32, ErrorCode)> = errors.iter().map(|e| (e.span.start.column, e.code)).collect();
    assert_eq!(
        rendered,
        [
            (1, ErrorCode::UnknownField),
            (19, ErrorCode::UnknownEventType),
            (32, ErrorCode::BadWindow),
            (52, ErrorCode::UnknownTag),
        ]
    );
    assert_eq!(ErrorCode::UnknownTag.as_str(), "unknown_tag");
}

#[test]
fn the_schema_decides_custom_names() {
    ok("count(store_checkin, 30d) >= 1 and has(member_no) and has(wechat_unionid)");
    assert_eq!(first_error("has(vip_card)"), "line 1, column 5: unknown identity kind \"vip_card\"");
    let strict = Schema { trait_keys: Some(["city".to_string(), "vip_level".to_string()].into()), ..schema() };
    assert!(compile("traits.city = \"上海\" and traits.vip_level >= 3", &strict).is_ok());
    let error = |text: &str| compile(text, &strict).unwrap_err()[0].to_string();
    assert_eq!(error("traits.cty = \"上海\""), "line 1, column 1: unknown trait \"cty\" (did you mean \"city\"?)");
    assert_eq!(error("city = \"上海\""), "line 1, column 1: unknown field \"city\" (did you mean \"traits.city\"?)");
    // Without a list of keys, traits are free-form.
    ok("traits.anything.nested = 1");
}

#[test]
fn literals_resolve_by_code_or_chinese_label() {
    let value = |text: &str| match ok(text) {
        Condition::Compare { value, .. } => value,
        other => panic!("{other:?}"),
    };
    assert_eq!(value("tier = 真爱粉"), Scalar::Tier(FanTier::TrueFan));
    assert_eq!(value("tier = \"true_fan\""), Scalar::Tier(FanTier::TrueFan));
    assert_eq!(value("pool_stage = 私域主阵地"), Scalar::PoolStage(PoolStage::MainBase));
    assert_eq!(value("ownership >= L3"), Scalar::Ownership(Ownership::L3));
    assert_eq!(value("ownership = 已拥有"), Scalar::Ownership(Ownership::L3));
    assert_eq!(value("channel = 抖音"), Scalar::Channel(Channel::Douyin));
    assert_eq!(
        value("account = \"wecom/导购-01\""),
        Scalar::Account { channel: Channel::Wecom, name: "导购-01".into() }
    );
    assert_eq!(value("net_revenue >= 199.9"), Scalar::Money(Fen(19990)));
    assert_eq!(value("sum(order_paid, 30d) > 0.1"), Scalar::Money(Fen(10)));
    assert_eq!(value("traits.vip"), Scalar::Bool(true));
    assert_eq!(ok("tier not in (none, 路人粉)"), Condition::Not(Box::new(ok("tier in (none, passerby)"))));
}

#[test]
fn dependencies_tell_the_engine_what_can_change_a_condition() {
    let deps = ok("count(order_paid where properties.sku = \"A1\", 90d) >= 1 and traits.address.city = \"上海\" \
                   and has(phone) and (tagged(\"高意向\") or last(shop.visit) after 2026-01-01)")
    .dependencies();
    assert_eq!(deps.event_types, ["order_paid".to_string(), "shop.visit".to_string()].into());
    assert_eq!(deps.traits, ["address".to_string()].into());
    assert_eq!(deps.identity_kinds, ["phone".to_string()].into());
    assert_eq!(deps.tags, ["高意向".to_string()].into());
    assert!(deps.fields.is_empty());
    assert!(deps.time_dependent, "a 90d window slides");
    assert!(!deps.tenant_wide);

    let timeless = [
        "count(order_paid, all) >= 2",
        "paid_orders >= 2 and reachable and channel = douyin",
        "first(order_paid) before 2026-11-11 and last_seen after 2026-01-01",
        "tagged(\"高意向\") and not has(phone)",
    ];
    for text in timeless {
        assert!(!ok(text).is_time_dependent(), "{text}");
    }
    let timely = [
        "count(order_paid, 30d) > 0",
        "tier = true_fan",
        "affinity > 10",
        "last_seen within 7d",
        "first_seen before 1y ago",
    ];
    for text in timely {
        assert!(ok(text).is_time_dependent(), "{text}");
    }
}

// ---------------------------------------------------------------- evaluation

fn t() -> Millis {
    Millis::parse_rfc3339("2026-11-15T00:00:00Z").unwrap()
}

fn days_ago(days: i64) -> Millis {
    Millis(t().0 - days * DAY)
}

fn event(event_type: &str, ago_days: i64) -> PlainEventWithProps {
    PlainEventWithProps {
        event_type: event_type.into(),
        ts: days_ago(ago_days),
        amount: None,
        channel: Channel::Douyin,
        account: "brand-main".into(),
        properties: json!({}),
    }
}

fn order(ago_days: i64, fen: i64, sku: &str) -> PlainEventWithProps {
    PlainEventWithProps { amount: Some(Fen(fen)), properties: json!({ "sku": sku }), ..event("order_paid", ago_days) }
}

fn true_fan() -> ProfileSnapshot {
    ProfileSnapshot {
        tier: FanTier::TrueFan,
        pool_stage: PoolStage::MainBase,
        ownership: Ownership::L3,
        rfm: Some(RfmGroup::ImportantValue),
        reachable: true,
        affinity: 52.5,
        net_revenue: Fen(39800),
        paid_orders: 2,
        net_paid_orders: 2,
        orders_365d: 2,
        event_count: 5,
        first_seen: Some(days_ago(200)),
        last_seen: Some(days_ago(3)),
        channels: [Channel::Douyin, Channel::Wecom].into(),
        accounts: [(Channel::Douyin, "brand-main".to_string()), (Channel::Wecom, "导购-01".to_string())].into(),
        tags: ["高意向".to_string()].into(),
        identity_kinds: ["phone".to_string(), "douyin_open_id".to_string()].into(),
        traits: json!({ "city": "上海", "vip_level": 3, "labels": ["vip", "宝妈"], "address": { "city": "上海" } })
            .as_object()
            .cloned()
            .unwrap(),
        ..ProfileSnapshot::default()
    }
}

fn history() -> Vec<PlainEventWithProps> {
    vec![
        order(200, 19900, "A1"),
        order(20, 19900, "B2"),
        event("message_out", 40),
        PlainEventWithProps { channel: Channel::Wecom, account: "导购-01".into(), ..event("message_in", 3) },
        event("live_watch", 6),
        // After `t`: never counts.
        order(-1, 100_000, "A1"),
        event("message_out", -2),
    ]
}

fn eval(text: &str, profile: &ProfileSnapshot, events: &[PlainEventWithProps]) -> bool {
    evaluate(&ok(text), profile, events, t())
}

#[test]
fn the_issue_example_selects_the_quiet_true_fan() {
    let fan = true_fan();
    assert!(eval(ISSUE_EXAMPLE, &fan, &history()));
    let mut churned = fan.clone();
    churned.tags.insert("已流失".into());
    assert!(!eval(ISSUE_EXAMPLE, &churned, &history()));
    let mut messaged = history();
    messaged.push(event("message_out", 10));
    assert!(!eval(ISSUE_EXAMPLE, &fan, &messaged));
    let never_messaged: Vec<_> = history().into_iter().filter(|e| e.event_type != "message_out").collect();
    assert!(!eval(ISSUE_EXAMPLE, &fan, &never_messaged), "a missing time compares false");
    assert!(eval("not last(message_out) within 30d", &fan, &never_messaged));
    let non_buyer = ProfileSnapshot { rfm: None, ..fan };
    assert!(!eval(ISSUE_EXAMPLE, &non_buyer, &history()));
}

#[test]
fn evaluation_follows_the_documented_meaning() {
    let fan = true_fan();
    let events = history();
    let cases = [
        // Profile fields, ordered enums, labels.
        ("tier = 真爱粉", true),
        ("tier >= warm_fan and ownership > L2 and pool_stage = main_base", true),
        ("ownership < L3", false),
        ("rfm != 重要价值", false),
        ("reachable", true),
        ("not reachable", false),
        ("affinity > 52.49 and affinity <= 52.5", true),
        ("net_revenue = 398", true),
        ("net_revenue > 398.00", false),
        ("paid_orders = 2 and net_paid_orders >= 2 and orders_365d = 2 and refunded_orders = 0", true),
        ("event_count < 5", false),
        // Sets: channels and accounts.
        ("channel = douyin and channel = 企业微信", true),
        ("channel = taobao", false),
        ("channel != taobao", true),
        ("channel in (taobao, jd, wecom)", true),
        ("channel not in (taobao, jd)", true),
        ("account = \"wecom/导购-01\"", true),
        ("account = \"douyin/导购-01\"", false),
        // Tags and identities.
        ("tagged(\"高意向\")", true),
        ("tagged(\"已流失\")", false),
        ("has(phone) and not has(wechat_unionid)", true),
        // Traits: missing values compare false, and != is exactly not =.
        ("traits.city = \"上海\"", true),
        ("traits.city in (\"北京\", \"上海\")", true),
        ("traits.vip_level >= 3 and traits.vip_level < 3.5", true),
        ("traits.vip_level = \"3\"", false),
        ("traits.address.city = \"上海\"", true),
        ("traits.labels contains \"宝妈\"", true),
        ("traits.labels contains \"宝\"", false),
        ("traits.city contains \"上\"", true),
        ("traits.missing = 1", false),
        ("traits.missing != 1", true),
        ("traits.missing < 1 or traits.missing >= 1", false),
        ("traits.city > \"A\"", true),
        ("traits.vip", false),
        // Aggregates: windows are inclusive, events after t never count.
        ("count(order_paid, all) = 2", true),
        ("count(order_paid, 20d) = 1", true),
        ("count(order_paid, 19d) = 0", true),
        ("count(order_paid, 365d) >= 2", true),
        ("sum(order_paid, all) = 398", true),
        ("sum(order_paid, 30d) = 199", true),
        ("sum(message_out, all) = 0", true),
        ("count(message_out, all) = 1", true),
        ("count(order_paid where properties.sku = \"A1\", all) = 1", true),
        ("count(order_paid where properties.sku in (\"A1\", \"B2\") and amount >= 199, 365d) = 2", true),
        ("count(order_paid where amount > 198.99, all) = 2 and count(order_paid where amount > 199, all) = 0", true),
        ("count(message_in where channel = wecom and account = \"wecom/导购-01\", 7d) = 1", true),
        ("count(message_in where channel = douyin, 7d) = 0", true),
        ("count(order_paid where properties.missing != \"x\", all) = 2", true),
        ("count(live_watch, 1w) = 1 and count(live_watch, 144h) = 1 and count(live_watch, 143h) = 0", true),
        // Times: before/after are strict, within is inclusive.
        ("last(order_paid) within 20d", true),
        ("last(order_paid) within 19d", false),
        ("last(order_paid) after 20d ago", false),
        ("last(order_paid) after 21d ago", true),
        ("first(order_paid) before 199d ago", true),
        ("first(order_paid where properties.sku = \"B2\") before 21d ago", false),
        ("last(order_paid) before 2026-11-01", true),
        ("first_seen before 6mo ago and last_seen within 3d", true),
        ("first_seen after 2026-01-01 and last_seen after 2026-11-12", true),
        ("last(lead_submit) before 2030-01-01", false),
        ("not last(lead_submit) within 10y", true),
    ];
    for (text, expected) in cases {
        assert_eq!(eval(text, &fan, &events), expected, "{text}");
    }
}

#[test]
fn a_profile_with_nothing_matches_only_negations() {
    let nobody = ProfileSnapshot::default();
    assert!(!eval(ISSUE_EXAMPLE, &nobody, &[]));
    assert!(eval("count(order_paid, all) = 0 and sum(order_paid, 1y) = 0 and tier = none", &nobody, &[]));
    assert!(!eval("rfm in (重要价值, 一般挽留)", &nobody, &[]));
    assert!(eval("rfm not in (重要价值, 一般挽留)", &nobody, &[]));
    assert!(!eval("first_seen before 2030-01-01 or last_seen after 2000-01-01", &nobody, &[]));
}

// ---------------------------------------------------------------- properties

fn word() -> impl Strategy<Value = String> {
    let chosen =
        prop::sample::select(vec!["tier", "true_fan", "真爱粉", "L3", "重要价值", "douyin", "vip_level", "_x1"]);
    prop_oneof![chosen.prop_map(String::from), "[a-z_][a-z0-9_]{0,6}".prop_filter("a keyword", |w| !is_keyword(w))]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<i32>().prop_map(f64::from),
        (any::<i32>(), 0..4i32).prop_map(|(n, d)| f64::from(n) / 10f64.powi(d)),
        any::<f64>().prop_filter("finite", |n| n.is_finite()),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        number().prop_map(ValueKind::Number),
        any::<String>().prop_map(ValueKind::Text),
        any::<bool>().prop_map(ValueKind::Bool),
        word().prop_map(ValueKind::Word),
    ]
    .prop_map(|kind| Value { kind, span: Span::default() })
}

fn duration() -> impl Strategy<Value = Duration> {
    (any::<u32>(), prop::sample::select(Unit::ALL.to_vec())).prop_map(|(amount, unit)| Duration { amount, unit })
}

fn time_point() -> impl Strategy<Value = TimePoint> {
    prop_oneof![
        duration().prop_map(TimePointKind::Ago),
        // 2000-01-01 .. 2100-01-01, to the millisecond.
        (946_684_800_000i64..4_102_444_800_000i64).prop_map(|ms| TimePointKind::At(Millis(ms))),
        (10_957i64..47_482i64).prop_map(|day| TimePointKind::At(Millis(day * DAY - 8 * 3_600_000))),
    ]
    .prop_map(|kind| TimePoint { kind, span: Span::default() })
}

fn test_kind() -> impl Strategy<Value = TestKind> {
    let op = prop::sample::select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge]);
    prop_oneof![
        (op, value()).prop_map(|(op, v)| TestKind::Compare(op, v)),
        prop::collection::vec(value(), 1..4).prop_map(TestKind::In),
        prop::collection::vec(value(), 1..4).prop_map(TestKind::NotIn),
        value().prop_map(TestKind::Contains),
        time_point().prop_map(TestKind::Before),
        time_point().prop_map(TestKind::After),
        duration().prop_map(|duration| TestKind::Within(DurationLit { duration, span: Span::default() })),
    ]
}

fn name(text: impl Strategy<Value = String>) -> impl Strategy<Value = Name> {
    text.prop_map(|text| Name { text, span: Span::default() })
}

fn event_name() -> impl Strategy<Value = String> {
    prop_oneof![prop::sample::select(vec!["order_paid", "shop.visit", "a.b.c"]).prop_map(String::from), any::<String>(),]
}

fn window() -> impl Strategy<Value = Option<WindowLit>> {
    prop::option::of(prop_oneof![Just(Window::All), duration().prop_map(Window::Last)])
        .prop_map(|w| w.map(|window| WindowLit { window, span: Span::default() }))
}

fn aggregate(filter: impl Strategy<Value = Option<Box<Expr>>>) -> impl Strategy<Value = TermKind> {
    (prop::sample::select(AggFunc::ALL.to_vec()), name(event_name()), filter, window())
        .prop_map(|(func, event, filter, window)| TermKind::Aggregate(ast::Aggregate { func, event, filter, window }))
}

fn term(filter: impl Strategy<Value = Option<Box<Expr>>>) -> impl Strategy<Value = Term> {
    let root = prop::sample::select(vec![PathRoot::Traits, PathRoot::Properties]);
    prop_oneof![
        word().prop_map(TermKind::Field),
        (root, prop::collection::vec(any::<String>(), 1..3)).prop_map(|(root, keys)| TermKind::Path(root, keys)),
        aggregate(filter),
    ]
    .prop_map(|kind| Term { kind, span: Span::default() })
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        4 => (term(Just(None)), prop::option::of(test_kind())).prop_map(|(term, test)| {
            ExprKind::Predicate(term, test.map(|kind| Test { kind, span: Span::default() }))
        }),
        1 => name(any::<String>()).prop_map(ExprKind::Tagged),
        1 => name(prop_oneof![word(), any::<String>()]).prop_map(ExprKind::Has),
    ]
    .prop_map(|kind| Expr { kind, span: Span::default() });
    leaf.prop_recursive(5, 48, 4, |inner| {
        let filtered = term(prop::option::of(inner.clone().prop_map(Box::new)));
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(ExprKind::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(ExprKind::Or),
            inner.prop_map(|e| ExprKind::Not(Box::new(e))),
            (filtered, prop::option::of(test_kind())).prop_map(|(term, test)| {
                ExprKind::Predicate(term, test.map(|kind| Test { kind, span: Span::default() }))
            }),
        ]
        .prop_map(|kind| Expr { kind, span: Span::default() })
    })
}

/// Conditions that check against `schema()`, to combine into random trees.
const ATOMS: &[&str] = &[
    "tier = true_fan",
    "tier >= warm_fan",
    "pool_stage = 私域主阵地",
    "ownership >= L2",
    "rfm in (重要价值, 重要保持)",
    "rfm != 一般挽留",
    "reachable",
    "affinity > 20",
    "net_revenue >= 199.9",
    "paid_orders >= 2",
    "net_paid_orders = 0",
    "event_count < 5",
    "first_seen after 2026-06-01",
    "last_seen within 30d",
    "channel = douyin",
    "account = \"wecom/shop\"",
    "tagged(\"高意向\")",
    "has(phone)",
    "traits.city = \"上海\"",
    "traits.city != \"北京\"",
    "traits.vip_level >= 3",
    "traits.labels contains \"vip\"",
    "count(order_paid, 365d) >= 2",
    "count(live_watch where channel = douyin, 7d) >= 1",
    "sum(order_paid, 90d) > 100",
    "count(order_paid where properties.sku = \"A1\", 90d) >= 1",
    "count(order_paid where amount >= 50 and account = \"douyin/brand-main\", all) > 0",
    "last(message_out) before 30d ago",
    "first(order_paid) after 2026-01-01",
    "last(order_paid where properties.sku in (\"A1\", \"B2\")) within 60d",
    "count(shop.visit, 2w) = 0",
];

fn condition() -> impl Strategy<Value = Condition> {
    let atoms: Vec<Condition> = ATOMS.iter().map(|text| ok(text)).collect();
    prop::sample::select(atoms).prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Condition::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Condition::Or),
            inner.prop_map(|c| Condition::Not(Box::new(c))),
        ]
    })
}

fn snapshot() -> impl Strategy<Value = ProfileSnapshot> {
    let enums = (
        prop::sample::select(FanTier::ALL.to_vec()),
        prop::sample::select(PoolStage::ALL.to_vec()),
        prop::sample::select(Ownership::ALL.to_vec()),
        prop::option::of(prop::sample::select(RfmGroup::ALL.to_vec())),
        any::<bool>(),
    );
    let numbers = (0.0..80.0f64, 0..100_000i64, 0..4u32, 0..8u32, prop::option::of(0..400i64));
    let sets = (
        prop::sample::subsequence(vec![Channel::Douyin, Channel::Wecom, Channel::Taobao], 0..=3),
        prop::sample::subsequence(vec!["高意向", "已流失"], 0..=2),
        prop::sample::subsequence(vec!["phone", "wechat_unionid"], 0..=2),
        prop::option::of(prop::sample::select(vec!["上海", "北京"])),
        prop::option::of(prop_oneof![(0..6i64).prop_map(|n| json!(n)), Just(json!("3"))]),
        any::<bool>(),
    );
    (enums, numbers, sets).prop_map(|(enums, numbers, sets)| {
        let (tier, pool_stage, ownership, rfm, reachable) = enums;
        let (affinity, fen, paid, count, first) = numbers;
        let (channels, tags, kinds, city, vip, labels) = sets;
        let mut traits = serde_json::Map::new();
        if let Some(city) = city {
            traits.insert("city".into(), json!(city));
        }
        if let Some(vip) = vip {
            traits.insert("vip_level".into(), vip);
        }
        if labels {
            traits.insert("labels".into(), json!(["vip"]));
        }
        ProfileSnapshot {
            tier,
            pool_stage,
            ownership,
            rfm,
            reachable,
            affinity,
            net_revenue: Fen(fen),
            paid_orders: paid,
            net_paid_orders: paid.saturating_sub(1),
            event_count: count,
            first_seen: first.map(days_ago),
            last_seen: first.map(|d| days_ago(d / 2)),
            accounts: channels.iter().map(|c| (*c, "shop".to_string())).collect(),
            channels: channels.into_iter().collect(),
            tags: tags.into_iter().map(String::from).collect(),
            identity_kinds: kinds.into_iter().map(String::from).collect(),
            traits,
            ..ProfileSnapshot::default()
        }
    })
}

fn events() -> impl Strategy<Value = Vec<PlainEventWithProps>> {
    let one = (
        prop::sample::select(vec!["order_paid", "order_refunded", "message_out", "live_watch", "shop.visit"]),
        -10..400i64,
        prop::option::of(0..50_000i64),
        prop::sample::select(vec![Channel::Douyin, Channel::Wecom]),
        prop::sample::select(vec!["brand-main", "shop"]),
        prop::option::of(prop::sample::select(vec!["A1", "B2"])),
    )
        .prop_map(|(event_type, ago, amount, channel, account, sku)| PlainEventWithProps {
            event_type: event_type.into(),
            ts: days_ago(ago),
            amount: amount.map(Fen),
            channel,
            account: account.into(),
            properties: sku.map_or(json!({}), |sku| json!({ "sku": sku })),
        });
    prop::collection::vec(one, 0..12)
}

proptest! {
    #[test]
    fn printing_then_parsing_gives_back_the_tree(expr in expr()) {
        let text = expr.to_string();
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(parsed.without_spans(), expr, "{}", text);
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn evaluation_obeys_boolean_algebra(
        a in condition(),
        b in condition(),
        profile in snapshot(),
        events in events(),
    ) {
        let eval = |c: &Condition| evaluate(c, &profile, &events, t());
        let not = |c: &Condition| Condition::Not(Box::new(c.clone()));
        prop_assert_eq!(eval(&not(&not(&a))), eval(&a));
        prop_assert_eq!(eval(&not(&a)), !eval(&a));
        prop_assert_eq!(
            eval(&not(&Condition::And(vec![a.clone(), b.clone()]))),
            eval(&Condition::Or(vec![not(&a), not(&b)]))
        );
        prop_assert_eq!(
            eval(&not(&Condition::Or(vec![a.clone(), b.clone()]))),
            eval(&Condition::And(vec![not(&a), not(&b)]))
        );
        prop_assert_eq!(eval(&Condition::And(vec![a.clone(), b.clone()])), eval(&a) && eval(&b));
        prop_assert_eq!(eval(&Condition::Or(vec![a.clone(), b.clone()])), eval(&a) || eval(&b));
    }

    #[test]
    fn negated_operators_are_exact_complements(
        profile in snapshot(),
        events in events(),
        pair in prop::sample::select(vec![
            ("tier", "true_fan"),
            ("rfm", "重要价值"),
            ("channel", "wecom"),
            ("account", "\"douyin/shop\""),
            ("traits.city", "\"上海\""),
            ("traits.vip_level", "3"),
            ("count(order_paid where properties.sku != \"A1\", 30d)", "1"),
            ("sum(order_paid, all)", "100"),
        ]),
    ) {
        let (term, value) = pair;
        let eval = |text: &str| evaluate(&ok(text), &profile, &events, t());
        prop_assert_eq!(eval(&format!("{term} != {value}")), !eval(&format!("{term} = {value}")));
        prop_assert_eq!(eval(&format!("{term} not in ({value})")), !eval(&format!("{term} in ({value})")));
        prop_assert_eq!(eval(&format!("not {term} = {value}")), eval(&format!("{term} != {value}")));
    }
}

#[test]
fn events_in_any_order_give_the_same_answer() {
    let fan = true_fan();
    let mut events = history();
    let forward: Vec<bool> = ATOMS.iter().map(|text| eval(text, &fan, &events)).collect();
    events.reverse();
    let backward: Vec<bool> = ATOMS.iter().map(|text| eval(text, &fan, &events)).collect();
    assert_eq!(forward, backward);
}

#[test]
fn atoms_all_check() {
    let set: BTreeSet<&str> = ATOMS.iter().copied().collect();
    assert_eq!(set.len(), ATOMS.len());
    for text in ATOMS {
        assert_eq!(canonical(text), *text);
    }
}

#[test]
fn the_documented_errors_are_the_real_ones() {
    let doc = include_str!("../../../../docs/conditions.md");
    let section = doc.split("## Errors").nth(1).expect("docs/conditions.md has an Errors section");
    let mut rows = 0;
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        // `| `text` | `message` |`: the code spans are the odd pieces between backticks.
        let cells: Vec<&str> = line.split('`').collect();
        let (text, expected) = (cells[1], cells[3]);
        let actual = match parse(text) {
            Err(e) => e.to_string(),
            Ok(expr) => check(&expr, &schema()).expect_err(text)[0].to_string(),
        };
        assert_eq!(actual, expected, "docs/conditions.md row for {text}");
        rows += 1;
    }
    assert!(rows >= 20, "found only {rows} rows");
    assert_eq!(
        canonical("tier = 真爱粉 AND count(order_paid, 30天)>=2"),
        "tier = 真爱粉 and count(order_paid, 30d) >= 2"
    );
    ok(ISSUE_EXAMPLE.replace(" and not", "\nand not").as_str());
}
