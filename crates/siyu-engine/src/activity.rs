//! A profile's activity: its events, the tags put on it or taken off (by whom, which rule,
//! after which event) and the segments it entered or left, on one timeline, newest first — so
//! that "why did this customer get this message" has one place to look.
//!
//! Items are ordered by when they happened: an event by its timestamp, a tag operation or a
//! membership change by when siyu made it. Newest first; at the same millisecond what an event
//! caused is listed above it.

use std::cmp::Reverse;

use siyu_model::{Millis, ProfileId, TenantId};

use crate::{Engine, EngineError, Result};

/// One entry of a profile's activity; `kind` says which of `event`, `tag`, `segment` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityItem {
    /// `event` | `tag` | `segment`
    pub kind: String,
    pub at: String,
    /// The event's log position; for a tag operation the event it followed; for a membership
    /// change the event that caused it (null when time passing or a definition change did).
    pub seq: Option<i64>,
    pub event: Option<ActivityEvent>,
    pub tag: Option<ActivityTag>,
    pub segment: Option<ActivitySegment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActivityEvent {
    pub event_type: String,
    pub channel: String,
    pub account: String,
    pub amount: Option<f64>,
    pub source: Option<String>,
    pub properties: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActivityTag {
    pub tag: String,
    /// `added` | `removed`
    pub action: String,
    /// `api`, `cli`, `segment:<id>`, `rule:<tag id>`, …
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActivitySegment {
    pub segment_id: i64,
    /// Null once the segment is deleted.
    pub name: Option<String>,
    /// `entered` | `exited`
    pub change: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActivityPage {
    pub items: Vec<ActivityItem>,
    /// Pass as `before` for the next (older) page.
    pub next_cursor: Option<String>,
}

/// Where a page of activity ends: items strictly older than this come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ActivityCursor {
    at: i64,
    /// 0 event, 1 tag operation, 2 membership change: newest first, what an event caused at
    /// the same millisecond is listed above it.
    rank: u8,
    id: i64,
}

impl std::str::FromStr for ActivityCursor {
    type Err = ();

    fn from_str(text: &str) -> std::result::Result<ActivityCursor, ()> {
        let mut parts = text.split('.');
        let mut next = || parts.next().ok_or(());
        let cursor = ActivityCursor {
            at: next()?.parse().map_err(|_| ())?,
            rank: next()?.parse().map_err(|_| ())?,
            id: next()?.parse().map_err(|_| ())?,
        };
        (parts.next().is_none() && cursor.rank <= 2).then_some(cursor).ok_or(())
    }
}

impl std::fmt::Display for ActivityCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.at, self.rank, self.id)
    }
}

/// An item before its event's details are read from the log.
enum Pending {
    Event(i64),
    Tag(ActivityTag, i64),
    Segment(ActivitySegment, Option<i64>),
}

