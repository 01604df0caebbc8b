//! `siyu rebuild`: replays each tenant's log into fresh state, checks it, and reports the speed.
//!
//! Profiles live in memory and are derived from the log on every start, so a rebuild is that same
//! replay, run on purpose and verified: twice (determinism), and against the reference evaluator
//! of SPEC §4 (`siyu_model::naive`) for every profile.

use std::process::ExitCode;
use std::time::Instant;

use siyu_engine::TenantState;
use siyu_model::naive::{self, PlainEvent};
use siyu_model::{Channel, EventType, Fen, Millis};

use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this tenant (name or id).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Skip the comparison with the reference evaluator (faster on huge tenants).
    #[arg(long)]
    pub no_verify: bool,
}

pub async fn run(settings: &Settings, args: Args) -> anyhow::Result<ExitCode> {
    let store = siyu_store::open(&settings.store.url).await?;
    let mut tenants = store.tenants().await?;
    if let Some(wanted) = &args.tenant {
        tenants.retain(|t| &t.name == wanted || t.id.to_string() == *wanted);
        anyhow::ensure!(!tenants.is_empty(), "no tenant {wanted:?}");
    }
    let mut failures = 0;
    for record in tenants {
        let started = Instant::now();
        let state = siyu_engine::replay(&store, record.id, record.settings.clone()).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{:<20} {:>10} events → {:>9} profiles, {:>7} merges in {:.2}s ({:.0} events/s)",
            record.name,
            state.event_count,
            state.live_profiles,
            state.merges.len(),
            seconds,
            state.event_count as f64 / seconds.max(1e-9)
        );
        if args.no_verify {
            continue;
        }
        let again = siyu_engine::replay(&store, record.id, record.settings.clone()).await?;
        let now = Millis::now();
        let mismatches = verify(&state, &again, now);
        if mismatches.is_empty() {
            println!("{:<20} verified: a second replay and the reference evaluator agree on every profile", "");
        } else {
            failures += mismatches.len();
            for m in mismatches.iter().take(10) {
                println!("MISMATCH {m}");
            }
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Compares two replays with each other and with the reference evaluator, profile by profile.
pub fn verify(state: &TenantState, again: &TenantState, now: Millis) -> Vec<String> {
    let mut mismatches = Vec::new();
    let ids: Vec<_> = state.profile_ids().collect();
    if ids != again.profile_ids().collect::<Vec<_>>() {
        mismatches.push("the two replays produced different profiles".to_string());
        return mismatches;
    }
    for id in ids {
        let profile = state.profile(id).expect("live");
        let scores = state.scores_at(id, now).expect("live");
        if again.scores_at(id, now) != Some(scores) {
            mismatches.push(format!("profile {id}: replays disagree"));
        }
        let plain: Vec<PlainEvent> = profile
            .facts
            .iter()
            .map(|f| PlainEvent {
                event_type: state.type_name(f.code).to_string(),
                channel: f.channel,
                account: state.accounts.name(f.account).to_string(),
                group_id: (f.group != 0).then(|| state.groups.name(f.group).to_string()),
                ts: f.ts,
                amount: f.amount,
            })
            .collect();
        let reference = naive::evaluate(&plain, now, &state.settings.scores);
        let same = reference.affinity == scores.affinity
            && reference.tier == scores.tier
            && reference.reachable == scores.reachable
            && reference.pool_stage == scores.pool_stage
            && reference.ownership == scores.ownership
            && reference.net_paid_orders == scores.net_paid_orders
            && reference.net_revenue == scores.net_revenue
            && reference.orders_365d == scores.orders_365d;
        if !same {
            mismatches.push(format!("profile {id}: fold {scores:?} ≠ reference {reference:?}"));
        }
    }
    let _ = (Channel::Other, EventType::View, Fen(0));
    mismatches
}
