//! `siyu rebuild`: replays each tenant's log into fresh state, checks it, and reports the speed.
//!
//! Profiles live in memory and are derived from the log on every start, so a rebuild is that same
//! replay, run on purpose and verified: twice (determinism), and against the reference evaluator
//! of SPEC §4 (`siyu_model::naive`) for every profile.

use std::process::ExitCode;
use std::time::Instant;

use siyu_engine::internals::TenantState;
use siyu_model::naive::{self, PlainEvent};
use siyu_model::{Millis, ProfileId};

use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this tenant (name or id).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Skip the verification (a second replay and the reference evaluator).
    #[arg(long)]
    pub no_verify: bool,
    /// Compare this many profiles with the reference evaluator (default: every profile).
    #[arg(long)]
    pub sample: Option<usize>,
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
        let state = siyu_engine::internals::replay(&store, record.id, record.settings.clone()).await?;
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
        let again = siyu_engine::internals::replay(&store, record.id, record.settings.clone()).await?;
        let now = Millis::now();
        let mismatches = verify(&state, &again, now, args.sample.unwrap_or(usize::MAX));
        if mismatches.is_empty() {
            println!(
                "{:<20} verified: a second replay agrees on every profile, and so does the reference evaluator",
                ""
            );
        } else {
            failures += mismatches.len();
            for m in mismatches.iter().take(10) {
                println!("MISMATCH {m}");
            }
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Compares two states of the same events: the same live profiles, the same scores for every
/// profile, and — on `sample` profiles (all when there are fewer), merged ones favoured — the
/// scores of the reference evaluator (SPEC §4), which is slow by design.
pub fn verify(state: &TenantState, again: &TenantState, now: Millis, sample: usize) -> Vec<String> {
    let ids: Vec<ProfileId> = state.profile_ids().collect();
    let mut mismatches = Vec::new();
    if state.event_count != again.event_count {
        mismatches.push(format!("event counts differ: {} ≠ {}", state.event_count, again.event_count));
    }
    if !ids.iter().copied().eq(again.profile_ids()) {
        mismatches.push("the two states hold different profiles".to_string());
        return mismatches;
    }
    for &id in &ids {
        if state.scores_at(id, now) != again.scores_at(id, now) {
            mismatches.push(format!("profile {id}: the two states disagree"));
            if mismatches.len() >= 20 {
                return mismatches;
            }
        }
    }
    let checked = if ids.len() <= sample { ids.clone() } else { sample_ids(state, &ids, sample) };
    for id in checked {
        if let Some(m) = against_reference(state, id, now) {
            mismatches.push(m);
        }
    }
    mismatches
}

/// Up to `n` profiles: a fifth of them among those that absorbed others (merges are where
/// incremental folding is most likely wrong), the rest spread evenly over all profiles.
fn sample_ids(state: &TenantState, ids: &[ProfileId], n: usize) -> Vec<ProfileId> {
    let mut out: Vec<ProfileId> = ids
        .iter()
        .copied()
        .filter(|id| state.profile(*id).is_some_and(|p| !p.absorbed.is_empty()))
        .take(n / 5)
        .collect();
    let rest = n - out.len();
    let stride = (ids.len() / rest.max(1)).max(1);
    out.extend(ids.iter().step_by(stride).take(rest).copied());
    out.sort_unstable();
    out.dedup();
    out
}

fn against_reference(state: &TenantState, id: ProfileId, now: Millis) -> Option<String> {
    let profile = state.profile(id)?;
    let scores = state.scores_at(id, now)?;
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
    (!same).then(|| format!("profile {id}: fold {scores:?} ≠ reference {reference:?}"))
}
