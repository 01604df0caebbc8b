//! The guardrail ledger in memory, derived from the outbox.
//!
//! Every message in the outbox counts towards the caps from the time it was reserved for
//! (`reserved_at`, or `due_at` on rows older than that column; on SQLite the batch's), so the ledger is not a record of
//! its own: it is the outbox read by person. A process keeps it per tenant and, before it judges
//! a batch, folds in the rows it has not seen yet (`outbox_id` beyond the last one it folded).
//! That is exact under concurrency because every insert into a tenant's outbox happens inside the
//! queuing transaction, under the tenant's write lock (SQLite's writer, PostgreSQL's advisory
//! lock), with ids allotted under it: a process holding the lock sees every earlier row.
//!
//! It is a cache: a failed transaction drops it, and a wider horizon than the one it was loaded
//! for (the tenant widened a window) reloads it.

use rustc_hash::FxHashMap;

use siyu_model::reach::{Sent, Verdict};
use siyu_model::{Channel, Millis, ProfileId};

/// One outbox row as the ledger sees it.
#[derive(Debug, Clone)]
pub(crate) struct LedgerRow {
    pub outbox_id: i64,
    pub profile_id: ProfileId,
    pub sent: Sent,
}

/// One tenant's cached ledger behind an async lock held across a queuing transaction.
pub(crate) type LedgerSlot = std::sync::Arc<tokio::sync::Mutex<Option<TenantLedger>>>;

/// Columns as both back-ends read them.
pub(crate) struct LedgerColumns {
    pub outbox_id: i64,
    pub profile_id: i64,
    pub reserved_at: i64,
    pub channel: String,
    pub scope: String,
    pub marketing: i64,
    pub sender: Option<String>,
}

impl LedgerRow {
    /// A row from its columns; the error names the column that does not parse and its value.
    pub fn parse(c: LedgerColumns) -> Result<LedgerRow, (&'static str, String)> {
        let channel = Channel::parse(&c.channel).ok_or(("channel", c.channel.clone()))?;
        let scope = crate::sqlite_reach::parse_scope(&c.scope).ok_or(("scope", c.scope.clone()))?;
        Ok(LedgerRow {
            outbox_id: c.outbox_id,
            profile_id: c.profile_id as ProfileId,
            sent: Sent { at: Millis(c.reserved_at), channel, scope, marketing: c.marketing != 0, staff: c.sender },
        })
    }
}

/// A tenant's ledger taken out of a process's cache (the caller puts it back once its
/// transaction commits, so a failed one drops it): the cached one when it reaches back to
/// `horizon`, else an empty one to load. Returns it with the earliest reservation to read.
pub(crate) fn take(cached: Option<TenantLedger>, horizon: Millis) -> (TenantLedger, Millis) {
    let ledger = match cached {
        Some(ledger) if ledger.covers(horizon) => ledger,
        _ => TenantLedger::starting(horizon),
    };
    // A loaded ledger reads every row after its last id (a new row cannot predate its horizon).
    let from = if ledger.through() == 0 { horizon } else { Millis(i64::MIN) };
    (ledger, from)
}

/// What one tenant's outbox has reserved for each person.
#[derive(Debug, Default)]
pub(crate) struct TenantLedger {
    /// Rows up to this id are folded in.
    through: i64,
    /// Rows reserved before this were not loaded: a judgement looking further back reloads.
    from: Millis,
    /// Keyed by a fast hash: a plan looks up every recipient, on the writer's critical path.
    people: FxHashMap<ProfileId, Vec<Sent>>,
    /// When what can no longer count was last forgotten for everyone (not only the people
    /// judged since).
    swept_at: Millis,
}

impl TenantLedger {
    /// An empty ledger that will hold the rows reserved from `from` on.
    pub fn starting(from: Millis) -> TenantLedger {
        TenantLedger { through: 0, from, people: FxHashMap::default(), swept_at: Millis(i64::MIN) }
    }

    /// Whether it holds everything a judgement looking back to `horizon` needs.
    pub fn covers(&self, horizon: Millis) -> bool {
        self.from <= horizon
    }

    /// The last outbox id folded in: rows after it are what this process has not seen.
    pub fn through(&self) -> i64 {
        self.through
    }

