//! Versioned, append-only schema migrations, applied on open. A merged migration is never edited:
//! a change is a new file.

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const SQLITE: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../migrations/sqlite/0001_init.sql") },
    Migration { version: 2, name: "audience", sql: include_str!("../migrations/sqlite/0002_audience.sql") },
    Migration { version: 3, name: "reach", sql: include_str!("../migrations/sqlite/0003_reach.sql") },
    Migration { version: 4, name: "contact_ways", sql: include_str!("../migrations/sqlite/0004_contact_ways.sql") },
    Migration {
        version: 5,
        name: "ledger_from_outbox",
        sql: include_str!("../migrations/sqlite/0005_ledger_from_outbox.sql"),
    },
    Migration { version: 6, name: "outbox_batches", sql: include_str!("../migrations/sqlite/0006_outbox_batches.sql") },
];

pub const POSTGRES: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../migrations/postgres/0001_init.sql") },
    Migration { version: 2, name: "audience", sql: include_str!("../migrations/postgres/0002_audience.sql") },
    Migration { version: 3, name: "reach", sql: include_str!("../migrations/postgres/0003_reach.sql") },
    Migration { version: 4, name: "contact_ways", sql: include_str!("../migrations/postgres/0004_contact_ways.sql") },
    Migration {
        version: 5,
        name: "ledger_from_outbox",
        sql: include_str!("../migrations/postgres/0005_ledger_from_outbox.sql"),
    },
];
