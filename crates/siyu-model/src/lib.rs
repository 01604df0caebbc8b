//! siyu's vocabulary: the types every other crate speaks, and the pure score formulas of SPEC §4.
//!
//! Nothing here does I/O, so everything here can be tested, fuzzed and reused by the engine, the
//! store, the server and the reference evaluator alike.

pub mod channel;
pub mod condition;
pub mod event;
pub mod event_type;
pub mod identity;
pub mod journey;
pub mod money;
pub mod naive;
pub mod reach;
pub mod score;
pub mod settings;
pub mod time;

pub use channel::Channel;
pub use event::{Event, EventError, Source};
pub use event_type::EventType;
pub use identity::{Identity, IdentityError, IdentityKind};
pub use money::Fen;
pub use score::{
    Fact, FanTier, Ownership, PoolStage, ProfileFacts, ProfileScores, ProfileSummary, RfmGroup, RfmInput, ScanRow,
    ScoreConfig, ScoringRules,
};
pub use settings::{CannotLink, TenantSettings};
pub use time::Millis;

/// A tenant (经营者). Every row, every query and every in-memory map is keyed by it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub i64);

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A position in a tenant's event log: dense, starting at 1, assigned at append time.
pub type Seq = i64;

/// A profile's public id, dense per tenant and assigned in log order, so the oldest profile of a
/// merge is always the one with the smaller id.
pub type ProfileId = u32;

/// The industries of the peer benchmark (SPEC §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Industry {
    /// 重决策商品: cars, home improvement, education — long decisions, 1v1 guidance.
    HeavyDecision,
    /// 文化娱乐: creators, live entertainment, courses.
    CultureEntertainment,
    /// 消费品: cosmetics, food, apparel — repeat purchase.
    ConsumerGoods,
    /// 本地生活: restaurants, salons, gyms — store visits.
    LocalLife,
}

impl Industry {
    pub const ALL: [Industry; 4] =
        [Industry::HeavyDecision, Industry::CultureEntertainment, Industry::ConsumerGoods, Industry::LocalLife];

    pub fn as_str(self) -> &'static str {
        match self {
            Industry::HeavyDecision => "heavy_decision",
            Industry::CultureEntertainment => "culture_entertainment",
            Industry::ConsumerGoods => "consumer_goods",
            Industry::LocalLife => "local_life",
        }
    }

    pub fn label_zh(self) -> &'static str {
        match self {
            Industry::HeavyDecision => "重决策商品",
            Industry::CultureEntertainment => "文化娱乐",
            Industry::ConsumerGoods => "消费品",
            Industry::LocalLife => "本地生活",
        }
    }
}

impl std::str::FromStr for Industry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Industry::ALL
            .into_iter()
            .find(|i| i.as_str() == s || i.label_zh() == s)
            .ok_or_else(|| {
                format!(
                    "unknown industry {s:?}, expected one of heavy_decision, culture_entertainment, consumer_goods, local_life"
                )
            })
    }
}
