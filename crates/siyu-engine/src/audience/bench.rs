//! A segment evaluation benchmark (issue 3 §5), callable from an example or `siyu bench`:
//! builds a synthetic tenant in memory and times full evaluations and incremental refreshes.
//! Correctness is gated elsewhere (tests/segments.rs holds the evaluator to the reference).

use std::time::Instant;

use siyu_model::event::EventKind;
use siyu_model::time::DAY;
use siyu_model::{Channel, Event, EventType, Fen, Identity, Millis, TenantId, TenantSettings};
use siyu_store::SegmentRecord;

use super::Segment;
use crate::state::TenantState;

/// What the benchmark measured.
#[derive(Debug, Clone)]
pub struct SegmentBenchReport {
    pub profiles: usize,
    pub events: usize,
    pub build_seconds: f64,
    /// Full evaluation of `tier >= warm_fan and reachable`, milliseconds, and its size.
    pub fields_ms: f64,
    pub fields_size: u64,
    /// Full evaluation of a 5-clause segment with event windows, milliseconds, and its size.
    pub windows_ms: f64,
    pub windows_size: u64,
    /// CPU per ingested event keeping 50 segments current (apply + refresh), microseconds.
    pub per_event_us: f64,
    /// The same without segments, microseconds (the difference is the segments' cost).
    pub per_event_bare_us: f64,
}

const TYPES: [EventType; 6] = [
    EventType::View,
    EventType::Like,
    EventType::Follow,
    EventType::LiveWatch,
    EventType::MessageOut,
    EventType::OrderPaid,
];

fn event(i: u64, person: u64, now: Millis) -> Event {
    // A cheap deterministic mix (splitmix64).
    let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let kind = TYPES[(x % TYPES.len() as u64) as usize];
    let ts = Millis(now.0 - ((x >> 8) % (400 * DAY as u64)) as i64);
    Event {
        message_id: String::new(),
        kind: EventKind::Known(kind),
        channel: if x & 1 == 0 { Channel::Douyin } else { Channel::Wecom },
        account: "main".into(),
        identities: vec![Identity { kind: siyu_model::IdentityKind::UserId, value: format!("u{person}") }],
        timestamp: ts,
        received_at: ts,
        amount: (kind == EventType::OrderPaid).then_some(Fen(((x >> 20) % 50_000) as i64)),
        currency: None,
        source: None,
        group_id: None,
        properties: None,
        traits: None,
        context: None,
    }
}

fn segment(id: i64, text: &str, state: &TenantState) -> Segment {
    let record = SegmentRecord {
        id,
        name: format!("s{id}"),
        condition: text.into(),
        created_at: Millis(0),
        updated_at: Millis(0),
    };
    let condition = siyu_model::condition::compile(text, &state.schema()).map_err(|e| format!("{e:?}"));
    assert!(condition.is_ok(), "{text}: {condition:?}");
    Segment::new(state, record, condition)
}

/// Runs the benchmark over `profiles` synthetic profiles with `events_per_profile` events each.
pub fn run_segment_bench(profiles: usize, events_per_profile: usize) -> SegmentBenchReport {
    let now = Millis::now();
    let started = Instant::now();
    let mut state = TenantState::new(TenantId(1), TenantSettings::default());
    let mut seq = 0;
    for person in 0..profiles as u64 {
        for k in 0..events_per_profile as u64 {
            seq += 1;
            state.apply(seq, &event(person * 1000 + k, person, now));
        }
    }
    let build_seconds = started.elapsed().as_secs_f64();
    let fields = "tier >= warm_fan and reachable";
    let windows = "count(live_watch, 30d) >= 1 and sum(order_paid, 365d) > 100 and last(message_out) before 30d ago \
                   and channel = wecom and count(like, 90d) >= 1";
    state.audience.segments.push(segment(1, fields, &state));
    state.audience.segments.push(segment(2, windows, &state));
    let timed = |state: &mut TenantState, id: i64| {
        let started = Instant::now();
        state.evaluate_segment(id, now, None);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        (ms, state.audience.segment(id).expect("installed").members.size())
    };
    // The first evaluation computes the RFM means; time the second.
    timed(&mut state, 1);
    let (fields_ms, fields_size) = timed(&mut state, 1);
    let (windows_ms, windows_size) = timed(&mut state, 2);

    // Incremental: 50 segments of mixed kinds, then events for random existing profiles.
    let bare = incremental(&mut state, profiles, now, seq);
    seq += 20_000;
    let mix =
        [fields, windows, "count(order_paid, 90d) >= 2", "reachable and not tagged(\"x\")", "last(like) within 7d"];
    state.audience.set_tags(vec![siyu_store::TagRecord {
        id: 1,
        name: "x".into(),
        group_id: None,
        condition: None,
        created_at: Millis(0),
    }]);
    state.audience.segments.clear();
    for i in 0..50 {
        state.audience.segments.push(segment(i + 1, mix[i as usize % mix.len()], &state));
    }
    for i in 0..50 {
        state.evaluate_segment(i + 1, now, None);
    }
    state.audience.tracking = true;
    let with_segments = incremental(&mut state, profiles, now, seq);
    SegmentBenchReport {
        profiles,
        events: profiles * events_per_profile,
        build_seconds,
        fields_ms,
        fields_size,
        windows_ms,
        windows_size,
        per_event_us: with_segments,
        per_event_bare_us: bare,
    }
}

/// Microseconds per event to apply 20 000 events one by one, refreshing after each.
fn incremental(state: &mut TenantState, profiles: usize, now: Millis, mut seq: i64) -> f64 {
    let n = 20_000u64;
    let events: Vec<Event> = (0..n).map(|i| event(7_777_777 + i, (i * 7919) % profiles as u64, now)).collect();
    let started = Instant::now();
    for e in &events {
        seq += 1;
        state.apply(seq, e);
        state.refresh_audience(now);
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

#[doc(hidden)]
pub fn build_for_experiment(profiles: usize, events_per_profile: usize) -> (TenantState, Millis) {
    let now = Millis::now();
    let mut state = TenantState::new(TenantId(1), TenantSettings::default());
    let mut seq = 0;
    for person in 0..profiles as u64 {
        for k in 0..events_per_profile as u64 {
            seq += 1;
            state.apply(seq, &event(person * 1000 + k, person, now));
        }
    }
    (state, now)
}
