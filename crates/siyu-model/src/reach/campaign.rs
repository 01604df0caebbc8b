//! A campaign (群发) as the operator asks for it, and the accounts messages leave from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::guardrail::SendScope;
use crate::{Channel, ProfileId};

/// Who a campaign goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Audience {
    /// The members of a segment when the campaign is planned.
    SegmentId(i64),
    /// A list of profiles.
    ProfileIds(Vec<ProfileId>),
}

fn mass() -> SendScope {
    SendScope::Mass
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub template_id: i64,
    pub audience: Audience,
    pub channel: Channel,
    /// The sending account: a key of the tenant's `send_accounts`.
    pub account: String,
    /// The staff member who sends (WeCom `sender` userid), where the channel has one.
    #[serde(default)]
    pub sender: Option<String>,
    #[serde(default = "mass")]
    pub scope: SendScope,
    /// Values for the template's `vars.*` (a coupon code, a live-stream time, ...).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// When to send, in the tenant's time zone (`2026-12-05 19:30`) or RFC 3339; absent = now.
    #[serde(default)]
    pub send_at: Option<String>,
    /// Share of the audience kept back, in percent (0–50), so that lift can be measured.
    #[serde(default)]
    pub holdout_percent: u8,
    /// Orders within this many days of receipt count as conversions; absent = the tenant's default.
    #[serde(default)]
    pub attribution_days: Option<u32>,
    /// How long a staff member has to confirm a WeCom mass-send task before it is chased.
    #[serde(default)]
    pub confirm_hours: Option<u32>,
}

impl CampaignSpec {
    /// What the holdout is drawn from: the campaign as asked for, so a dry run of a spec keeps
    /// back exactly the people its campaign will (and a resumed plan the same ones again).
    pub fn holdout_seed(&self) -> i64 {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        xxhash_rust::xxh3::xxh3_64(&bytes) as i64
    }
}

/// Which connector an account sends through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// Writes messages to a file; for dry runs, tests and the demo.
    Log,
    Wecom,
    Douyin,
    /// A signed generic webhook (a merchant's own SMS gateway, a mini-program backend).
    Webhook,
}

/// A channel account messages leave from, with its connector and credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendAccount {
    pub channel: Channel,
    pub connector: ConnectorKind,
    /// Selects the quota rules that apply (`wecom_corp`, `douyin_enterprise`, `wechat_service`).
    #[serde(default)]
    pub account_type: Option<String>,
    /// The remote API's base URL (a stand-in in tests), or the webhook URL, or the log file path.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Secrets (corp secret, app secret, webhook secret...). Never logged, masked in every answer.
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
    /// Requests per second the connector may make.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    /// Staff members a task may be reassigned to when its sender does not confirm.
    #[serde(default)]
    pub staff: Vec<String>,
}

impl std::fmt::Debug for SendAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendAccount")
            .field("channel", &self.channel)
            .field("connector", &self.connector)
            .field("account_type", &self.account_type)
            .field("base_url", &self.base_url)
            .field("credentials", &self.credentials.keys().map(|k| (k, MASK)).collect::<BTreeMap<_, _>>())
            .field("rate_per_second", &self.rate_per_second)
            .field("staff", &self.staff)
            .finish()
    }
}

/// What a secret looks like in any answer.
pub const MASK: &str = "••••••";

impl SendAccount {
    /// The account with every credential masked, for answers and logs.
    pub fn masked(&self) -> SendAccount {
        SendAccount {
            credentials: self.credentials.keys().map(|k| (k.clone(), MASK.to_string())).collect(),
            ..self.clone()
        }
    }

    /// Keeps the stored value of every credential sent back masked (an edit of other fields).
    pub fn unmask_from(&mut self, stored: &SendAccount) {
        for (k, v) in self.credentials.iter_mut() {
            if v == MASK {
                if let Some(old) = stored.credentials.get(k) {
                    v.clone_from(old);
                }
            }
        }
    }
}

/// Whether a profile is in a campaign's holdout: a stable hash of (the campaign's seed, profile),
/// so a resumed plan keeps the same people back.
pub fn in_holdout(seed: i64, profile: ProfileId, percent: u8) -> bool {
    if percent == 0 {
        return false;
    }
    let h = xxhash_rust::xxh3::xxh3_64(&[seed.to_le_bytes(), i64::from(profile).to_le_bytes()].concat());
    h % 100 < u64::from(percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_is_stable_and_near_its_share() {
        let held = (0..10_000).filter(|p| in_holdout(7, *p, 10)).count();
        assert!((800..1200).contains(&held), "{held} of 10000 held for 10 %");
        assert_eq!(in_holdout(7, 42, 10), in_holdout(7, 42, 10));
        assert_eq!((0..1000).filter(|p| in_holdout(7, *p, 0)).count(), 0);
    }

    #[test]
    fn credentials_are_masked_and_kept_on_edit() {
        let account = SendAccount {
            channel: Channel::Wecom,
            connector: ConnectorKind::Wecom,
            account_type: None,
            base_url: None,
            credentials: [("secret".to_string(), "s3cr3t".to_string())].into(),
            rate_per_second: None,
            staff: vec![],
        };
        assert!(!format!("{account:?}").contains("s3cr3t"));
        let mut edited = account.masked();
        assert_eq!(edited.credentials["secret"], MASK);
        edited.unmask_from(&account);
        assert_eq!(edited, account);
        let spec: CampaignSpec = serde_json::from_str(
            r#"{"template_id":1,"audience":{"segment_id":3},"channel":"wecom","account":"brand","sender":"zhang"}"#,
        )
        .unwrap();
        assert_eq!(spec.scope, SendScope::Mass);
        assert_eq!(spec.audience, Audience::SegmentId(3));
    }
}
