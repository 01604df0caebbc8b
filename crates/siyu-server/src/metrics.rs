//! The server's own metrics — requests and latency per route — registered in the engine's
//! registry, so `/metrics` shows them beside the engine's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use siyu_engine::metrics::{Metrics, PathLabel};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
    pub status: u16,
}

pub struct HttpMetrics {
    pub requests: Family<RouteLabel, Counter>,
    pub seconds: Family<PathLabel, Histogram>,
}

impl HttpMetrics {
    /// Creates the HTTP metrics and registers them with the engine's (once per engine).
    pub fn register(metrics: &Metrics) -> HttpMetrics {
        let requests = Family::<RouteLabel, Counter>::default();
        let seconds = Family::<PathLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        metrics.register("http_requests", "HTTP requests by route and status", requests.clone());
        metrics.register("http_request_seconds", "HTTP request latency by route", seconds.clone());
        HttpMetrics { requests, seconds }
    }
}
