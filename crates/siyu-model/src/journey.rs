//! Journeys (自动化 SOP, issue 12) as data: what an operator writes ([`JourneyDef`], JSON) and the
//! checked form a scheduler runs ([`Journey`]).
//!
//! A journey is a trigger, then named steps: waits, branches, random splits and actions, each
//! naming the step after it. [`JourneyDef::check`] finds every mistake at save time, each with the
//! JSON path of the field it concerns (`steps[2].then`): unknown or repeated step ids, steps no
//! path reaches, a loop no wait breaks (it would spin), durations and times of day that do not
//! parse, conditions that do not compile (with their line and column), splits that do not add up
//! to 100 %. [`Journey::advance`] is the step machine a scheduler drives: from a profile's
//! position and what woke it (entry, a timer, an event), it runs the steps that do not wait and
//! returns the new position and the effects to carry out. Nothing here does I/O: the records, the
//! timers and the sends live elsewhere.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::condition::{self, Condition, Schema};
use crate::EventType;

/// The longest wait, timeout or re-entry period a journey may use: a year.
pub const MAX_WAIT_DAYS: i64 = 366;
/// Steps per journey.
pub const MAX_STEPS: usize = 200;

/// A journey as written: a trigger, its steps (the first is where a profile enters), and what
/// ends it early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyDef {
    pub trigger: TriggerDef,
    pub steps: Vec<StepDef>,
    /// Reaching it takes the profile out of the journey (and counts as a conversion): e.g.
    /// `count(order_paid, 30d) >= 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    /// While it holds, the profile leaves at its next step (e.g. `unsubscribed = true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    #[serde(default)]
    pub reentry: Reentry,
    /// Entrants kept out of every step, to measure the journey against (0–50 %).
    #[serde(default)]
    pub holdout_percent: u8,
}

/// What brings a profile into a journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerDef {
    /// An event of this type, optionally only when the profile meets a condition.
    Event {
        event: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<String>,
    },
    SegmentEntered {
        segment_id: i64,
    },
    SegmentExited {
        segment_id: i64,
    },
    TagAdded {
        tag: String,
    },
    TagRemoved {
        tag: String,
    },
    /// Everyone meeting `audience` at a time of day, every day, week (on a weekday, 1 = Monday)
    /// or month (on a day of the month).
    Schedule {
        every: Every,
        at: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weekday: Option<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        day: Option<u8>,
        audience: String,
    },
    /// A date of the profile's, every year: a date trait (`birthday`) or the anniversary of the
    /// first order, `offset_days` before (negative) or after, at a time of day.
    Date {
        date: DateSource,
        #[serde(default)]
        offset_days: i32,
        at: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Every {
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DateSource {
    /// A trait holding a date (`YYYY-MM-DD` or `MM-DD`).
    Trait {
        key: String,
    },
    FirstOrder,
}

/// Whether a profile that entered before may enter again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reentry {
    /// Once ever.
    #[default]
    Once,
    /// Again once this many days have passed since the last entry.
    OncePer { days: u32 },
    /// Whenever the trigger fires and the profile is not inside already.
    Always,
}

/// One step: an id other steps name it by, and what it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    pub id: String,
    #[serde(flatten)]
    pub kind: StepKind,
}

