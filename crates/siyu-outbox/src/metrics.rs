//! The dispatcher's metrics, registered in the engine's registry so `/metrics` shows them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use siyu_engine::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub connector: String,
    pub code: String,
}

#[derive(Clone)]
pub struct OutboxMetrics {
    pub sent: Counter,
    pub retried: Counter,
    pub failed: Counter,
    /// In-doubt messages found to have taken effect already (not sent again).
    pub reconciled: Counter,
    pub errors: Family<ErrorLabels, Counter>,
}

impl OutboxMetrics {
    pub fn register(metrics: &Metrics) -> OutboxMetrics {
        let m = OutboxMetrics {
            sent: Counter::default(),
            retried: Counter::default(),
            failed: Counter::default(),
            reconciled: Counter::default(),
            errors: Family::default(),
        };
        metrics.register("outbox_sent", "Messages accepted by their connector", m.sent.clone());
        metrics.register("outbox_retried", "Attempts that failed and were scheduled again", m.retried.clone());
        metrics.register("outbox_failed", "Messages given up on", m.failed.clone());
        metrics.register(
            "outbox_reconciled",
            "In-doubt messages found already sent, so not sent again",
            m.reconciled.clone(),
        );
        metrics.register("connector_errors", "Connector errors by connector and code", m.errors.clone());
        m
    }
}
