//! siyu needs believable merchants to demo, test and benchmark against without touching real
//! customer data: this crate simulates one merchant's private-domain event stream (SPEC §3 native
//! events), deterministically from a seed.
//!
//! The simulated merchant runs a matrix of channel accounts (矩阵号: two Douyin accounts, Kuaishou,
//! a WeCom corp app and a sales app, an official account, a mini-program and industry-specific
//! stores). People arrive from the public domain (exposures from videos and live streams), some
//! view, like, comment and share, some follow, join fan groups, get added on WeCom, chat 1v1, watch
//! lives and tip, claim coupons, buy (industry-specific products and prices), refund, invite
//! friends (裂变), and some leave again. Identities are those the channels really give (Douyin and
//! Kuaishou open ids, WeChat openid/unionid, WeCom external user id, marketplace buyer ids,
//! anonymous web ids), and phones (in the formats people type) and member ids are disclosed on
//! orders, leads and registrations, so identity resolution has real merges to do.
//!
//! Time follows Asia/Shanghai habits: evening peaks, busier weekends, live-stream evenings, and the
//! 618 / 双11 / 双12 festivals when inside the window. About 0.5 % of events arrive late and 0.2 %
//! are re-sent duplicates (same `message_id`), as real senders do.
//!
//! Nothing here does I/O except writing to the writer the caller passes. The stream is generated
//! lazily with memory proportional to the people reached (≈ 14 bytes each, plus 16 per person
//! with a future visit); the same [`SimConfig`] always gives byte-identical output.

mod bench;
mod calendar;
mod event;
mod json;
mod profile;
mod sim;

use std::io::Write;

use serde::Serialize;
use siyu_model::{Industry, Millis};

pub use bench::{generate_bench_dataset, BENCH_END};
pub use event::SimEvent;
pub use profile::accounts;
pub use sim::Simulator;

use event::{KIND_COUNT, KIND_NAMES};

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    pub industry: Industry,
    pub seed: u64,
    /// Length of the simulated period, in days, ending at `end`.
    pub days: u32,
    /// The end of the period (usually now); no event is later than this.
    pub end: Millis,
    /// Distinct people reached in the public domain over the period (invitees come on top).
    pub audience: u32,
    /// Prefix of every `message_id`, so two tenants' streams never collide (cut to 64 bytes).
    pub tenant_label: String,
}

impl SimConfig {
    /// A 90-day merchant reaching 20 000 people, labelled after its industry.
    pub fn new(industry: Industry, seed: u64, end: Millis) -> SimConfig {
        SimConfig { industry, seed, days: 90, end, audience: 20_000, tenant_label: industry.as_str().to_string() }
    }
}

/// What a simulated stream contained (duplicates are counted in `events` and `duplicates` only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Lines emitted, duplicates included.
    pub events: u64,
    pub duplicates: u64,
    /// Events emitted after later-timestamped ones (late arrivals).
    pub late: u64,
    /// Distinct people with at least one event.
    pub people: u64,
    /// … of whom came through a referral.
    pub invited: u64,
    /// People who followed at least one account.
    pub followers: u64,
    /// People added on WeCom at least once.
    pub wecom_contacts: u64,
    pub buyers: u64,
    /// Buyers with at least two orders.
    pub repeat_buyers: u64,
    pub orders: u64,
    pub refunds: u64,
    pub revenue_fen: i64,
    pub refunded_fen: i64,
    pub gifts_fen: i64,
    /// Events carrying two or more identities (what makes profiles merge).
    pub multi_identity_events: u64,
    #[serde(serialize_with = "serialize_type_counts")]
    type_counts: [u64; KIND_COUNT],
}

fn serialize_type_counts<S: serde::Serializer>(counts: &[u64; KIND_COUNT], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    for (name, n) in KIND_NAMES.iter().zip(counts) {
        if *n > 0 {
            map.serialize_entry(name, n)?;
        }
    }
    map.end()
}

impl SimStats {
    /// Events of one type (duplicates excluded).
    pub fn count(&self, event_type: &str) -> u64 {
        KIND_NAMES.iter().position(|n| *n == event_type).map_or(0, |i| self.type_counts[i])
    }

    /// `(type, count)` for every type emitted at least once.
    pub fn by_type(&self) -> Vec<(&'static str, u64)> {
        KIND_NAMES.iter().zip(self.type_counts).filter(|(_, n)| *n > 0).map(|(name, n)| (*name, n)).collect()
    }

    /// Buyers with ≥ 2 orders / buyers.
    pub fn repurchase_rate(&self) -> f64 {
        if self.buyers == 0 {
            0.0
        } else {
            self.repeat_buyers as f64 / self.buyers as f64
        }
    }
}

/// The event stream of a simulated merchant.
pub fn simulate(config: &SimConfig) -> Simulator {
    Simulator::new(config)
}

/// Writes the whole stream as NDJSON (one event a line). Returns the number of lines.
pub fn write_ndjson(config: &SimConfig, out: impl Write) -> std::io::Result<u64> {
    write_ndjson_with_stats(config, out).map(|s| s.events)
}

/// Writes the whole stream as NDJSON and returns what it contained.
pub fn write_ndjson_with_stats(config: &SimConfig, mut out: impl Write) -> std::io::Result<SimStats> {
    let mut sim = simulate(config);
    let mut buf = Vec::with_capacity(1 << 18);
    while sim.write_next(&mut buf) {
        buf.push(b'\n');
        if buf.len() >= (1 << 18) - 1024 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok(sim.stats().clone())
}

/// Runs the simulation to the end without keeping the output and returns its statistics.
pub fn simulate_stats(config: &SimConfig) -> SimStats {
    let mut sim = simulate(config);
    let mut buf = Vec::with_capacity(512);
    while sim.write_next(&mut buf) {
        buf.clear();
    }
    sim.stats().clone()
}
