//! Identity resolution: which profile an event belongs to. Identities are looked up in rank
//! order (user_id, phone, email, unionid, …, anonymous_id); when they point at two profiles the
//! younger merges into the older (survivor = oldest), unless a per-kind identity limit or an
//! operator's cannot-link rule (an unmerge) forbids it — then the refusal is recorded and the
//! event stays with its strongest identity's profile. Every link and merge keeps its evidence
//! (the event, its time, channel, account and source), from which an unmerge works.

use siyu_model::{Channel, Identity, IdentityKind, Millis, ProfileId, Seq};

use crate::profiles::{merge_sorted, refold, EventRef, IdentityRef, Profiles};

/// How one identity came to belong to a profile: the evidence an unmerge works from.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityLink {
    pub identity: Identity,
    pub seq: Seq,
    pub at: Millis,
    pub channel: Channel,
    pub account: u32,
    pub source: u32,
}

/// A merge that happened: `merged` joined `survivor` because event `seq` carried identities of both.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeRecord {
    pub survivor: ProfileId,
    pub merged: ProfileId,
    pub seq: Seq,
    pub at: Millis,
    /// The identities of the event that proved the link.
    pub evidence: Vec<Identity>,
    /// The top-ranked identity each side held when merged; an unmerge forbids these two together.
    pub survivor_anchor: Identity,
    pub merged_anchor: Identity,
}

/// A merge or link that was refused, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedMerge {
    pub seq: Seq,
    pub at: Millis,
    pub kept: ProfileId,
    pub other: Option<ProfileId>,
    pub identity: Identity,
    pub reason: RefusalReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The merged profile would hold more identities of a kind than the tenant allows.
    IdentityLimit,
    /// An operator declared the two to be different people (unmerge).
    CannotLink,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::IdentityLimit => "identity_limit",
            RefusalReason::CannotLink => "cannot_link",
        }
    }
}

/// Refusals are kept for inspection up to this many per tenant; the counter goes on.
const REFUSALS_KEPT: usize = 10_000;

/// What resolving an event's identities decided.
#[derive(Debug, Default)]
pub(crate) struct Resolution {
    pub(crate) profile: ProfileId,
    pub(crate) created: bool,
    pub(crate) absorbed: Vec<ProfileId>,
    pub(crate) refusals: u32,
}

pub(crate) fn write_key(buf: &mut String, kind: &str, value: &str) {
    buf.clear();
    buf.push_str(kind);
    buf.push('\u{1f}');
    buf.push_str(value);
}

pub(crate) fn identity_key(identity: &Identity) -> Box<str> {
    let mut key = String::new();
    write_key(&mut key, identity.kind.as_str(), &identity.value);
    key.into_boxed_str()
}

impl Profiles {
    pub fn resolve(&self, mut id: ProfileId) -> Option<ProfileId> {
        loop {
            let profile = self.profile(id)?;
            match profile.merged_into {
                Some(next) => id = next,
                None => return Some(id),
            }
        }
    }

    pub fn lookup(&self, identity: &Identity) -> Option<ProfileId> {
        self.identity_index.get(&identity_key(identity)).copied()
    }

    fn lookup_ref(&mut self, identity: &IdentityRef<'_>) -> Option<ProfileId> {
        write_key(&mut self.key_buf, identity.kind, identity.value);
        self.identity_index.get(self.key_buf.as_str()).copied()
    }

    pub(crate) fn resolve_identities(&mut self, seq: Seq, event: &EventRef<'_>) -> Resolution {
        let mut identities: Vec<&IdentityRef<'_>> = event.identities.iter().collect();
        identities.sort_by_key(|i| siyu_model::identity::rank_of(i.kind));
        let mut outcome = Resolution::default();
        let mut target: Option<ProfileId> = None;
        let mut unknown: Vec<&IdentityRef<'_>> = Vec::new();
        for identity in &identities {
            match self.lookup_ref(identity) {
                None => unknown.push(identity),
                Some(found) => match target {
                    None => target = Some(found),
                    Some(current) if current == found => {}
                    Some(current) => match self.try_merge(current, found, seq, event) {
                        Ok((survivor, merged)) => {
                            target = Some(survivor);
                            outcome.absorbed.push(merged);
                        }
                        Err(reason) => {
                            self.refuse(seq, event.timestamp, current, Some(found), owned(identity), reason);
                            outcome.refusals += 1;
                        }
                    },
                },
            }
        }
        let top_is_unknown = identities.first().is_some_and(|top| unknown.first() == Some(top));
        let target = match target {
            Some(existing) if top_is_unknown && !self.can_link(existing, &owned(unknown[0])) => {
                // The event's strongest identity is new and the profile found through a weaker
                // one cannot take it (e.g. a shared anonymous_id): this is a different person.
                outcome.created = true;
                self.create_profile(seq)
            }
            Some(existing) => existing,
            None => {
                outcome.created = true;
                self.create_profile(seq)
            }
        };
        for identity in unknown {
            if self.lookup_ref(identity).is_some() {
                continue; // linked a moment ago (same identity twice in one event)
            }
            let identity = owned(identity);
            if self.can_link(target, &identity) {
                self.link(target, identity, seq, event);
            } else {
                self.refuse(seq, event.timestamp, target, None, identity, RefusalReason::IdentityLimit);
                outcome.refusals += 1;
            }
        }
        outcome.profile = target;
        outcome
    }