/// What a step does, and which step comes next (`next: None` ends the journey there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepKind {
    /// Waits a duration (`30m`, `12h`, `3d`).
    Wait {
        duration: String,
        #[serde(default)]
        next: Option<String>,
    },
    /// Waits until the next time of day (`09:00`) in the tenant's time zone.
    WaitUntil {
        time: String,
        #[serde(default)]
        next: Option<String>,
    },
    /// Waits for an event of the profile's, at most `timeout`: `next` when it comes,
    /// `on_timeout` when it does not.
    WaitForEvent {
        event: String,
        timeout: String,
        #[serde(default)]
        next: Option<String>,
        #[serde(default)]
        on_timeout: Option<String>,
    },
    /// `then` when the profile meets the condition, else `otherwise`.
    Branch {
        condition: String,
        #[serde(default)]
        then: Option<String>,
        #[serde(default)]
        otherwise: Option<String>,
    },
    /// A random split (A/B tests, holdouts inside a journey): arms with shares adding up to 100.
    Split { arms: Vec<SplitArm> },
    /// A message through the reach path (guardrails, outbox).
    Send {
        template_id: i64,
        channel: String,
        account: String,
        #[serde(default)]
        sender: Option<String>,
        #[serde(default)]
        next: Option<String>,
    },
    Tag {
        #[serde(default)]
        add: Vec<String>,
        #[serde(default)]
        remove: Vec<String>,
        #[serde(default)]
        next: Option<String>,
    },
    /// A 1v1 task for a staff member (导购): the customer's owner or the next in turn.
    StaffTask {
        assign: Assign,
        #[serde(default)]
        template_id: Option<i64>,
        due: String,
        note: String,
        #[serde(default)]
        next: Option<String>,
    },
    GrantCoupon {
        coupon: String,
        #[serde(default)]
        next: Option<String>,
    },
    GrantPoints {
        points: i64,
        reason: String,
        #[serde(default)]
        next: Option<String>,
    },
    /// A signed POST of the profile and the step to a URL (`https://…`).
    Webhook {
        url: String,
        #[serde(default)]
        next: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitArm {
    pub percent: u8,
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assign {
    /// The WeCom staff member who added the customer, else the next in turn.
    Owner,
    RoundRobin,
}

/// A mistake in a journey: the JSON path of the field, a stable code and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct JourneyError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

fn error(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> JourneyError {
    JourneyError { field: field.into(), code, message: message.into() }
}

/// A checked journey: every condition compiled, every duration in milliseconds, every step
/// reachable, and the steps indexed by id.
#[derive(Debug, Clone)]
pub struct Journey {
    pub def: JourneyDef,
    pub goal: Option<Condition>,
    pub exit: Option<Condition>,
    /// Compiled conditions of the trigger (`event`, `schedule`) and of each branch, by step index.
    pub trigger_condition: Option<Condition>,
    pub branch_conditions: BTreeMap<usize, Condition>,
    /// Step id → index into `def.steps`.
    pub index: BTreeMap<String, usize>,
}

impl Journey {
    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.index.get(id).map(|i| &self.def.steps[*i])
    }

    pub fn entry(&self) -> &StepDef {
        &self.def.steps[0]
    }
}

/// A duration as journeys write it: a whole number of minutes (`m`), hours (`h`) or days (`d`),
/// in milliseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let n: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let ms = match unit {
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    (n > 0 && n * ms <= MAX_WAIT_DAYS * 86_400_000).then_some(n * ms)
}

/// A time of day `HH:MM` as minutes after midnight.
pub fn parse_time_of_day(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && text.len() == 5).then_some(h * 60 + m)
}

impl StepKind {
    /// The steps this one may lead to, with the field naming each.
    pub fn successors(&self) -> Vec<(String, &str)> {
        fn one<'a>(field: &str, next: &'a Option<String>) -> Vec<(String, &'a str)> {
            next.iter().map(|n| (field.to_string(), n.as_str())).collect()
        }
        match self {
            StepKind::Wait { next, .. }
            | StepKind::WaitUntil { next, .. }
            | StepKind::Send { next, .. }
            | StepKind::Tag { next, .. }
            | StepKind::StaffTask { next, .. }
            | StepKind::GrantCoupon { next, .. }
            | StepKind::GrantPoints { next, .. }
            | StepKind::Webhook { next, .. } => one("next", next),
            StepKind::WaitForEvent { next, on_timeout, .. } => {
                let mut out: Vec<(String, &str)> = one("next", next);
                out.extend(one("on_timeout", on_timeout));
                out
            }
            StepKind::Branch { then, otherwise, .. } => {
                let mut out: Vec<(String, &str)> = one("then", then);
                out.extend(one("otherwise", otherwise));
                out
            }
            StepKind::Split { arms } => arms
                .iter()
                .enumerate()
                .filter_map(|(i, a)| a.next.as_deref().map(|n| (format!("arms[{i}].next"), n)))
                .collect(),
        }
    }

    /// Whether a profile stays here for a while (so a loop through it does not spin).
    pub fn waits(&self) -> bool {
        matches!(self, StepKind::Wait { .. } | StepKind::WaitUntil { .. } | StepKind::WaitForEvent { .. })
    }
}

fn known_event(name: &str, schema: &Schema) -> bool {
    EventType::parse(name).is_some() || schema.custom_event_types.contains(name)
}

fn compile_at(field: &str, text: &str, schema: &Schema, errors: &mut Vec<JourneyError>) -> Option<Condition> {
    match condition::compile(text, schema) {
        Ok(c) => Some(c),
        Err(es) => {
            for e in es {
                errors.push(error(field, e.code.as_str(), e.to_string()));
            }
            None
        }
    }
}

