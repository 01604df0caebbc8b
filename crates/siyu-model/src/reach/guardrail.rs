//! The rules every send obeys, whoever sends it (campaigns now, journeys and staff tasks later):
//! consent, per-channel unsubscribe, suppression lists, frequency caps per person, quiet hours in
//! the tenant's time zone, and the platforms' quotas as a table of data the tenant can edit.
//!
//! Everything here is a pure function of (the rules, what is known about the person, what was
//! already sent to them, the send asked for). Where the "already sent" ledger lives and how it is
//! locked against concurrent senders is siyu-store's business; the verdict is decided here, so the
//! SQLite and PostgreSQL paths cannot disagree.

use chrono::{Datelike, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::template::Purpose;
use crate::time::SECOND;
use crate::{Channel, Millis};

const HOUR: i64 = 3_600 * SECOND;

/// How a message goes out, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendScope {
    /// 群发: one message to many (WeCom customer mass messages, subscription pushes).
    Mass,
    /// 私信 / 客服消息: a message to one person.
    Direct,
    /// WeCom's welcome message after an add.
    Welcome,
}

impl SendScope {
    pub fn as_str(self) -> &'static str {
        match self {
            SendScope::Mass => "mass",
            SendScope::Direct => "direct",
            SendScope::Welcome => "welcome",
        }
    }
}

/// One send already reserved for a person: what the caps count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// When it goes (or went) out; quiet hours may have moved it past the time it was planned.
    pub at: Millis,
    pub channel: Channel,
    pub scope: SendScope,
    pub marketing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff: Option<String>,
}

/// What is known about the person for this send, derived from the log by the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonReach {
    /// The person can be addressed on the channel (has the identity the channel sends to).
    pub has_address: bool,
    /// The person revoked consent for this purpose (or for everything).
    pub consent_revoked: bool,
    /// The person unsubscribed on this channel (an unsubscribe event, or 退订/TD written to us).
    pub unsubscribed: bool,
    /// The suppression list the person is on, if any.
    pub suppressed_by: Option<String>,
    /// When the person last authorised proactive messages on this channel (Douyin 主动私信).
    pub authorised_at: Option<Millis>,
    /// When the person last wrote to us on this channel (WeChat customer service's 48 h window).
    pub last_inbound_at: Option<Millis>,
}

/// The send being asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest<'a> {
    pub channel: Channel,
    /// The type of the sending account (`wecom_corp`, `douyin_enterprise`, `wechat_service`, ...),
    /// which selects the quota rules that apply.
    pub account_type: Option<&'a str>,
    pub scope: SendScope,
    pub purpose: Purpose,
    pub staff: Option<&'a str>,
    /// When it should go out.
    pub at: Millis,
}

/// The answer for one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send at this time (the asked time, or the end of quiet hours).
    Send { at: Millis },
    /// Do not send; `rule` names what held it back.
    Hold { rule: String },
}

/// The reach section of a tenant's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReachRules {
    /// The tenant's IANA time zone: calendar windows, quiet hours and schedules are read in it.
    pub time_zone: String,
    /// Marketing messages are not sent in these hours; a send planned inside them waits for the end.
    pub quiet_hours: Option<QuietHours>,
    /// Caps on marketing messages per person over all channels and campaigns.
    pub frequency_caps: Vec<FrequencyCap>,
    /// The platforms' quotas (平台规则), per channel and account type.
    pub quotas: Vec<QuotaRule>,
    /// Orders within this many days of receiving a campaign message count as its conversions.
    pub attribution_days: u32,
}

impl Default for ReachRules {
    fn default() -> Self {
        ReachRules {
            time_zone: "Asia/Shanghai".into(),
            quiet_hours: Some(QuietHours { start: "22:00".into(), end: "08:00".into() }),
            frequency_caps: vec![
                FrequencyCap { name: "marketing_daily".into(), cap: 1, window: Window::CalendarDay },
                FrequencyCap { name: "marketing_weekly".into(), cap: 4, window: Window::CalendarWeek },
            ],
            quotas: QuotaRule::defaults(),
            attribution_days: 7,
        }
    }
}