    fn count_kind(&self, profile: ProfileId, kind: &IdentityKind) -> u32 {
        self.profiles[profile as usize].identities.iter().filter(|l| &l.identity.kind == kind).count() as u32
    }

    fn can_link(&self, profile: ProfileId, identity: &Identity) -> bool {
        if self.count_kind(profile, &identity.kind) >= self.settings.identity_limit(&identity.kind) {
            return false;
        }
        // A new identity may not join a profile holding the other side of a cannot-link pair.
        self.settings.cannot_link.iter().all(|rule| {
            let pair = |x: &Identity, y: &Identity| x == identity && self.lookup(y) == Some(profile);
            !(pair(&rule.a, &rule.b) || pair(&rule.b, &rule.a))
        })
    }

    fn link(&mut self, profile: ProfileId, identity: Identity, seq: Seq, event: &EventRef<'_>) {
        self.identity_index.insert(identity_key(&identity), profile);
        let account = self.accounts.intern(event.account);
        let source = match event.source_kind {
            Some(kind) if event.source_id.is_empty() => self.sources.intern(kind),
            Some(kind) => self.sources.intern(&format!("{kind}:{}", event.source_id)),
            None => 0,
        };
        self.profiles[profile as usize].identities.push(IdentityLink {
            identity,
            seq,
            at: event.timestamp,
            channel: event.channel,
            account,
            source,
        });
    }

    fn refuse(
        &mut self,
        seq: Seq,
        at: Millis,
        kept: ProfileId,
        other: Option<ProfileId>,
        identity: Identity,
        reason: RefusalReason,
    ) {
        self.refusal_count += 1;
        if self.refusals.len() < REFUSALS_KEPT {
            self.refusals.push(RefusedMerge { seq, at, kept, other, identity, reason });
        }
        tracing::debug!(tenant = %self.tenant, seq, kept, ?other, reason = reason.as_str(), "identity link refused");
    }

    fn anchor(&self, profile: ProfileId) -> Option<Identity> {
        self.profiles[profile as usize]
            .identities
            .iter()
            .min_by_key(|l| (l.identity.kind.rank(), l.seq))
            .map(|l| l.identity.clone())
    }

    fn merge_refusal(&self, a: ProfileId, b: ProfileId) -> Option<RefusalReason> {
        // Kinds only `b` holds cannot exceed the limit: `b` alone already respects it.
        let mut kinds: Vec<&IdentityKind> =
            self.profiles[a as usize].identities.iter().map(|l| &l.identity.kind).collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            if self.count_kind(a, kind) + self.count_kind(b, kind) > self.settings.identity_limit(kind) {
                return Some(RefusalReason::IdentityLimit);
            }
        }
        let holds = |p: ProfileId, id: &Identity| self.lookup(id) == Some(p);
        let forbidden = self
            .settings
            .cannot_link
            .iter()
            .any(|rule| (holds(a, &rule.a) && holds(b, &rule.b)) || (holds(a, &rule.b) && holds(b, &rule.a)));
        forbidden.then_some(RefusalReason::CannotLink)
    }

    /// Merges the younger of `a`, `b` into the older; returns the survivor and the merged one.
    fn try_merge(
        &mut self,
        a: ProfileId,
        b: ProfileId,
        seq: Seq,
        event: &EventRef<'_>,
    ) -> Result<(ProfileId, ProfileId), RefusalReason> {
        if let Some(reason) = self.merge_refusal(a, b) {
            return Err(reason);
        }
        let (survivor, merged) = if a < b { (a, b) } else { (b, a) };
        let survivor_anchor = self.anchor(survivor).expect("a live profile holds an identity");
        let merged_anchor = self.anchor(merged).expect("a live profile holds an identity");
        let taken = std::mem::take(&mut self.profiles[merged as usize]);
        for link in &taken.identities {
            self.identity_index.insert(identity_key(&link.identity), survivor);
        }
        let rules = &self.rules;
        let target = &mut self.profiles[survivor as usize];
        target.identities.extend(taken.identities);
        target.facts = merge_sorted(std::mem::take(&mut target.facts), taken.facts);
        target.state = refold(&target.facts, rules);
        let summary = target.state.summary(rules);
        for tag in taken.tags {
            if let Err(at) = target.tags.binary_search(&tag) {
                target.tags.insert(at, tag);
            }
        }
        if let Some(traits) = taken.traits {
            let mine = target.traits.get_or_insert_with(Default::default);
            for (k, v) in *traits {
                mine.entry(k).or_insert(v);
            }
        }
        target.absorbed.push(merged);
        target.absorbed.extend(taken.absorbed);
        self.set_summary(survivor, summary);
        let placeholder = &mut self.profiles[merged as usize];
        placeholder.merged_into = Some(survivor);
        placeholder.created_seq = taken.created_seq;
        self.live.set(merged, false);
        self.live_profiles -= 1;
        self.merges.push(MergeRecord {
            survivor,
            merged,
            seq,
            at: event.timestamp,
            evidence: event.identities.iter().map(owned).collect(),
            survivor_anchor,
            merged_anchor,
        });
        Ok((survivor, merged))
    }
}

/// An owned identity from a ref; kinds in events and in the log were validated on the way in.
pub(crate) fn owned(identity: &IdentityRef<'_>) -> Identity {
    Identity {
        kind: IdentityKind::parse(identity.kind).unwrap_or_else(|_| IdentityKind::Custom(identity.kind.to_string())),
        value: identity.value.to_string(),
    }
}