impl JourneyDef {
    /// Checks everything a journey's meaning depends on; returns every mistake found.
    pub fn check(&self, schema: &Schema) -> Result<Journey, Vec<JourneyError>> {
        let mut errors = Vec::new();
        let trigger_condition = self.check_trigger(schema, &mut errors);
        let goal = self.goal.as_deref().and_then(|g| compile_at("goal", g, schema, &mut errors));
        let exit = self.exit.as_deref().and_then(|x| compile_at("exit", x, schema, &mut errors));
        if self.holdout_percent > 50 {
            errors.push(error("holdout_percent", "out_of_range", "a holdout is 0 to 50 percent"));
        }
        if let Reentry::OncePer { days } = self.reentry {
            if days == 0 || i64::from(days) > MAX_WAIT_DAYS {
                errors.push(error("reentry.days", "out_of_range", format!("1 to {MAX_WAIT_DAYS} days")));
            }
        }
        if self.steps.is_empty() {
            errors.push(error("steps", "empty", "a journey has at least one step"));
        }
        if self.steps.len() > MAX_STEPS {
            errors.push(error("steps", "too_many", format!("at most {MAX_STEPS} steps")));
        }
        let mut index = BTreeMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("steps[{i}]");
            if step.id.trim().is_empty() || step.id.len() > 64 {
                errors.push(error(format!("{at}.id"), "bad_id", "a step id has 1 to 64 characters"));
            } else if index.insert(step.id.clone(), i).is_some() {
                errors.push(error(
                    format!("{at}.id"),
                    "duplicate_step",
                    format!("step {:?} is defined twice", step.id),
                ));
            }
        }
        let mut branch_conditions = BTreeMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            if let Some(c) = check_step(i, &step.kind, schema, &mut errors) {
                branch_conditions.insert(i, c);
            }
            for (field, next) in step.kind.successors() {
                if !index.contains_key(next) {
                    errors.push(error(format!("steps[{i}].{field}"), "unknown_step", format!("no step {next:?}")));
                }
            }
        }
        if errors.is_empty() {
            check_graph(&self.steps, &index, &mut errors);
        }
        if errors.is_empty() {
            Ok(Journey { def: self.clone(), goal, exit, trigger_condition, branch_conditions, index })
        } else {
            Err(errors)
        }
    }

    fn check_trigger(&self, schema: &Schema, errors: &mut Vec<JourneyError>) -> Option<Condition> {
        match &self.trigger {
            TriggerDef::Event { event, condition } => {
                if !known_event(event, schema) {
                    errors.push(error("trigger.event", "unknown_event_type", format!("no event type {event:?}")));
                }
                condition.as_deref().and_then(|c| compile_at("trigger.condition", c, schema, errors))
            }
            TriggerDef::TagAdded { tag } | TriggerDef::TagRemoved { tag } => {
                if !schema.tags.contains(tag) {
                    errors.push(error("trigger.tag", "unknown_tag", format!("no tag {tag:?}")));
                }
                None
            }
            TriggerDef::SegmentEntered { .. } | TriggerDef::SegmentExited { .. } => None,
            TriggerDef::Schedule { every, at, weekday, day, audience } => {
                if parse_time_of_day(at).is_none() {
                    errors.push(error("trigger.at", "bad_time", "a time of day is HH:MM"));
                }
                match (every, weekday, day) {
                    (Every::Week, Some(1..=7), None)
                    | (Every::Month, None, Some(1..=28))
                    | (Every::Day, None, None) => {}
                    (Every::Week, _, _) => {
                        errors.push(error("trigger.weekday", "out_of_range", "a weekly schedule names a weekday 1–7"))
                    }
                    (Every::Month, _, _) => errors.push(error(
                        "trigger.day",
                        "out_of_range",
                        "a monthly schedule names a day 1–28 (every month has it)",
                    )),
                    (Every::Day, _, _) => {
                        errors.push(error("trigger", "unexpected_field", "a daily schedule takes no weekday or day"))
                    }
                }
                compile_at("trigger.audience", audience, schema, errors)
            }
            TriggerDef::Date { date, offset_days, at } => {
                if parse_time_of_day(at).is_none() {
                    errors.push(error("trigger.at", "bad_time", "a time of day is HH:MM"));
                }
                if offset_days.unsigned_abs() > 60 {
                    errors.push(error("trigger.offset_days", "out_of_range", "at most 60 days before or after"));
                }
                if let (DateSource::Trait { key }, Some(keys)) = (date, &schema.trait_keys) {
                    if !keys.contains(key) {
                        errors.push(error("trigger.date.key", "unknown_trait", format!("no trait {key:?}")));
                    }
                }
                None
            }
        }
    }
}