/// Local times `HH:MM`; a start after the end spans midnight (22:00–08:00).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub name: String,
    pub cap: u32,
    pub window: Window,
}

/// The time over which a cap counts sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// The same local calendar day.
    CalendarDay,
    /// The same local ISO week (Monday to Sunday).
    CalendarWeek,
    /// The same local calendar month.
    CalendarMonth,
    /// The last `hours` hours before the send.
    Rolling { hours: u32 },
    /// Since the person last authorised proactive messages; no authorisation, no send.
    SinceAuthorisation,
    /// Since the person last wrote to us, and only within `hours` of it.
    SinceLastInbound { hours: u32 },
}

/// How many sends a quota allows in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cap {
    Fixed(u32),
    /// As many as the month of the send has days (WeCom: a customer receives at most that many
    /// mass messages a month).
    DaysInMonth,
}

/// Whom a quota counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    Customer,
    /// Per (staff member, customer) pair.
    StaffAndCustomer,
}

/// One platform rule. Shipped with the documented defaults ([`QuotaRule::defaults`]); tenants edit
/// the table as platforms change their rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    /// Named in every send it holds back.
    pub name: String,
    pub channel: Channel,
    /// Only accounts of this type; `None` means every account of the channel.
    #[serde(default)]
    pub account_type: Option<String>,
    /// Only sends of this scope; `None` means every scope.
    #[serde(default)]
    pub scope: Option<SendScope>,
    pub per: Per,
    pub cap: Cap,
    pub window: Window,
    /// The platform turns such a send into a task the staff member confirms (WeCom 群发助手).
    #[serde(default)]
    pub staff_confirms: bool,
    /// Also documented by the rule for operators; the check itself is the window.
    #[serde(default)]
    pub user_must_authorise: bool,
    #[serde(default)]
    pub note: String,
}

impl QuotaRule {
    /// The platform rules as documented at the time of writing (docs/reach.md cites them).
    pub fn defaults() -> Vec<QuotaRule> {
        let rule = |name: &str, channel, scope, per, cap, window, note: &str| QuotaRule {
            name: name.into(),
            channel,
            account_type: None,
            scope: Some(scope),
            per,
            cap,
            window,
            staff_confirms: false,
            user_must_authorise: false,
            note: note.into(),
        };
        vec![
            QuotaRule {
                staff_confirms: true,
                ..rule(
                    "wecom_customer_monthly",
                    Channel::Wecom,
                    SendScope::Mass,
                    Per::Customer,
                    Cap::DaysInMonth,
                    Window::CalendarMonth,
                    "企业微信: a customer receives at most as many mass messages a month as the month has days",
                )
            },
            QuotaRule {
                staff_confirms: true,
                ..rule(
                    "wecom_staff_daily",
                    Channel::Wecom,
                    SendScope::Mass,
                    Per::StaffAndCustomer,
                    Cap::Fixed(1),
                    Window::CalendarDay,
                    "企业微信: one staff member sends one customer at most one mass message a day",
                )
            },
            QuotaRule {
                user_must_authorise: true,
                ..rule(
                    "douyin_authorised_total",
                    Channel::Douyin,
                    SendScope::Direct,
                    Per::Customer,
                    Cap::Fixed(3),
                    Window::SinceAuthorisation,
                    "抖音: proactive private messages only to users who authorised them, at most 3",
                )
            },
            rule(
                "douyin_daily",
                Channel::Douyin,
                SendScope::Direct,
                Per::Customer,
                Cap::Fixed(1),
                Window::CalendarDay,
                "抖音: proactive private messages at most once a day",
            ),
            rule(
                "wechat_service_48h",
                Channel::WechatMp,
                SendScope::Direct,
                Per::Customer,
                Cap::Fixed(5),
                Window::SinceLastInbound { hours: 48 },
                "微信客服: at most 5 messages within 48 h of the user's last message",
            ),
        ]
    }

