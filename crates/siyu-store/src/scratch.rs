//! Throw-away PostgreSQL databases, for test suites and benchmarks that must not share state:
//! each gets a fresh database on the server named by a URL, dropped afterwards.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

use crate::Result;

/// The environment variable naming the PostgreSQL server the test suites use when set.
pub const TEST_DATABASE_URL: &str = "SIYU_TEST_DATABASE_URL";

pub struct ScratchDatabase {
    /// URL of the new, empty database.
    pub url: String,
    server: String,
    name: String,
}

impl ScratchDatabase {
    /// Creates an empty database on the server `server_url` points at.
    pub async fn create(server_url: &str) -> Result<ScratchDatabase> {
        let name = unique_name();
        let mut admin = sqlx::PgConnection::connect(server_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
        Ok(ScratchDatabase { url: with_database(server_url, &name), server: server_url.to_string(), name })
    }

    /// The server of `SIYU_TEST_DATABASE_URL` when set: the switch for PostgreSQL test runs.
    pub async fn from_test_env() -> Option<ScratchDatabase> {
        let server = std::env::var(TEST_DATABASE_URL).ok()?;
        Some(ScratchDatabase::create(&server).await.expect("failed to create a scratch database"))
    }

    /// Drops the database (best effort: a leftover is clutter, not harm).
    pub async fn drop_database(self) {
        let result = async {
            let mut admin = sqlx::PgConnection::connect(&self.server).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut admin).await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(database = %self.name, error = %e, "failed to drop a scratch database");
        }
    }
}

/// Unique across parallel tests, processes and runs.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!(
        "siyu_scratch_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The server URL with its database replaced, query parameters kept.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_rewritten() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://u:p@h/test?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
        assert_eq!(with_database("postgresql://h:5432", "x"), "postgresql://h:5432/x");
    }
}