/// Checks one step's own fields; returns a branch's compiled condition.
fn check_step(i: usize, kind: &StepKind, schema: &Schema, errors: &mut Vec<JourneyError>) -> Option<Condition> {
    let at = |field: &str| format!("steps[{i}].{field}");
    let duration = |field: &str, text: &str, errors: &mut Vec<JourneyError>| {
        if parse_duration(text).is_none() {
            errors.push(error(
                at(field),
                "bad_duration",
                format!("{text:?} is not a duration like 30m, 12h or 3d (at most {MAX_WAIT_DAYS} days)"),
            ));
        }
    };
    match kind {
        StepKind::Wait { duration: d, .. } => duration("duration", d, errors),
        StepKind::WaitUntil { time, .. } => {
            if parse_time_of_day(time).is_none() {
                errors.push(error(at("time"), "bad_time", "a time of day is HH:MM"));
            }
        }
        StepKind::WaitForEvent { event, timeout, .. } => {
            if !known_event(event, schema) {
                errors.push(error(at("event"), "unknown_event_type", format!("no event type {event:?}")));
            }
            duration("timeout", timeout, errors);
        }
        StepKind::Branch { condition, .. } => return compile_at(&at("condition"), condition, schema, errors),
        StepKind::Split { arms } => {
            if arms.len() < 2 {
                errors.push(error(at("arms"), "too_few_arms", "a split has at least two arms"));
            }
            let total: u32 = arms.iter().map(|a| u32::from(a.percent)).sum();
            if total != 100 {
                errors.push(error(at("arms"), "bad_split", format!("the arms' shares add up to {total}, not 100")));
            }
        }
        StepKind::Send { channel, account, .. } => {
            if crate::Channel::parse(channel).is_none() {
                errors.push(error(at("channel"), "unknown_channel", format!("no channel {channel:?}")));
            }
            if account.trim().is_empty() {
                errors.push(error(at("account"), "missing", "a send names the send account"));
            }
        }
        StepKind::Tag { add, remove, .. } => {
            if add.is_empty() && remove.is_empty() {
                errors.push(error(at("add"), "missing", "a tag step adds or removes at least one tag"));
            }
            for (field, tags) in [("add", add), ("remove", remove)] {
                for (j, tag) in tags.iter().enumerate() {
                    if !schema.tags.contains(tag) {
                        errors.push(error(at(&format!("{field}[{j}]")), "unknown_tag", format!("no tag {tag:?}")));
                    }
                }
            }
        }
        StepKind::StaffTask { due, note, .. } => {
            duration("due", due, errors);
            if note.trim().is_empty() {
                errors.push(error(at("note"), "missing", "a staff task says what to do"));
            }
        }
        StepKind::GrantCoupon { coupon, .. } => {
            if coupon.trim().is_empty() {
                errors.push(error(at("coupon"), "missing", "a grant names the coupon"));
            }
        }
        StepKind::GrantPoints { points, .. } => {
            if *points <= 0 {
                errors.push(error(at("points"), "out_of_range", "a grant gives a positive number of points"));
            }
        }
        StepKind::Webhook { url, .. } => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                errors.push(error(at("url"), "bad_url", "a webhook URL starts with https:// (or http://)"));
            }
        }
    }
    None
}

/// Every step reachable from the first, and no loop a profile could go round without waiting.
fn check_graph(steps: &[StepDef], index: &BTreeMap<String, usize>, errors: &mut Vec<JourneyError>) {
    let next = |i: usize| -> Vec<usize> {
        steps[i].kind.successors().into_iter().filter_map(|(_, n)| index.get(n).copied()).collect()
    };
    let mut seen = BTreeSet::from([0]);
    let mut todo = vec![0];
    while let Some(i) = todo.pop() {
        for j in next(i) {
            if seen.insert(j) {
                todo.push(j);
            }
        }
    }
    for (i, step) in steps.iter().enumerate() {
        if !seen.contains(&i) {
            errors.push(error(format!("steps[{i}]"), "unreachable_step", format!("no step leads to {:?}", step.id)));
        }
    }
    // A cycle among steps that do not wait: depth-first search over those steps only.
    let instant: Vec<bool> = steps.iter().map(|s| !s.kind.waits()).collect();
    let mut state = vec![0u8; steps.len()]; // 0 new, 1 on the path, 2 done
    fn visit(
        i: usize,
        next: &dyn Fn(usize) -> Vec<usize>,
        instant: &[bool],
        state: &mut [u8],
        steps: &[StepDef],
    ) -> Option<String> {
        state[i] = 1;
        for j in next(i) {
            if !instant[j] {
                continue;
            }
            match state[j] {
                1 => return Some(steps[j].id.clone()),
                0 => {
                    if let Some(id) = visit(j, next, instant, state, steps) {
                        return Some(id);
                    }
                }
                _ => {}
            }
        }
        state[i] = 2;
        None
    }
    for i in 0..steps.len() {
        if instant[i] && state[i] == 0 {
            if let Some(id) = visit(i, &next, &instant, &mut state, steps) {
                let at = index[&id];
                errors.push(error(
                    format!("steps[{at}]"),
                    "loop_without_wait",
                    format!("step {id:?} is on a loop with no wait: a profile would go round it at once, forever"),
                ));
                return;
            }
        }
    }
}

// --- Running a journey ----------------------------------------------------------------------

/// Where a profile is in a journey (durable: the scheduler stores it with the version it runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Position {
    /// Waiting in a step since `since`; `wake_at` is when its timer fires (a wait's end, or an
    /// event wait's timeout).
    Waiting { step: String, since: crate::Millis, wake_at: crate::Millis },
    /// Left the journey, and why.
    Left { reason: Left, at: crate::Millis },
}