    fn applies_to(&self, send: &SendRequest<'_>) -> bool {
        self.channel == send.channel
            && self.scope.is_none_or(|s| s == send.scope)
            && self.account_type.as_deref().is_none_or(|t| send.account_type == Some(t))
    }

    /// Does an earlier send count towards this rule for this send?
    fn counts(&self, earlier: &Sent, send: &SendRequest<'_>) -> bool {
        earlier.channel == self.channel
            && self.scope.is_none_or(|s| s == earlier.scope)
            && match self.per {
                Per::Customer => true,
                Per::StaffAndCustomer => earlier.staff.as_deref() == send.staff,
            }
    }
}

/// A settings error, with the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RulesError {
    pub field: String,
    pub message: String,
}

/// [`ReachRules`] checked and ready: the time zone and the quiet hours parsed.
#[derive(Debug, Clone)]
pub struct Guardrails {
    rules: ReachRules,
    tz: Tz,
    quiet: Option<(NaiveTime, NaiveTime)>,
}

impl ReachRules {
    pub fn validate(&self) -> Result<(), RulesError> {
        Guardrails::new(self).map(|_| ())
    }
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> RulesError {
    RulesError { field: field.into(), message: message.into() }
}

fn parse_clock(field: &str, text: &str) -> Result<NaiveTime, RulesError> {
    NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| bad(field, format!("{text:?} is not a time of day (HH:MM)")))
}

impl Guardrails {
    pub fn new(rules: &ReachRules) -> Result<Guardrails, RulesError> {
        let tz: Tz = rules.time_zone.parse().map_err(|_| {
            bad("time_zone", format!("{:?} is not an IANA time zone (e.g. Asia/Shanghai)", rules.time_zone))
        })?;
        let quiet = match &rules.quiet_hours {
            None => None,
            Some(q) => {
                let (start, end) =
                    (parse_clock("quiet_hours.start", &q.start)?, parse_clock("quiet_hours.end", &q.end)?);
                if start == end {
                    return Err(bad("quiet_hours", "start and end are the same time"));
                }
                Some((start, end))
            }
        };
        let mut names = std::collections::HashSet::new();
        for (i, cap) in rules.frequency_caps.iter().enumerate() {
            if cap.cap == 0 {
                return Err(bad(format!("frequency_caps[{i}].cap"), "a cap must allow at least one message"));
            }
            check_window(&format!("frequency_caps[{i}].window"), cap.window)?;
            if matches!(cap.window, Window::SinceAuthorisation | Window::SinceLastInbound { .. }) {
                return Err(bad(
                    format!("frequency_caps[{i}].window"),
                    "frequency caps count calendar or rolling windows",
                ));
            }
            if !names.insert(cap.name.as_str()) || cap.name.is_empty() {
                return Err(bad(format!("frequency_caps[{i}].name"), "names must be present and unique"));
            }
        }
        for (i, rule) in rules.quotas.iter().enumerate() {
            if rule.cap == Cap::Fixed(0) {
                return Err(bad(format!("quotas[{i}].cap"), "a cap must allow at least one message"));
            }
            check_window(&format!("quotas[{i}].window"), rule.window)?;
            if !names.insert(rule.name.as_str()) || rule.name.is_empty() {
                return Err(bad(format!("quotas[{i}].name"), "names must be present and unique"));
            }
        }
        if rules.attribution_days == 0 || rules.attribution_days > 365 {
            return Err(bad("attribution_days", "must be between 1 and 365"));
        }
        Ok(Guardrails { rules: rules.clone(), tz, quiet })
    }

