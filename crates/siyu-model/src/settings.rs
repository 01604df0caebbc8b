//! A tenant's configuration: everything that, together with the event log, determines every
//! derived value. `siyu rebuild` reads the log *and* these settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::{Identity, IdentityKind};
use crate::reach::{ReachRules, SendAccount};
use crate::score::{ConfigError, ScoreConfig};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    pub scores: ScoreConfig,
    /// Segment `track` event names mapped to siyu types, on top of the built-in e-commerce mapping.
    pub event_mapping: BTreeMap<String, String>,
    /// Per identity kind, how many identities of that kind one profile may hold.
    pub identity_limits: BTreeMap<String, u32>,
    /// Pairs of identities an operator has declared to be different people (`unmerge`).
    pub cannot_link: Vec<CannotLink>,
    /// Guardrails, quiet hours, the platforms' quota table and the time zone (docs/reach.md).
    pub reach: ReachRules,
    /// The accounts messages leave from, by name (campaigns name one).
    pub send_accounts: BTreeMap<String, SendAccount>,
}

/// Two identities that must never end up in one profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CannotLink {
    pub a: Identity,
    pub b: Identity,
    /// Who declared it and why, for the audit trail.
    #[serde(default)]
    pub reason: String,
}

impl TenantSettings {
    pub fn identity_limit(&self, kind: &IdentityKind) -> u32 {
        self.identity_limits.get(kind.as_str()).copied().unwrap_or_else(|| kind.default_limit())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.scores.validate().map_err(|e| ConfigError { field: format!("scores.{}", e.field), ..e })?;
        for (kind, limit) in &self.identity_limits {
            if IdentityKind::parse(kind).is_err() {
                return Err(ConfigError {
                    field: format!("identity_limits.{kind}"),
                    message: "not an identity kind".into(),
                });
            }
            if *limit == 0 {
                return Err(ConfigError {
                    field: format!("identity_limits.{kind}"),
                    message: "limit must be at least 1".into(),
                });
            }
        }
        self.reach.validate().map_err(|e| ConfigError { field: format!("reach.{}", e.field), message: e.message })?;
        for (name, account) in &self.send_accounts {
            if name.trim().is_empty() || name.len() > 64 {
                return Err(ConfigError {
                    field: format!("send_accounts.{name}"),
                    message: "an account name has 1 to 64 characters".into(),
                });
            }
            if account.rate_per_second == Some(0) {
                return Err(ConfigError {
                    field: format!("send_accounts.{name}.rate_per_second"),
                    message: "must be at least 1".into(),
                });
            }
        }
        for (name, target) in &self.event_mapping {
            let known = crate::EventType::parse(target).is_some() || crate::event_type::is_valid_custom_name(target);
            if !known {
                return Err(ConfigError {
                    field: format!("event_mapping.{name}"),
                    message: format!("{target:?} is not an event type"),
                });
            }
        }
        Ok(())
    }
}