/// Why a profile left a journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Left {
    /// Reached the goal (a conversion).
    Goal,
    /// Met the exit condition.
    Exit,
    /// Came to a step with no next step.
    Completed,
    /// In the journey's holdout: counted, never acted on.
    Holdout,
}

/// What woke a profile's journey up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake<'a> {
    /// The trigger fired: the profile enters at the first step.
    Enter,
    /// The waiting step's timer fired.
    Timer,
    /// An event of the profile's arrived (only an event wait moves on it).
    Event(&'a str),
}

/// What a step asks the world to do; the scheduler carries it out through the reach path, the
/// tag store and so on, each keyed by (journey, version, profile, step, entry) so a repeat is a
/// no-op.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub step: String,
    pub action: StepKind,
}

/// What the journey needs to know about the profile while it runs: whether a compiled condition
/// holds now, and a stable number for the random splits.
pub trait Subject {
    fn holds(&self, condition: &Condition) -> bool;
    /// A stable value in 0..100 for this profile and this split (the same on every replay).
    fn draw(&self, step: &str) -> u8;
}

/// The longest run of steps taken at once: a checked journey has no loop without a wait, so this
/// only guards against a definition that was never checked.
const MAX_INSTANT_STEPS: usize = MAX_STEPS + 1;

impl Journey {
    /// Moves a profile on from `position` (None: not inside) on `wake`, at `now`: every step that
    /// does not wait runs at once, in order, until a wait or the end. Returns the new position and
    /// the effects of the steps taken. Goal and exit are checked before each step.
    pub fn advance(
        &self,
        position: Option<&Position>,
        wake: Wake<'_>,
        now: crate::Millis,
        tz: chrono_tz::Tz,
        in_holdout: bool,
        subject: &dyn Subject,
    ) -> (Option<Position>, Vec<Effect>) {
        let mut effects = Vec::new();
        // The step the wake leads to (None: past the last step).
        let target: Option<usize> = match (position, wake) {
            (None, Wake::Enter) if in_holdout => {
                return (Some(Position::Left { reason: Left::Holdout, at: now }), effects);
            }
            (None, Wake::Enter) => Some(0),
            (Some(Position::Waiting { step, wake_at, .. }), wake) => {
                let Some(&i) = self.index.get(step) else {
                    // A step the version does not have: the position belongs to another version.
                    return (position.cloned(), effects);
                };
                let after = match (&self.def.steps[i].kind, wake) {
                    (StepKind::WaitForEvent { event, next, .. }, Wake::Event(kind)) if kind == event => next.as_deref(),
                    (StepKind::WaitForEvent { on_timeout, .. }, Wake::Timer) if now >= *wake_at => {
                        on_timeout.as_deref()
                    }
                    (StepKind::Wait { next, .. } | StepKind::WaitUntil { next, .. }, Wake::Timer)
                        if now >= *wake_at =>
                    {
                        next.as_deref()
                    }
                    // Not this step's wake (an early timer, another event): nothing moves.
                    _ => return (position.cloned(), effects),
                };
                after.and_then(|n| self.index.get(n).copied())
            }
            // Re-entry is the scheduler's call; a profile that left stays where it is.
            (Some(left @ Position::Left { .. }), _) => return (Some(left.clone()), effects),
            (None, _) => return (None, effects),
        };
        let Some(mut current) = target else {
            return (Some(self.leave(subject, Left::Completed, now)), effects);
        };
        for _ in 0..MAX_INSTANT_STEPS {
            if self.goal.as_ref().is_some_and(|g| subject.holds(g)) {
                return (Some(Position::Left { reason: Left::Goal, at: now }), effects);
            }
            if self.exit.as_ref().is_some_and(|x| subject.holds(x)) {
                return (Some(Position::Left { reason: Left::Exit, at: now }), effects);
            }
            let step = &self.def.steps[current];
            let next: Option<&str> = match &step.kind {
                StepKind::Wait { duration, .. } => {
                    let wake_at = crate::Millis(now.0 + parse_duration(duration).unwrap_or(0));
                    return (Some(Position::Waiting { step: step.id.clone(), since: now, wake_at }), effects);
                }
                StepKind::WaitUntil { time, .. } => {
                    let wake_at = next_time_of_day(now, parse_time_of_day(time).unwrap_or(0), tz);
                    return (Some(Position::Waiting { step: step.id.clone(), since: now, wake_at }), effects);
                }
                StepKind::WaitForEvent { timeout, .. } => {
                    let wake_at = crate::Millis(now.0 + parse_duration(timeout).unwrap_or(0));
                    return (Some(Position::Waiting { step: step.id.clone(), since: now, wake_at }), effects);
                }
                StepKind::Branch { then, otherwise, .. } => {
                    let holds = self.branch_conditions.get(&current).is_some_and(|c| subject.holds(c));
                    if holds {
                        then.as_deref()
                    } else {
                        otherwise.as_deref()
                    }
                }
                StepKind::Split { arms } => {
                    let draw = u32::from(subject.draw(&step.id));
                    let mut upto = 0u32;
                    arms.iter()
                        .find(|a| {
                            upto += u32::from(a.percent);
                            draw < upto
                        })
                        .and_then(|a| a.next.as_deref())
                }
                action => {
                    effects.push(Effect { step: step.id.clone(), action: action.clone() });
                    action.successors().first().map(|(_, n)| *n)
                }
            };
            match next.and_then(|n| self.index.get(n)) {
                Some(&n) => current = n,
                None => return (Some(self.leave(subject, Left::Completed, now)), effects),
            }
        }
        (Some(Position::Left { reason: Left::Completed, at: now }), effects)
    }