    pub fn rules(&self) -> &ReachRules {
        &self.rules
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// Whether the platform makes a staff member confirm this send (WeCom mass messages).
    pub fn staff_confirms(&self, send: &SendRequest<'_>) -> bool {
        self.rules.quotas.iter().any(|r| r.staff_confirms && r.applies_to(send))
    }

    /// The checks that need nothing but the person: the same for every campaign, so a dry run can
    /// count them without touching the ledger.
    pub fn check_person(&self, person: &PersonReach, send: &SendRequest<'_>) -> Option<String> {
        if !person.has_address {
            return Some("no_address".into());
        }
        if let Some(list) = &person.suppressed_by {
            return Some(format!("suppression:{list}"));
        }
        if person.consent_revoked && send.purpose != Purpose::Transactional {
            return Some("consent".into());
        }
        if person.unsubscribed && send.purpose == Purpose::Marketing {
            return Some("unsubscribed".into());
        }
        for rule in self.rules.quotas.iter().filter(|r| r.applies_to(send)) {
            let eligible = match rule.window {
                Window::SinceAuthorisation => person.authorised_at.is_some_and(|a| a <= send.at),
                Window::SinceLastInbound { hours } => {
                    person.last_inbound_at.is_some_and(|t| t <= send.at && send.at.0 - t.0 <= i64::from(hours) * HOUR)
                }
                _ => true,
            };
            if !eligible {
                return Some(rule.name.clone());
            }
        }
        None
    }

    /// When a send asked for `at` may go out: `at`, or the end of quiet hours for marketing.
    pub fn send_time(&self, purpose: Purpose, at: Millis) -> Millis {
        let Some((start, end)) = self.quiet else { return at };
        if purpose != Purpose::Marketing {
            return at;
        }
        let Some(local) = self.tz.timestamp_millis_opt(at.0).single() else { return at };
        let now = local.time();
        let inside = if start < end { now >= start && now < end } else { now >= start || now < end };
        if !inside {
            return at;
        }
        let mut day = local.date_naive();
        if start >= end && now >= start {
            day = day.succ_opt().unwrap_or(day);
        }
        let wake = day.and_time(end);
        match self.tz.from_local_datetime(&wake).earliest() {
            Some(t) => Millis(t.timestamp_millis()),
            None => at,
        }
    }

    /// The whole verdict: the person checks, quiet hours, then every cap against the ledger.
    /// `ledger` holds what was already reserved for the person, in any order.
    pub fn judge(&self, person: &PersonReach, ledger: &[Sent], send: &SendRequest<'_>) -> Verdict {
        if let Some(rule) = self.check_person(person, send) {
            return Verdict::Hold { rule };
        }
        let at = self.send_time(send.purpose, send.at);
        let send = SendRequest { at, ..send.clone() };
        if send.purpose == Purpose::Marketing {
            for cap in &self.rules.frequency_caps {
                let used =
                    ledger.iter().filter(|s| s.marketing && self.same_window(cap.window, s.at, at, person)).count();
                if used >= cap.cap as usize {
                    return Verdict::Hold { rule: format!("frequency:{}", cap.name) };
                }
            }
        }
        for rule in self.rules.quotas.iter().filter(|r| r.applies_to(&send)) {
            let cap = match rule.cap {
                Cap::Fixed(n) => n as usize,
                Cap::DaysInMonth => self.days_in_month(at) as usize,
            };
            let used = ledger
                .iter()
                .filter(|s| rule.counts(s, &send) && self.same_window(rule.window, s.at, at, person))
                .count();
            if used >= cap {
                return Verdict::Hold { rule: rule.name.clone() };
            }
        }
        Verdict::Send { at }
    }

    /// Sends older than this can no longer count towards any cap, so a ledger may forget them.
    pub fn horizon(&self, now: Millis) -> Millis {
        let windows =
            self.rules.frequency_caps.iter().map(|c| c.window).chain(self.rules.quotas.iter().map(|r| r.window));
        Millis(now.0 - lookback_hours(windows) * HOUR)
    }

    /// The horizon for sends on one channel: the frequency caps (every channel) and that
    /// channel's quotas. A ledger keeps a WeCom message a month, not the year a Douyin
    /// authorisation window needs.
    pub fn horizon_for(&self, channel: Channel, now: Millis) -> Millis {
        let quotas = self.rules.quotas.iter().filter(|r| r.channel == channel).map(|r| r.window);
        let windows = self.rules.frequency_caps.iter().map(|c| c.window).chain(quotas);
        Millis(now.0 - lookback_hours(windows) * HOUR)
    }

    /// Whether a reserved send can still count towards a cap at `now`.
    pub fn still_counts(&self, sent: &Sent, now: Millis) -> bool {
        sent.at >= self.horizon_for(sent.channel, now)
    }

    fn local(&self, t: Millis) -> Option<chrono::DateTime<Tz>> {
        self.tz.timestamp_millis_opt(t.0).single()
    }

    fn same_window(&self, window: Window, earlier: Millis, at: Millis, person: &PersonReach) -> bool {
        match window {
            Window::Rolling { hours } => earlier.0 > at.0 - i64::from(hours) * HOUR && earlier <= at,
            Window::SinceAuthorisation => person.authorised_at.is_some_and(|a| earlier >= a),
            Window::SinceLastInbound { .. } => person.last_inbound_at.is_some_and(|a| earlier >= a),
            calendar => {
                let (Some(a), Some(b)) = (self.local(earlier), self.local(at)) else { return false };
                match calendar {
                    Window::CalendarDay => a.date_naive() == b.date_naive(),
                    Window::CalendarWeek => a.iso_week() == b.iso_week(),
                    _ => a.year() == b.year() && a.month() == b.month(),
                }
            }
        }
    }

    fn days_in_month(&self, at: Millis) -> u32 {
        let Some(local) = self.local(at) else { return 28 };
        let first = local.date_naive().with_day(1).unwrap_or(local.date_naive());
        let next = first.checked_add_months(chrono::Months::new(1)).unwrap_or(first);
        (next - first).num_days() as u32
    }

    /// A time the operator wrote: RFC 3339, or a local `YYYY-MM-DD HH:MM` in the tenant's zone.
    pub fn parse_local(&self, text: &str) -> Option<Millis> {
        if let Some(t) = Millis::parse_rfc3339(text) {
            return Some(t);
        }
        let naive = chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M").ok()?;
        self.tz.from_local_datetime(&naive).earliest().map(|t| Millis(t.timestamp_millis()))
    }

    /// The local hour of a time, for reports.
    pub fn local_hour(&self, t: Millis) -> u32 {
        self.local(t).map(|l| l.hour()).unwrap_or(0)
    }
}

fn check_window(field: &str, window: Window) -> Result<(), RulesError> {
    match window {
        Window::Rolling { hours: 0 } | Window::SinceLastInbound { hours: 0 } => {
            Err(bad(field, "hours must be at least 1"))
        }
        _ => Ok(()),
    }
}

/// How far back any of these windows looks, in hours: calendar windows need the month (and
/// a week spanning two months), at least 32 days.
fn lookback_hours(windows: impl Iterator<Item = Window>) -> i64 {
    let mut hours: i64 = 32 * 24;
    for w in windows {
        hours = hours.max(match w {
            Window::Rolling { hours } | Window::SinceLastInbound { hours } => i64::from(hours),
            Window::SinceAuthorisation => 400 * 24,
            _ => 0,
        });
    }
    hours
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shanghai(text: &str) -> Millis {
        Millis::parse_rfc3339(&format!("{text}+08:00")).unwrap()
    }

    fn person() -> PersonReach {
        PersonReach { has_address: true, ..Default::default() }
    }

    fn wecom_mass(at: Millis, staff: &'static str) -> SendRequest<'static> {
        SendRequest {
            channel: Channel::Wecom,
            account_type: None,
            scope: SendScope::Mass,
            purpose: Purpose::Service,
            staff: Some(staff),
            at,
        }
    }

    fn sent(at: Millis, channel: Channel, scope: SendScope, marketing: bool, staff: Option<&str>) -> Sent {
        Sent { at, channel, scope, marketing, staff: staff.map(str::to_string) }
    }

    #[test]
    fn a_send_counts_as_long_as_its_channels_longest_window() {
        let g = Guardrails::new(&ReachRules::default()).unwrap();
        let now = shanghai("2026-12-04T12:00:00");
        let days = |t: Millis| (now.0 - t.0) / crate::time::DAY;
        // Douyin's authorisation window looks back 400 days; WeCom's monthly quota 32.
        assert_eq!((days(g.horizon_for(Channel::Douyin, now)), days(g.horizon_for(Channel::Wecom, now))), (400, 32));
        assert_eq!(g.horizon(now), g.horizon_for(Channel::Douyin, now), "the widest of all");
        let old = Millis(now.0 - 40 * crate::time::DAY);
        assert!(!g.still_counts(&sent(old, Channel::Wecom, SendScope::Mass, true, None), now));
        assert!(g.still_counts(&sent(old, Channel::Douyin, SendScope::Direct, true, None), now));
    }

    #[test]
    fn quiet_hours_move_marketing_to_their_end_in_the_tenant_zone() {
        let g = Guardrails::new(&ReachRules::default()).unwrap();
        let late = shanghai("2026-12-03T23:30:00");
        assert_eq!(g.send_time(Purpose::Marketing, late), shanghai("2026-12-04T08:00:00"));
        let early = shanghai("2026-12-04T06:00:00");
        assert_eq!(g.send_time(Purpose::Marketing, early), shanghai("2026-12-04T08:00:00"));
        let day = shanghai("2026-12-04T12:00:00");
        assert_eq!(g.send_time(Purpose::Marketing, day), day);
        assert_eq!(g.send_time(Purpose::Service, late), late, "quiet hours concern marketing only");
    }

    #[test]
    fn frequency_caps_count_marketing_over_all_channels() {
        let g = Guardrails::new(&ReachRules::default()).unwrap();
        let noon = shanghai("2026-12-03T12:00:00");
        let send = SendRequest { purpose: Purpose::Marketing, ..wecom_mass(noon, "zhang") };
        let earlier = [sent(shanghai("2026-12-03T09:00:00"), Channel::Douyin, SendScope::Direct, true, None)];
        assert_eq!(g.judge(&person(), &earlier, &send), Verdict::Hold { rule: "frequency:marketing_daily".into() });
        let yesterday = [sent(shanghai("2026-12-02T21:00:00"), Channel::Douyin, SendScope::Direct, true, None)];
        assert_eq!(g.judge(&person(), &yesterday, &send), Verdict::Send { at: noon });
        // Mon 30 Nov .. Wed 2 Dec: four this ISO week already.
        let week: Vec<Sent> =
            ["2026-11-30T10:00:00", "2026-12-01T10:00:00", "2026-12-02T10:00:00", "2026-11-30T11:00:00"]
                .iter()
                .map(|t| sent(shanghai(t), Channel::Wecom, SendScope::Mass, true, None))
                .collect();
        assert_eq!(g.judge(&person(), &week, &send), Verdict::Hold { rule: "frequency:marketing_weekly".into() });
        let service = [sent(shanghai("2026-12-03T09:00:00"), Channel::Douyin, SendScope::Direct, false, None)];
        assert_eq!(g.judge(&person(), &service, &send), Verdict::Send { at: noon }, "service sends are not capped");
    }

    #[test]
    fn wecom_quotas_per_month_and_per_staff_day() {
        let g = Guardrails::new(&ReachRules::default()).unwrap();
        let at = shanghai("2026-02-20T12:00:00");
        let same_staff = [sent(shanghai("2026-02-20T09:00:00"), Channel::Wecom, SendScope::Mass, false, Some("zhang"))];
        assert_eq!(
            g.judge(&person(), &same_staff, &wecom_mass(at, "zhang")),
            Verdict::Hold { rule: "wecom_staff_daily".into() }
        );
        assert_eq!(g.judge(&person(), &same_staff, &wecom_mass(at, "li")), Verdict::Send { at });
        // February 2026 has 28 days: the 29th mass message of the month is held.
        let month: Vec<Sent> = (1..=28)
            .map(|d| {
                sent(shanghai(&format!("2026-02-{d:02}T07:00:00")), Channel::Wecom, SendScope::Mass, false, Some("x"))
            })
            .collect();
        let march = shanghai("2026-03-01T12:00:00");
        assert_eq!(
            g.judge(&person(), &month, &wecom_mass(at, "li")),
            Verdict::Hold { rule: "wecom_customer_monthly".into() }
        );
        assert_eq!(g.judge(&person(), &month, &wecom_mass(march, "li")), Verdict::Send { at: march });
        assert!(g.staff_confirms(&wecom_mass(at, "li")));
    }

    #[test]
    fn douyin_needs_authorisation_and_wechat_service_an_inbound_message() {
        let g = Guardrails::new(&ReachRules::default()).unwrap();
        let at = shanghai("2026-12-03T12:00:00");
        let dm = |channel| SendRequest {
            channel,
            account_type: None,
            scope: SendScope::Direct,
            purpose: Purpose::Service,
            staff: None,
            at,
        };
        assert_eq!(
            g.judge(&person(), &[], &dm(Channel::Douyin)),
            Verdict::Hold { rule: "douyin_authorised_total".into() }
        );
        let authorised = PersonReach { authorised_at: Some(shanghai("2026-11-30T10:00:00")), ..person() };
        assert_eq!(g.judge(&authorised, &[], &dm(Channel::Douyin)), Verdict::Send { at });
        let three: Vec<Sent> = ["2026-11-30T11:00:00", "2026-12-01T11:00:00", "2026-12-02T11:00:00"]
            .iter()
            .map(|t| sent(shanghai(t), Channel::Douyin, SendScope::Direct, false, None))
            .collect();
        assert_eq!(
            g.judge(&authorised, &three, &dm(Channel::Douyin)),
            Verdict::Hold { rule: "douyin_authorised_total".into() }
        );
        assert_eq!(g.judge(&authorised, &three[2..], &dm(Channel::Douyin)), Verdict::Send { at });

        assert_eq!(
            g.judge(&person(), &[], &dm(Channel::WechatMp)),
            Verdict::Hold { rule: "wechat_service_48h".into() }
        );
        let wrote = PersonReach { last_inbound_at: Some(shanghai("2026-12-02T13:00:00")), ..person() };
        assert_eq!(g.judge(&wrote, &[], &dm(Channel::WechatMp)), Verdict::Send { at });
        let too_old = PersonReach { last_inbound_at: Some(shanghai("2026-12-01T11:00:00")), ..person() };
        assert_eq!(g.judge(&too_old, &[], &dm(Channel::WechatMp)), Verdict::Hold { rule: "wechat_service_48h".into() });
    }

    #[test]
    fn person_checks_name_their_rule() {
        let g = Guardrails::new(&ReachRules::default()).unwrap();
        let send = SendRequest { purpose: Purpose::Marketing, ..wecom_mass(shanghai("2026-12-03T12:00:00"), "z") };
        let hold = |p: PersonReach| match g.judge(&p, &[], &send) {
            Verdict::Hold { rule } => rule,
            v => panic!("expected a hold, got {v:?}"),
        };
        assert_eq!(hold(PersonReach::default()), "no_address");
        assert_eq!(
            hold(PersonReach { suppressed_by: Some("complaints".into()), ..person() }),
            "suppression:complaints"
        );
        assert_eq!(hold(PersonReach { consent_revoked: true, ..person() }), "consent");
        assert_eq!(hold(PersonReach { unsubscribed: true, ..person() }), "unsubscribed");
    }

    #[test]
    fn rules_are_checked() {
        let mut rules = ReachRules { time_zone: "Mars/Olympus".into(), ..ReachRules::default() };
        assert_eq!(rules.validate().unwrap_err().field, "time_zone");
        rules.time_zone = "Asia/Shanghai".into();
        rules.quiet_hours = Some(QuietHours { start: "25:00".into(), end: "08:00".into() });
        assert_eq!(rules.validate().unwrap_err().field, "quiet_hours.start");
        rules.quiet_hours = None;
        rules.quotas[1].name = rules.quotas[0].name.clone();
        assert_eq!(rules.validate().unwrap_err().field, "quotas[1].name");
        let json = serde_json::to_string(&ReachRules::default()).unwrap();
        let back: ReachRules = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ReachRules::default());
    }
}
