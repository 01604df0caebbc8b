//! The simulated streams are valid native events, deterministic, and look like a merchant.

use std::collections::{HashMap, HashSet};

use siyu_model::event::{NativeEvent, TimeLimits};
use siyu_model::{Industry, Millis};
use siyu_sim::{
    generate_bench_dataset, simulate, write_ndjson, write_ndjson_with_stats, SimConfig, SimStats, BENCH_END,
};

fn end() -> Millis {
    Millis::parse_rfc3339("2026-11-23T08:30:00Z").unwrap()
}

fn config(industry: Industry, seed: u64, audience: u32) -> SimConfig {
    SimConfig { audience, ..SimConfig::new(industry, seed, end()) }
}

fn lines(config: &SimConfig) -> (String, SimStats) {
    let mut out = Vec::new();
    let stats = write_ndjson_with_stats(config, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), stats)
}

#[test]
fn same_config_same_bytes() {
    let c = config(Industry::ConsumerGoods, 7, 3_000);
    let (a, _) = lines(&c);
    let (b, _) = lines(&c);
    assert!(a.len() > 10_000);
    assert_eq!(a, b);
    let (other, _) = lines(&SimConfig { seed: 8, ..c.clone() });
    assert_ne!(a, other);
    // The iterator and the writer agree.
    let via_iter: String = simulate(&c).map(|e| e.to_json() + "\n").collect();
    assert_eq!(a, via_iter);
    let mut sink = Vec::new();
    assert_eq!(write_ndjson(&c, &mut sink).unwrap(), a.lines().count() as u64);
}

#[test]
fn labels_keep_tenants_apart_and_are_escaped() {
    let c = SimConfig { tenant_label: "商户 \"A\"\\1".into(), ..config(Industry::LocalLife, 1, 500) };
    let first = simulate(&c).next().unwrap();
    assert!(first.message_id().starts_with("商户 \"A\"\\1-"));
    let line = first.to_json();
    let native: NativeEvent = serde_json::from_str(&line).unwrap();
    assert_eq!(native.message_id.unwrap(), first.message_id());
}

#[derive(Default)]
struct Check {
    orders: HashMap<String, (i64, String, usize)>,
    refunds: usize,
    invitees: HashSet<String>,
    user_ids: HashSet<String>,
    phone_kinds: HashMap<String, HashSet<String>>,
    multi: usize,
    out_of_order: usize,
    ids_seen: HashMap<String, String>,
    duplicates: usize,
    custom: usize,
    accounts: HashSet<(String, String)>,
}

