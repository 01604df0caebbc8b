//! One `Settings` struct: defaults (the example file, embedded) → `siyu.toml` → environment → flags.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The defaults, documented. `siyu config` prints them.
pub const EXAMPLE: &str = include_str!("../siyu.example.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub ingest: IngestSettings,
    pub outbox: OutboxSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxSettings {
    pub lease_secs: u64,
    pub batch: usize,
    pub rounds_per_tick: usize,
    pub idle_ms: u64,
    pub max_attempts: u32,
    pub first_backoff_ms: u64,
    pub task_poll_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerSettings {
    pub bind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreSettings {
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestSettings {
    pub group_max_events: usize,
    pub max_future_hours: i64,
    pub follow_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogSettings {
    pub level: String,
    pub format: String,
}

/// Overrides from command-line flags (only those given).
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreFlag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerFlag>,
}

#[derive(Debug, Serialize)]
pub struct StoreFlag {
    pub url: String,
}

#[derive(Debug, Serialize)]
pub struct ServerFlag {
    pub bind: String,
}

impl Settings {
    pub fn load(config_file: Option<&Path>, flags: FlagOverrides) -> anyhow::Result<Settings> {
        let mut figment = Figment::new().merge(Toml::string(EXAMPLE));
        match config_file {
            Some(path) => {
                anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("siyu.toml")),
        }
        figment = figment.merge(Env::prefixed("SIYU__").split("__"));
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("store.url", url));
        }
        figment = figment.merge(Serialized::defaults(flags));
        figment.extract().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
    }

    pub fn dispatcher_config(&self) -> siyu_outbox::DispatcherConfig {
        let o = &self.outbox;
        siyu_outbox::DispatcherConfig {
            idle: std::time::Duration::from_millis(o.idle_ms.max(10)),
            lease: std::time::Duration::from_secs(o.lease_secs.max(1)),
            batch: o.batch.max(1),
            rounds_per_tick: o.rounds_per_tick.max(1),
            max_attempts: o.max_attempts.max(1),
            first_backoff: std::time::Duration::from_millis(o.first_backoff_ms.max(1)),
            task_poll: std::time::Duration::from_secs(o.task_poll_secs.max(1)),
            data_dir: crate::cmd::data_dir(&self.store.url),
            ..Default::default()
        }
    }

    pub fn engine_config(&self) -> siyu_engine::EngineConfig {
        let mut config = siyu_engine::EngineConfig {
            group_max_events: self.ingest.group_max_events.max(1),
            follow_interval: std::time::Duration::from_millis(self.ingest.follow_interval_ms.max(10)),
            ..siyu_engine::EngineConfig::default()
        };
        config.time_limits.max_future_ms = self.ingest.max_future_hours * 3_600_000;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_example_and_flags_win() {
        let settings = Settings::load(None, FlagOverrides::default()).unwrap();
        assert_eq!(settings.ingest.group_max_events, 50_000);
        let flags = FlagOverrides { store: Some(StoreFlag { url: "x.db".into() }), server: None };
        let settings = Settings::load(None, flags).unwrap();
        assert_eq!(settings.store.url, "x.db");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Settings::load(Some(Path::new("/nonexistent/siyu.toml")), FlagOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}
