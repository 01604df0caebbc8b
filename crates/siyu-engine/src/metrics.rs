//! Prometheus metrics of the engine, in the registry `/metrics` exposes; other crates (the
//! server's HTTP metrics) register theirs in it with [`Metrics::register`].

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    /// Events durably appended, by ingestion path (api, segment, import, webhook).
    pub events_ingested: Family<PathLabel, Counter>,
    pub events_duplicate: Family<PathLabel, Counter>,
    /// Events or requests refused, by error code.
    pub events_rejected: Family<CodeLabel, Counter>,
    pub merges: Counter,
    pub merges_refused: Counter,
    pub profiles_created: Counter,
    pub commit_seconds: Histogram,
    pub commit_events: Histogram,
    pub apply_seconds: Histogram,
    pub tenants_loaded: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("siyu");
        let events_ingested = Family::<PathLabel, Counter>::default();
        let events_duplicate = Family::<PathLabel, Counter>::default();
        let events_rejected = Family::<CodeLabel, Counter>::default();
        let merges = Counter::default();
        let merges_refused = Counter::default();
        let profiles_created = Counter::default();
        let commit_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        let commit_events = Histogram::new(exponential_buckets(1.0, 2.0, 18));
        let apply_seconds = Histogram::new(exponential_buckets(0.000_001, 2.0, 20));
        let tenants_loaded = Gauge::default();
        registry.register("events_ingested", "Events durably appended to the log", events_ingested.clone());
        registry.register(
            "events_duplicate",
            "Events skipped as retries of a known message_id",
            events_duplicate.clone(),
        );
        registry.register("events_rejected", "Events and requests refused, by error code", events_rejected.clone());
        registry.register("profile_merges", "Profiles merged by identity resolution", merges.clone());
        registry.register(
            "profile_merges_refused",
            "Merges or links refused by identity limits or unmerges",
            merges_refused.clone(),
        );
        registry.register("profiles_created", "Profiles created", profiles_created.clone());
        registry.register("ingest_commit_seconds", "Latency of one durable group commit", commit_seconds.clone());
        registry.register("ingest_commit_events", "Events per group commit", commit_events.clone());
        registry.register(
            "ingest_apply_seconds",
            "Time to apply one commit group to in-memory profiles",
            apply_seconds.clone(),
        );
        registry.register("tenants_loaded", "Tenants whose state is in memory", tenants_loaded.clone());
        Metrics {
            registry: Mutex::new(registry),
            events_ingested,
            events_duplicate,
            events_rejected,
            merges,
            merges_refused,
            profiles_created,
            commit_seconds,
            commit_events,
            apply_seconds,
            tenants_loaded,
        }
    }
}

impl Metrics {
    pub fn reject(&self, code: &str) {
        self.events_rejected.get_or_create(&CodeLabel { code: code.to_string() }).inc();
    }

    /// Adds a metric of another crate (named `siyu_<name>` like the engine's own).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().register(name, help, metric);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock())
            .expect("writing to a String cannot fail");
        out
    }
}