fn check_stream(industry: Industry, audience: u32) -> SimStats {
    let c = config(industry, 42, audience);
    let (text, stats) = lines(&c);
    let start = Millis(c.end.0 - i64::from(c.days) * 86_400_000);
    let mut ck = Check::default();
    let mut last_ts = 0i64;
    for line in text.lines() {
        let native: NativeEvent = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let event =
            native.into_event(c.end, TimeLimits::default(), line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(event.timestamp <= c.end && event.timestamp >= start, "{line}");
        if event.timestamp.0 < last_ts {
            ck.out_of_order += 1;
        }
        last_ts = last_ts.max(event.timestamp.0);
        if let Some(previous) = ck.ids_seen.insert(event.message_id.clone(), line.to_string()) {
            assert_eq!(previous, line, "a duplicate is a byte-identical re-send");
            ck.duplicates += 1;
            continue;
        }
        ck.accounts.insert((event.channel.to_string(), event.account.clone()));
        let props: serde_json::Value =
            event.properties.as_ref().map(|p| serde_json::from_str(p.get()).unwrap()).unwrap_or_default();
        let name = event.kind.as_str().to_string();
        if event.identities.len() >= 2 {
            ck.multi += 1;
        }
        let phone = event.identities.iter().find(|i| i.kind.as_str() == "phone").map(|i| i.value.clone());
        for id in &event.identities {
            match id.kind.as_str() {
                "user_id" => {
                    ck.user_ids.insert(id.value.clone());
                }
                "phone" => {}
                kind => {
                    if let Some(phone) = &phone {
                        ck.phone_kinds.entry(phone.clone()).or_default().insert(kind.to_string());
                    }
                }
            }
        }
        match name.as_str() {
            "group_join" | "group_leave" => assert!(event.group_id.is_some(), "{line}"),
            "order_paid" => {
                let order_id = props["order_id"].as_str().expect("order_id").to_string();
                assert!(props["sku"].is_string(), "{line}");
                assert!(event.amount.unwrap().0 > 0);
                ck.orders.insert(order_id, (event.amount.unwrap().0, event.account.clone(), 0));
            }
            "order_refunded" => {
                let order_id = props["order_id"].as_str().expect("order_id");
                let order = ck.orders.get_mut(order_id).unwrap_or_else(|| panic!("refund of an unseen order: {line}"));
                assert_eq!(order.0, event.amount.unwrap().0, "refund = order amount");
                assert_eq!(order.1, event.account);
                order.2 += 1;
                assert_eq!(order.2, 1, "refunded once");
                ck.refunds += 1;
            }
            "referral" => {
                ck.invitees.insert(props["invitee"].as_str().expect("invitee").to_string());
            }
            "live_gift" => assert!(event.amount.is_some()),
            "live_watch" => assert_eq!(event.source.as_ref().unwrap().kind, "live"),
            "store_visit" => {
                assert_eq!(event.channel, siyu_model::Channel::Offline);
                ck.custom += 1;
            }
            _ => {}
        }
    }
    let n = text.lines().count() as u64;
    assert_eq!(n, stats.events);
    eprintln!("{industry:?}: {n} lines, {}", serde_json::to_string(&stats).unwrap());
    eprintln!(
        "  accounts {:?}\n  follow {:.2}% of people, wecom/followers {:.1}%, buyers {:.2}% of people, repurchase {:.1}%, refunds {:.1}% of orders, AOV {:.0} yuan, merges: {} phones on ≥2 channel ids",
        ck.accounts,
        100.0 * stats.followers as f64 / stats.people as f64,
        100.0 * stats.wecom_contacts as f64 / stats.followers.max(1) as f64,
        100.0 * stats.buyers as f64 / stats.people as f64,
        100.0 * stats.repurchase_rate(),
        100.0 * stats.refunds as f64 / stats.orders.max(1) as f64,
        stats.revenue_fen as f64 / 100.0 / stats.orders.max(1) as f64,
        ck.phone_kinds.values().filter(|k| k.len() >= 2).count(),
    );
    assert!(ck.multi > 0 && stats.multi_identity_events as usize == ck.multi);
    assert!(ck.phone_kinds.values().any(|k| k.len() >= 2), "some phone links two channel identities");
    assert!(ck.refunds > 0);
    assert!(!ck.invitees.is_empty());
    let seen_invitees = ck.invitees.iter().filter(|i| ck.user_ids.contains(*i)).count();
    assert!(seen_invitees * 10 >= ck.invitees.len() * 8, "invitees show up as people");
    assert!(ck.duplicates > 0 && ck.duplicates as u64 == stats.duplicates);
    assert!(ck.out_of_order > 0, "some events arrive late");
    assert!((ck.out_of_order as f64) < 0.03 * n as f64, "mostly in time order: {}", ck.out_of_order);
    assert!(ck.accounts.len() >= 7, "a matrix of accounts: {:?}", ck.accounts);
    if industry == Industry::LocalLife {
        assert!(ck.custom > 0, "store visits");
    }
    // Broad believability.
    let follow_share = stats.followers as f64 / stats.people as f64;
    assert!((0.01..0.15).contains(&follow_share), "followers {follow_share}");
    let wecom_share = stats.wecom_contacts as f64 / stats.followers as f64;
    assert!((0.05..0.6).contains(&wecom_share), "wecom/followers {wecom_share}");
    let refund_share = stats.refunds as f64 / stats.orders as f64;
    assert!((0.02..0.25).contains(&refund_share), "refunds {refund_share}");
    for t in [
        "exposure",
        "view",
        "follow",
        "wecom_add",
        "message_in",
        "message_out",
        "group_join",
        "live_watch",
        "order_paid",
        "coupon_claimed",
        "referral",
        "unfollow",
    ] {
        assert!(stats.count(t) > 0, "{industry:?} has no {t}");
    }
    assert!(stats.count("exposure") > stats.count("view") && stats.count("view") > stats.count("follow"));
    stats
}

#[test]
fn consumer_goods_stream() {
    let s = check_stream(Industry::ConsumerGoods, 40_000);
    assert!((0.15..0.5).contains(&s.repurchase_rate()), "repurchase {}", s.repurchase_rate());
    let aov = s.revenue_fen / s.orders as i64;
    assert!((6_000..30_000).contains(&aov), "average order {aov} fen");
}

#[test]
fn heavy_decision_stream() {
    let s = check_stream(Industry::HeavyDecision, 40_000);
    assert!(s.count("lead_submit") > s.orders / 2, "leads carry the funnel");
    assert!(s.revenue_fen / s.orders as i64 > 100_000, "big tickets");
}

#[test]
fn culture_entertainment_stream() {
    let s = check_stream(Industry::CultureEntertainment, 40_000);
    assert!(s.count("live_gift") > s.orders / 2, "gifts are common");
    assert!(s.gifts_fen > 0);
}

#[test]
fn local_life_stream() {
    let s = check_stream(Industry::LocalLife, 40_000);
    assert!(s.count("store_visit") > 0 && s.count("coupon_redeemed") > 0);
}

#[test]
fn empty_and_tiny_configs() {
    let c = SimConfig { audience: 0, ..config(Industry::ConsumerGoods, 1, 0) };
    assert_eq!(simulate(&c).count(), 0);
    let c = SimConfig { days: 0, ..config(Industry::ConsumerGoods, 1, 100) };
    assert!(simulate(&c).all(|e| e.timestamp() == end() || e.timestamp().0 <= end().0));
    let c = SimConfig { days: 1, audience: 5, ..config(Industry::HeavyDecision, 1, 5) };
    let stats = lines(&c).1;
    assert!(stats.people >= 5 || stats.people > 0);
}

#[test]
fn bench_dataset_is_exact_and_valid() {
    let mut out = Vec::new();
    generate_bench_dataset(50_000, 5_000, 3, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 50_000);
    let mut people = HashSet::new();
    let mut multi = 0;
    let mut orders = HashSet::new();
    let mut types = HashSet::new();
    for line in text.lines() {
        let native: NativeEvent = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let e = native
            .into_event(BENCH_END, TimeLimits::default(), line.as_bytes())
            .unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(e.timestamp <= BENCH_END);
        if e.identities.len() >= 2 {
            multi += 1;
        }
        people.insert(e.identities[0].value.clone());
        let props: serde_json::Value =
            e.properties.as_ref().map(|p| serde_json::from_str(p.get()).unwrap()).unwrap_or_default();
        match e.kind.as_str() {
            "order_paid" => {
                orders.insert(props["order_id"].as_str().unwrap().to_string());
            }
            "order_refunded" => assert!(orders.contains(props["order_id"].as_str().unwrap()), "{line}"),
            _ => {}
        }
        types.insert(e.kind.as_str().to_string());
    }
    assert!(multi > 1_000, "{multi}");
    assert!(types.len() >= 20);
    assert!(people.len() > 4_000);
    let mut again = Vec::new();
    generate_bench_dataset(50_000, 5_000, 3, &mut again).unwrap();
    assert_eq!(text.as_bytes(), &again[..]);
    assert_eq!(BENCH_END, Millis::parse_rfc3339("2026-11-12T00:00:00+08:00").unwrap());
}

/// Prints generation speed; meaningful with `--release -- --nocapture`. No timing assertion.
#[test]
fn generation_speed() {
    let release = !cfg!(debug_assertions);
    let audience = if release { 1_000_000 } else { 20_000 };
    let c = config(Industry::ConsumerGoods, 9, audience);
    let t = std::time::Instant::now();
    let mut sink = CountingSink(0);
    let stats = write_ndjson_with_stats(&c, &mut sink).unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "simulate: {} events / {} people / {} MB in {secs:.2}s = {:.2} M events/s",
        stats.events,
        stats.people,
        sink.0 >> 20,
        stats.events as f64 / secs / 1e6
    );
    let n = if release { 10_000_000 } else { 200_000 };
    let people = n as u32 / 10;
    let t = std::time::Instant::now();
    let mut sink = CountingSink(0);
    generate_bench_dataset(n, people, 1, &mut sink).unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "bench dataset: {n} events / {people} people / {} MB in {secs:.2}s = {:.2} M events/s",
        sink.0 >> 20,
        n as f64 / secs / 1e6
    );
}

struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
