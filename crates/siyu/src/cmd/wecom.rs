//! `siyu wecom ...`: the WeCom operations from the command line — contact ways (渠道活码) with
//! their attribution, the external-contact sync, tags marked in WeCom — through siyu-outbox's
//! `wecom_ops`, exactly as the API runs them (docs/reach.md, "WeCom operations").

use std::process::ExitCode;

use siyu_outbox::wecom_ops::{self, ContactWayRequest, MarkTagRequest, SyncRequest, WayKind};

use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Contact ways (渠道活码): create one in WeCom, or list them with what they brought.
    #[command(subcommand)]
    ContactWay(ContactWayCommand),
    /// Ingest one `wecom_add` per (staff member, customer) relation WeCom lists; idempotent.
    Sync {
        #[arg(long)]
        tenant: String,
        /// A send account with connector `wecom`.
        #[arg(long)]
        account: String,
        /// Whose customers to sync, repeatable (default: the account's `staff`).
        #[arg(long)]
        staff: Vec<String>,
    },
    /// Add or remove WeCom tags on a segment's members who are the staff member's customers.
    MarkTag {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        account: String,
        #[arg(long)]
        staff: String,
        #[arg(long)]
        segment: i64,
        /// A WeCom corp tag id to add, repeatable.
        #[arg(long = "add")]
        add_tag: Vec<String>,
        /// A WeCom corp tag id to remove, repeatable.
        #[arg(long = "remove")]
        remove_tag: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ContactWayCommand {
    /// Create a QR-code contact way in WeCom and record it.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        account: String,
        /// A staff userid, repeatable (exactly one with --single).
        #[arg(long, required = true)]
        staff: Vec<String>,
        /// The attribution key (≤ 30 characters); generated when absent.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        remark: Option<String>,
        #[arg(long)]
        campaign: Option<i64>,
        /// A single-person way (单人) instead of a multi-person one (多人).
        #[arg(long)]
        single: bool,
    },
    /// The contact ways with their adds, contacts still there, orders and revenue.
    List {
        #[arg(long)]
        tenant: String,
    },
}

pub async fn run(settings: &Settings, command: Command) -> anyhow::Result<ExitCode> {
    let engine = super::open_engine(settings).await?;
    let outcome = run_on(&engine, command).await;
    engine.shutdown();
    outcome.map(|()| ExitCode::SUCCESS)
}

async fn run_on(engine: &siyu_engine::Engine, command: Command) -> anyhow::Result<()> {
    match command {
        Command::ContactWay(ContactWayCommand::Create { tenant, account, staff, state, remark, campaign, single }) => {
            let tenant = super::find_tenant(engine, &tenant).await?;
            let kind = if single { WayKind::Single } else { WayKind::Multi };
            let request = ContactWayRequest { account, staff, state, remark, campaign_id: campaign, kind };
            let way = wecom_ops::create_contact_way(engine, tenant, &request).await?;
            println!("contact way {} created (config_id {})", way.state, way.config_id);
            if let Some(qr_code) = &way.qr_code {
                println!("  QR code: {qr_code}");
            }
        }
        Command::ContactWay(ContactWayCommand::List { tenant }) => {
            let tenant = super::find_tenant(engine, &tenant).await?;
            println!(
                "{:<30} {:<16} {:>6} {:>9} {:>7} {:>7} {:>12}  staff",
                "state", "account", "adds", "contacts", "first", "orders", "net revenue"
            );
            for view in engine.contact_ways(tenant).await? {
                let (w, a) = (&view.record, &view.attribution);
                println!(
                    "{:<30} {:<16} {:>6} {:>9} {:>7} {:>7} {:>12.2}  {}",
                    w.state,
                    w.account,
                    a.adds,
                    a.still_contacts,
                    a.first_orders,
                    a.orders,
                    a.net_revenue,
                    w.staff.join(",")
                );
            }
        }
        Command::Sync { tenant, account, staff } => {
            let tenant = super::find_tenant(engine, &tenant).await?;
            let report = wecom_ops::sync_contacts(engine, tenant, &SyncRequest { account, staff }).await?;
            println!(
                "{} staff, {} contacts: {} new events, {} already synced",
                report.staff, report.contacts, report.new_events, report.duplicates
            );
        }
        Command::MarkTag { tenant, account, staff, segment, add_tag, remove_tag } => {
            let tenant = super::find_tenant(engine, &tenant).await?;
            let request = MarkTagRequest { account, staff, segment_id: segment, add_tag, remove_tag };
            let report = wecom_ops::mark_tag(engine, tenant, &request).await?;
            println!(
                "{} members, {} with a WeCom id, {} not this staff member's customers: {} tagged, {} failed",
                report.members, report.addressed, report.not_contacts, report.tagged, report.failed
            );
            for failure in &report.failures {
                println!(
                    "  profile {} ({}): {} {}",
                    failure.profile_id, failure.external_userid, failure.code, failure.message
                );
            }
        }
    }
    Ok(())
}