    /// Leaving at the end of the steps still counts the goal (or the exit) when it holds.
    fn leave(&self, subject: &dyn Subject, otherwise: Left, now: crate::Millis) -> Position {
        let reason = if self.goal.as_ref().is_some_and(|g| subject.holds(g)) {
            Left::Goal
        } else if self.exit.as_ref().is_some_and(|x| subject.holds(x)) {
            Left::Exit
        } else {
            otherwise
        };
        Position::Left { reason, at: now }
    }
}

/// The first moment at or after `now` when the tenant's clock shows `minutes` after midnight.
pub fn next_time_of_day(now: crate::Millis, minutes: u32, tz: chrono_tz::Tz) -> crate::Millis {
    use chrono::TimeZone;
    let Some(local) = tz.timestamp_millis_opt(now.0).single() else { return now };
    let time = chrono::NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).unwrap_or_default();
    let mut day = local.date_naive();
    for _ in 0..3 {
        if let Some(t) = tz.from_local_datetime(&day.and_time(time)).earliest() {
            if t.timestamp_millis() >= now.0 {
                return crate::Millis(t.timestamp_millis());
            }
        }
        day = day.succ_opt().unwrap_or(day);
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema { tags: ["新客".to_string(), "已流失".to_string()].into(), ..Schema::default() }
    }

    fn def(json: serde_json::Value) -> JourneyDef {
        serde_json::from_value(json).expect("a journey definition")
    }

    /// The WeCom welcome series: add → welcome → day 1 content → day 3 coupon unless bought.
    fn welcome() -> serde_json::Value {
        serde_json::json!({
            "trigger": { "type": "event", "event": "wecom_add" },
            "steps": [
                { "id": "welcome", "type": "send", "template_id": 1, "channel": "wecom", "account": "corp", "next": "tag" },
                { "id": "tag", "type": "tag", "add": ["新客"], "next": "day1" },
                { "id": "day1", "type": "wait", "duration": "1d", "next": "content" },
                { "id": "content", "type": "send", "template_id": 2, "channel": "wecom", "account": "corp", "next": "buy" },
                { "id": "buy", "type": "wait_for_event", "event": "order_paid", "timeout": "2d", "on_timeout": "coupon" },
                { "id": "coupon", "type": "grant_coupon", "coupon": "WELCOME10" }
            ],
            "goal": "count(order_paid, 30d) >= 1",
            "reentry": { "mode": "once" },
            "holdout_percent": 10
        })
    }

    /// A profile for the runner: which conditions hold (by their canonical text) and its draws.
    struct Person {
        holds: Vec<&'static str>,
        draw: u8,
    }

    impl Subject for Person {
        fn holds(&self, condition: &Condition) -> bool {
            self.holds.iter().any(|h| condition::compile(h, &schema()).is_ok_and(|c| &c == condition))
        }
        fn draw(&self, _step: &str) -> u8 {
            self.draw
        }
    }

    const SHANGHAI: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
    const HOUR: i64 = 3_600_000;

    fn ids(effects: &[Effect]) -> Vec<&str> {
        effects.iter().map(|e| e.step.as_str()).collect()
    }

    fn codes(errors: &[JourneyError]) -> Vec<(&str, &str)> {
        errors.iter().map(|e| (e.field.as_str(), e.code)).collect()
    }

    #[test]
    fn the_welcome_series_checks_and_indexes_its_steps() {
        let journey = def(welcome()).check(&schema()).expect("valid");
        assert_eq!(journey.entry().id, "welcome");
        assert_eq!(
            journey.step("coupon").map(|s| &s.kind),
            Some(&StepKind::GrantCoupon { coupon: "WELCOME10".into(), next: None })
        );
        assert!(journey.goal.is_some() && journey.exit.is_none());
        let text = serde_json::to_value(&journey.def).unwrap();
        assert_eq!(def(text.clone()), journey.def, "a definition survives a round trip: {text}");
    }

    /// The examples of docs/journeys.md check.
    #[test]
    fn the_documented_examples_check() {
        let doc = include_str!("../../../docs/journeys.md");
        let json = doc.split("```json").nth(1).and_then(|rest| rest.split("```").next()).expect("an example");
        let journey: JourneyDef = serde_json::from_str(json).expect("the example parses");
        journey.check(&schema()).expect("the example checks");
        let mut with_exit = journey;
        with_exit.exit = Some("reachable = false".into());
        with_exit.check(&schema()).expect("the exit example compiles");
    }

    #[test]
    fn durations_and_times_of_day_parse_within_bounds() {
        assert_eq!(parse_duration("30m"), Some(1_800_000));
        assert_eq!(parse_duration("12h"), Some(43_200_000));
        assert_eq!(parse_duration("3d"), Some(259_200_000));
        for bad in ["", "3", "d", "0d", "-1d", "3w", "367d", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(parse_time_of_day("09:30"), Some(570));
        for bad in ["9:30", "24:00", "12:60", "noon", "09:30:00"] {
            assert_eq!(parse_time_of_day(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_mistake_is_reported_with_its_field() {
        let mut j = welcome();
        j["steps"][1]["add"] = serde_json::json!(["不存在"]);
        j["steps"][2]["duration"] = serde_json::json!("1 day");
        j["steps"][4]["event"] = serde_json::json!("order_payed");
        j["steps"][5]["next"] = serde_json::json!("nowhere");
        j["goal"] = serde_json::json!("count(order_paid, 30d) >=");
        j["holdout_percent"] = serde_json::json!(80);
        let errors = def(j).check(&schema()).unwrap_err();
        assert_eq!(
            codes(&errors),
            [
                ("goal", "syntax"),
                ("holdout_percent", "out_of_range"),
                ("steps[1].add[0]", "unknown_tag"),
                ("steps[2].duration", "bad_duration"),
                ("steps[4].event", "unknown_event_type"),
                ("steps[5].next", "unknown_step"),
            ]
        );
        assert!(errors[0].message.contains("line 1"), "a condition error says where: {}", errors[0].message);
    }

    #[test]
    fn steps_are_named_once_and_all_reachable() {
        let mut j = welcome();
        j["steps"][3]["id"] = serde_json::json!("day1");
        let errors = def(j).check(&schema()).unwrap_err();
        assert!(codes(&errors).contains(&("steps[3].id", "duplicate_step")), "{errors:?}");

        let mut j = welcome();
        j["steps"][0]["next"] = serde_json::Value::Null;
        let errors = def(j).check(&schema()).unwrap_err();
        let unreachable: Vec<_> =
            errors.iter().filter(|e| e.code == "unreachable_step").map(|e| e.field.as_str()).collect();
        assert_eq!(unreachable, ["steps[1]", "steps[2]", "steps[3]", "steps[4]", "steps[5]"]);
    }

    #[test]
    fn a_loop_needs_a_wait() {
        let spin = def(serde_json::json!({
            "trigger": { "type": "tag_added", "tag": "已流失" },
            "steps": [
                { "id": "check", "type": "branch", "condition": "count(order_paid, 60d) = 0", "then": "nudge" },
                { "id": "nudge", "type": "tag", "add": ["已流失"], "next": "check" }
            ]
        }));
        let errors = spin.check(&schema()).unwrap_err();
        assert_eq!(codes(&errors), [("steps[0]", "loop_without_wait")]);

        let mut waiting = serde_json::to_value(&spin).unwrap();
        waiting["steps"][1]["next"] = serde_json::json!("later");
        waiting["steps"].as_array_mut().unwrap().push(serde_json::json!(
            { "id": "later", "type": "wait", "duration": "7d", "next": "check" }
        ));
        def(waiting).check(&schema()).expect("a loop through a wait is a weekly check");
    }

    #[test]
    fn splits_triggers_and_reentry_are_checked() {
        let j = def(serde_json::json!({
            "trigger": { "type": "schedule", "every": "week", "at": "9:00", "audience": "tier = true_fan" },
            "steps": [
                { "id": "ab", "type": "split", "arms": [ { "percent": 50, "next": "a" }, { "percent": 40 } ] },
                { "id": "a", "type": "grant_points", "points": 0, "reason": "member day" }
            ],
            "reentry": { "mode": "once_per", "days": 0 }
        }));
        let errors = j.check(&schema()).unwrap_err();
        assert_eq!(
            codes(&errors),
            [
                ("trigger.at", "bad_time"),
                ("trigger.weekday", "out_of_range"),
                ("reentry.days", "out_of_range"),
                ("steps[0].arms", "bad_split"),
                ("steps[1].points", "out_of_range"),
            ]
        );
        let unknown: Result<JourneyDef, _> = serde_json::from_value(serde_json::json!({
            "trigger": { "type": "event", "event": "wecom_add", "when": "now" }, "steps": []
        }));
        assert!(unknown.unwrap_err().to_string().contains("unknown field `when`"));
        let misspelt: Result<StepDef, _> =
            serde_json::from_value(serde_json::json!({ "id": "x", "type": "wait", "duration": "1d", "nxt": "y" }));
        assert!(misspelt.unwrap_err().to_string().contains("unknown field `nxt`"), "a misspelt step field is refused");
    }

    #[test]
    fn the_welcome_series_runs_step_by_step() {
        let journey = def(welcome()).check(&schema()).unwrap();
        let nobody = Person { holds: vec![], draw: 0 };
        let t0 = crate::Millis(1_767_225_600_000); // 2026-01-01 08:00 in Shanghai
        let (at, effects) = journey.advance(None, Wake::Enter, t0, SHANGHAI, false, &nobody);
        assert_eq!(ids(&effects), ["welcome", "tag"], "the instant steps run at once");
        let day = 24 * HOUR;
        assert_eq!(at, Some(Position::Waiting { step: "day1".into(), since: t0, wake_at: crate::Millis(t0.0 + day) }));

        // An early timer or an unrelated event moves nothing.
        let early = journey.advance(at.as_ref(), Wake::Timer, crate::Millis(t0.0 + HOUR), SHANGHAI, false, &nobody);
        assert_eq!((early.0.as_ref(), early.1.len()), (at.as_ref(), 0));
        let t1 = crate::Millis(t0.0 + day);
        let (at, effects) = journey.advance(at.as_ref(), Wake::Timer, t1, SHANGHAI, false, &nobody);
        assert_eq!(ids(&effects), ["content"]);
        assert_eq!(
            at,
            Some(Position::Waiting { step: "buy".into(), since: t1, wake_at: crate::Millis(t1.0 + 2 * day) })
        );
        let (same, none) = journey.advance(at.as_ref(), Wake::Event("page_view"), t1, SHANGHAI, false, &nobody);
        assert_eq!((same, none.len()), (at.clone(), 0));

        // No order within two days: the coupon, and the journey is over.
        let t2 = crate::Millis(t1.0 + 2 * day);
        let (left, effects) = journey.advance(at.as_ref(), Wake::Timer, t2, SHANGHAI, false, &nobody);
        assert_eq!(ids(&effects), ["coupon"]);
        assert_eq!(left, Some(Position::Left { reason: Left::Completed, at: t2 }));

        // Someone who buys reaches the goal instead, before any further step.
        let buyer = Person { holds: vec!["count(order_paid, 30d) >= 1"], draw: 0 };
        let (left, effects) = journey.advance(at.as_ref(), Wake::Event("order_paid"), t1, SHANGHAI, false, &buyer);
        assert_eq!((left, effects.len()), (Some(Position::Left { reason: Left::Goal, at: t1 }), 0));

        // The holdout enters and leaves at once, with nothing done.
        let (left, effects) = journey.advance(None, Wake::Enter, t0, SHANGHAI, true, &nobody);
        assert_eq!((left, effects.len()), (Some(Position::Left { reason: Left::Holdout, at: t0 }), 0));
    }

    #[test]
    fn branches_and_splits_choose_by_condition_and_draw() {
        let journey = def(serde_json::json!({
            "trigger": { "type": "event", "event": "live_watch" },
            "steps": [
                { "id": "deep", "type": "branch", "condition": "count(live_watch, 1d) >= 3", "then": "ab", "otherwise": "nudge" },
                { "id": "ab", "type": "split", "arms": [ { "percent": 30, "next": "gift" }, { "percent": 70, "next": "nudge" } ] },
                { "id": "gift", "type": "grant_points", "points": 100, "reason": "真爱粉" },
                { "id": "nudge", "type": "wait_until", "time": "10:00", "next": "follow" },
                { "id": "follow", "type": "send", "template_id": 3, "channel": "wecom", "account": "corp" }
            ]
        }))
        .check(&schema())
        .unwrap();
        let t0 = crate::Millis(1_767_258_000_000); // 2026-01-01 17:00 in Shanghai
        let fan = |draw| Person { holds: vec!["count(live_watch, 1d) >= 3"], draw };
        let (_, effects) = journey.advance(None, Wake::Enter, t0, SHANGHAI, false, &fan(29));
        assert_eq!(ids(&effects), ["gift"]);
        let (at, effects) = journey.advance(None, Wake::Enter, t0, SHANGHAI, false, &fan(30));
        assert_eq!(effects.len(), 0);
        // The next 10:00 in Shanghai is the following morning (02:00 UTC).
        assert_eq!(
            at,
            Some(Position::Waiting { step: "nudge".into(), since: t0, wake_at: crate::Millis(1_767_319_200_000) })
        );
        let casual = Person { holds: vec![], draw: 0 };
        let (at2, _) = journey.advance(None, Wake::Enter, t0, SHANGHAI, false, &casual);
        assert_eq!(at2, at, "a casual viewer is nudged the next morning too");
    }
}
