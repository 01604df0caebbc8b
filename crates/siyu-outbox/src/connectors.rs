//! Builds a tenant account's connector from its settings (`send_accounts.<name>`). The credential
//! names each kind reads are listed in docs/reach.md.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use siyu_connect::douyin::{DouyinConfig, DouyinConnector};
use siyu_connect::log::LogConnector;
use siyu_connect::webhook::{WebhookConfig, WebhookConnector};
use siyu_connect::wecom::{Secret, WeComConfig, WeComConnector};
use siyu_connect::Connector;
use siyu_model::reach::{ConnectorKind, SendAccount};
use siyu_model::TenantId;

fn credential<'a>(account: &'a SendAccount, name: &str, key: &str) -> anyhow::Result<&'a str> {
    account
        .credentials
        .get(key)
        .map(String::as_str)
        .with_context(|| format!("send account {name:?} has no credential {key:?}"))
}

pub fn build_connector(
    tenant: TenantId,
    name: &str,
    account: &SendAccount,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn Connector>> {
    Ok(match account.connector {
        ConnectorKind::Log => {
            let path = match &account.base_url {
                Some(path) => Path::new(path).to_path_buf(),
                None => data_dir.join(format!("outbox-{tenant}-{name}.ndjson")),
            };
            Arc::new(LogConnector::open(&path).with_context(|| format!("failed to open {}", path.display()))?)
        }
        ConnectorKind::Webhook => {
            let url = account.base_url.clone().with_context(|| format!("send account {name:?} has no base_url"))?;
            let config = WebhookConfig::new(url, credential(account, name, "secret")?);
            Arc::new(WebhookConnector::new(config).with_context(|| format!("send account {name:?}"))?)
        }
        ConnectorKind::Douyin => {
            let mut config = DouyinConfig::new(
                credential(account, name, "client_key")?,
                credential(account, name, "client_secret")?,
            );
            if let Some(url) = &account.base_url {
                config = config.with_base_url(url.clone());
            }
            if let Some(open_id) = account.credentials.get("operator_open_id") {
                config = config.with_operator(name, open_id.clone());
            }
            Arc::new(DouyinConnector::new(config).with_context(|| format!("send account {name:?}"))?)
        }
        ConnectorKind::Wecom => {
            let config = wecom_config(name, account)?;
            Arc::new(WeComConnector::new(&config).with_context(|| format!("send account {name:?}"))?)
        }
    })
}

/// The WeCom settings of a `wecom` send account: credentials `corp_id` and `corp_secret`,
/// `base_url` instead of WeCom's host, `rate_per_second`. The connector and the operators' WeCom
/// operations (wecom_ops.rs) both build their client from it.
pub fn wecom_config(name: &str, account: &SendAccount) -> anyhow::Result<WeComConfig> {
    let mut config = WeComConfig::new(
        name,
        credential(account, name, "corp_id")?,
        Secret::new(credential(account, name, "corp_secret")?),
    );
    if let Some(url) = &account.base_url {
        config.base_url = url.clone();
    }
    if let Some(rate) = account.rate_per_second {
        config.requests_per_second = f64::from(rate);
    }
    Ok(config)
}