    pub fn fold(&mut self, rows: impl IntoIterator<Item = LedgerRow>) {
        for row in rows {
            self.through = self.through.max(row.outbox_id);
            if row.sent.at >= self.from {
                self.people.entry(row.profile_id).or_default().push(row.sent);
            }
        }
    }

    /// Marks ids up to `id` as seen (the rows the holder itself just wrote, already folded).
    pub fn seen_through(&mut self, id: i64) {
        self.through = self.through.max(id);
    }

    /// Ready to judge `batch`: every row up to `last_id` (the outbox's last, read under the
    /// tenant's lock) seen, and what no longer counts at the batch's time (or now, if earlier)
    /// swept once a day.
    pub fn ready_for(&mut self, batch: &crate::reach::EnqueueBatch, last_id: i64) {
        self.seen_through(last_id);
        let at = batch.at.min(Millis::now());
        self.sweep(at, |s| batch.guardrails.still_counts(s, at));
    }

    /// At most once a day: forgets, for everyone, the sends `counts` says no longer count (a
    /// person who is not judged again would otherwise keep them).
    pub fn sweep(&mut self, now: Millis, counts: impl Fn(&Sent) -> bool) {
        if now.0.saturating_sub(self.swept_at.0) < siyu_model::time::DAY {
            return;
        }
        self.people.retain(|_, sends| {
            sends.retain(&counts);
            !sends.is_empty()
        });
        self.swept_at = now;
    }

    /// People with something reserved.
    #[cfg(test)]
    pub fn people(&self) -> usize {
        self.people.len()
    }

    /// Room for `people` in all, allotted at once (growing a table of a million people in steps
    /// costs a rehash and fresh pages at each).
    pub fn reserve_people(&mut self, people: usize) {
        self.people.reserve(people.saturating_sub(self.people.len()));
    }

    /// The verdict for one recipient of `batch`, judged against their ledger (what can no longer
    /// count forgotten first); a send is reserved in it. Both back-ends queue through this.
    pub fn judge(&mut self, batch: &crate::reach::EnqueueBatch, item: &crate::reach::EnqueueItem) -> Verdict {
        let sends = self.person(item.profile_id);
        batch.prune(sends);
        batch.judge(item, sends)
    }

    fn person(&mut self, profile: ProfileId) -> &mut Vec<Sent> {
        self.people.entry(profile).or_default()
    }

    pub fn get(&self, profile: ProfileId) -> Vec<Sent> {
        self.people.get(&profile).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use siyu_model::reach::SendScope;
    use siyu_model::Channel;

    use super::*;

    fn row(id: i64, profile: ProfileId, at: i64) -> LedgerRow {
        LedgerRow {
            outbox_id: id,
            profile_id: profile,
            sent: Sent {
                at: Millis(at),
                channel: Channel::Wecom,
                scope: SendScope::Mass,
                marketing: true,
                staff: None,
            },
        }
    }

    #[test]
    fn folds_rows_by_person_and_remembers_the_last_id() {
        let mut ledger = TenantLedger::starting(Millis(100));
        ledger.fold([row(3, 7, 150), row(1, 7, 120), row(2, 8, 50)]);
        assert_eq!(ledger.through(), 3);
        assert_eq!(ledger.get(7).len(), 2);
        // Reserved before the ledger's start: not kept, but seen.
        assert!(ledger.get(8).is_empty());
        assert!(ledger.covers(Millis(100)) && !ledger.covers(Millis(99)));
        ledger.seen_through(9);
        assert_eq!(ledger.through(), 9);
    }

    #[test]
    fn a_sweep_forgets_what_no_longer_counts_once_a_day() {
        let mut ledger = TenantLedger::starting(Millis(0));
        ledger.fold([row(1, 7, 10), row(2, 8, 500), row(3, 8, 20)]);
        let now = Millis(siyu_model::time::DAY + 1);
        ledger.sweep(now, |s| s.at.0 >= 100);
        assert_eq!((ledger.people(), ledger.get(7).len(), ledger.get(8).len()), (1, 0, 1));
        // Within the day a second sweep does nothing.
        ledger.fold([row(4, 9, 30)]);
        ledger.sweep(Millis(now.0 + 1), |s| s.at.0 >= 100);
        assert_eq!(ledger.get(9).len(), 1);
    }
}
