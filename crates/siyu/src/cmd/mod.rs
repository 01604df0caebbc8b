//! One module per subcommand.

pub mod bench;
pub mod demo;
pub mod import;
pub mod reach;
pub mod rebuild;
pub mod segment;
pub mod serve;
pub mod simulate;
pub mod tag;
pub mod tenant;
pub mod wecom;

use std::sync::Arc;

use anyhow::Context;
use siyu_engine::Engine;
use siyu_model::TenantId;

use crate::settings::Settings;

/// Opens the configured store and loads the engine (replaying every tenant's log).
pub async fn open_engine(settings: &Settings) -> anyhow::Result<Arc<Engine>> {
    let store = siyu_store::open(&settings.store.url)
        .await
        .with_context(|| format!("failed to open the store at {}", redact(&settings.store.url)))?;
    Engine::start(store, settings.engine_config()).await.context("failed to load the engine")
}

/// A tenant by name or numeric id.
pub async fn find_tenant(engine: &Engine, name_or_id: &str) -> anyhow::Result<TenantId> {
    if let Some(record) = engine.tenant_by_name(name_or_id).await? {
        return Ok(record.id);
    }
    if let Ok(id) = name_or_id.parse::<i64>() {
        if engine.tenant_record(TenantId(id)).await?.is_some() {
            return Ok(TenantId(id));
        }
    }
    anyhow::bail!("no tenant named {name_or_id:?} (see `siyu tenant list`)")
}

/// Hides a password in a database URL before printing it.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Serves the app until Ctrl-C.
pub async fn serve(engine: Arc<Engine>, bind: &str, config: siyu_outbox::DispatcherConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("failed to listen on {bind}"))?;
    let state = siyu_server::AppState::new(engine.clone(), Default::default());
    tracing::info!(address = %listener.local_addr()?, "serving");
    // The outbox dispatcher: plans due campaigns and delivers queued messages (siyu-outbox).
    let stop = tokio_util::sync::CancellationToken::new();
    let dispatcher = tokio::spawn(siyu_outbox::Dispatcher::new(engine.clone(), config).run(stop.clone()));
    siyu_server::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("server failed")?;
    stop.cancel();
    let _ = dispatcher.await;
    engine.shutdown();
    Ok(())
}

/// Where files beside the store go (log-connector outputs): the SQLite file's folder, or `.`.
pub fn data_dir(store_url: &str) -> std::path::PathBuf {
    if store_url.starts_with("postgres://") || store_url.starts_with("postgresql://") {
        return std::path::PathBuf::from(".");
    }
    let path = std::path::Path::new(store_url.trim_start_matches("sqlite://"));
    path.parent().filter(|p| !p.as_os_str().is_empty()).map(|p| p.to_path_buf()).unwrap_or_else(|| ".".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("siyu-data/siyu.db"), "siyu-data/siyu.db");
    }
}