impl Engine {
    /// The newest `limit` items of a profile's activity older than `before`.
    pub async fn profile_activity(
        &self,
        tenant: TenantId,
        id: ProfileId,
        before: Option<ActivityCursor>,
        limit: usize,
    ) -> Result<ActivityPage> {
        let older = |key: &ActivityCursor| before.is_none_or(|b| *key < b);
        let (live, mut items, segment_names) = {
            let runtime = self.tenant(tenant)?;
            let state = runtime.state.read();
            let live = state.resolve(id).ok_or(EngineError::NoSuchProfile(id))?;
            let profile = state.profile(live).ok_or(EngineError::NoSuchProfile(id))?;
            let mut items: Vec<(ActivityCursor, Pending)> = profile
                .facts
                .iter()
                .rev()
                .map(|f| (ActivityCursor { at: f.ts.0, rank: 0, id: f.seq }, Pending::Event(f.seq)))
                .filter(|(key, _)| older(key))
                .take(limit)
                .collect();
            let mine = |op: &siyu_store::TagOp| state.tag_op_concerns(op, live);
            let tags =
                state.segments.tag_ops.iter().enumerate().rev().filter(|(_, op)| mine(op)).filter_map(|(i, op)| {
                    let key = ActivityCursor { at: op.at.0, rank: 1, id: i as i64 };
                    let tag = ActivityTag {
                        tag: state.segments.tag_name(op.tag_id as u32).unwrap_or("(deleted tag)").to_string(),
                        action: if op.add { "added" } else { "removed" }.into(),
                        actor: op.actor.clone(),
                    };
                    older(&key).then_some((key, Pending::Tag(tag, op.after_seq)))
                });
            items.extend(tags.take(limit));
            let names: rustc_hash::FxHashMap<i64, String> = state
                .segments
                .entries
                .iter()
                .filter(|s| s.rule_tag.is_none())
                .map(|s| (s.record.id, s.record.name.clone()))
                .collect();
            (live, items, names)
        };
        // Membership changes are on disk, newest first by id; read pages until `limit` older
        // ones are found.
        let mut found = 0;
        let mut older_than = None;
        loop {
            let page = self.store().membership_changes(tenant, Some(i64::from(live)), None, older_than, 500).await?;
            let Some(last) = page.last() else { break };
            older_than = Some(last.change_id);
            for c in &page {
                let key = ActivityCursor { at: c.at.0, rank: 2, id: c.change_id };
                if found < limit && older(&key) {
                    found += 1;
                    let segment = ActivitySegment {
                        segment_id: c.segment_id,
                        name: segment_names.get(&c.segment_id).cloned(),
                        change: if c.entered { "entered" } else { "exited" }.into(),
                    };
                    items.push((key, Pending::Segment(segment, c.seq)));
                }
            }
            if found >= limit || page.len() < 500 {
                break;
            }
        }
        items.sort_by_key(|(key, _)| Reverse(*key));
        items.truncate(limit);
        let next_cursor = (items.len() == limit).then(|| items.last().map(|(key, _)| key.to_string())).flatten();
        let seqs: Vec<i64> =
            items.iter().filter_map(|(_, p)| if let Pending::Event(s) = p { Some(*s) } else { None }).collect();
        let events: rustc_hash::FxHashMap<i64, siyu_model::Event> =
            self.store().events_by_seq(tenant, &seqs).await?.into_iter().map(|e| (e.seq, e.event)).collect();
        let items = items
            .into_iter()
            .map(|(key, pending)| {
                let at = Millis(key.at).to_rfc3339();
                let item = |kind: &str, seq| ActivityItem {
                    kind: kind.into(),
                    at: at.clone(),
                    seq,
                    event: None,
                    tag: None,
                    segment: None,
                };
                match pending {
                    Pending::Event(seq) => ActivityItem {
                        event: events.get(&seq).map(|e| ActivityEvent {
                            event_type: e.kind.as_str().to_string(),
                            channel: e.channel.to_string(),
                            account: e.account.clone(),
                            amount: e.amount.map(|a| a.yuan()),
                            source: e.source.as_ref().map(|s| s.key()),
                            properties: e.properties.as_ref().and_then(|p| serde_json::from_str(p.get()).ok()),
                        }),
                        ..item("event", Some(seq))
                    },
                    Pending::Tag(tag, after) => ActivityItem { tag: Some(tag), ..item("tag", Some(after)) },
                    Pending::Segment(segment, seq) => ActivityItem { segment: Some(segment), ..item("segment", seq) },
                }
            })
            .collect();
        Ok(ActivityPage { items, next_cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = ActivityCursor { at: 1_794_412_800_000, rank: 1, id: 42 };
        assert_eq!(cursor.to_string().parse::<ActivityCursor>(), Ok(cursor));
        for bad in ["", "1.2", "1.2.3.4", "x.1.1", "1.3.1", "1.-1.1"] {
            assert!(bad.parse::<ActivityCursor>().is_err(), "{bad}");
        }
        // What an event caused sorts above the event at the same millisecond.
        let event = ActivityCursor { at: 5, rank: 0, id: 9 };
        let change = ActivityCursor { at: 5, rank: 2, id: 1 };
        assert!(change > event);
    }
}
