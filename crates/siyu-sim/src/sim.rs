//! The simulation engine: people arrive from the public domain day by day, each visit (session)
//! produces a few events and schedules the next visit, and a small reorder buffer emits the events
//! in time order (with a few late ones and duplicates, as real senders do).
//!
//! Memory: one 14-byte [`Person`] per person ever reached, one 16-byte heap entry per person with
//! a future visit, and the events not yet emitted (a session's worth, plus refunds and store
//! visits scheduled days ahead).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use siyu_model::Channel;

use crate::calendar::{Calendar, DAY, HOUR, MINUTE, SECOND};
use crate::event::*;
use crate::profile::*;
use crate::{SimConfig, SimEvent, SimStats};

// ---------------------------------------------------------------------------------------------
// Rates shared by all industries (per session unless said otherwise). Industry-specific ones are
// in `profile.rs`. Targets are for a 90-day window.
// ---------------------------------------------------------------------------------------------

/// A first contact clicks into the video / room / product page: ~30 % of exposures.
const P_VIEW_FIRST: f64 = 0.30;
/// A follower watches what the account posts: ~60 %.
const P_VIEW_FAN: f64 = 0.60;
/// Likes, comments and shares per view (passers-by / fans). Douyin-like: ~10 % like, 2–3 %
/// comment, ~1 % share.
const P_LIKE: [f64; 2] = [0.10, 0.25];
const P_COMMENT: [f64; 2] = [0.02, 0.06];
const P_SHARE: [f64; 2] = [0.01, 0.03];
/// Follow after a view, scaled up by interest. Gives ~3–5 % of the exposed audience following.
const P_FOLLOW_AFTER_VIEW: f64 = 0.06;
/// Follow from inside a live room (关注主播).
const P_FOLLOW_IN_LIVE: f64 = 0.08;
/// Subscribe to the official account after reading an article.
const P_MP_SUBSCRIBE: f64 = 0.2;
/// Someone reached only in the public domain is shown the brand's content again (the feed
/// algorithm) with this probability, plus interest/250.
const P_RETURN_PUBLIC: f64 = 0.35;
/// Reachable people keep coming back (their next visit is after the mean engaged gap).
const P_RETURN_REACHABLE: f64 = 0.96;
const P_RETURN_BUYER: f64 = 0.9;
/// Share of a reachable person's visits that happen in the private domain (WeCom, groups,
/// official account, mini-program, store) rather than on the public platforms.
const P_PRIVATE_SESSION: f64 = 0.5;
/// A customer answers a 1v1 WeCom message.
const P_REPLY: f64 = 0.35;
const P_REPLY_HEAVY: f64 = 0.55;
/// New WeCom contacts invited into a customer group (社群).
const P_WECOM_GROUP_INVITE: f64 = 0.35;
/// Followers joining the platform fan group (粉丝群) from a live room.
const P_FAN_GROUP_JOIN: f64 = 0.06;
/// Extra WeCom-add chance right after an order (包裹卡 / 加微返现 card in the parcel).
const P_WECOM_ADD_AFTER_ORDER: f64 = 0.12;
/// A mini-program visitor registers as a member (phone + member id: the big merge event).
const P_REGISTER: f64 = 0.12;
/// Coupon claims per session (live room, mini-program, WeCom push, group).
const P_COUPON_LIVE: f64 = 0.08;
const P_COUPON_PRIVATE: f64 = 0.06;
/// Share of held coupons used at the next order.
const P_COUPON_USED: f64 = 0.6;
/// A buyer discloses a phone on an order (receipt / membership binding), or repeats a known one.
const P_PHONE_REVEAL_ORDER: f64 = 0.3;
const P_PHONE_REPEAT: f64 = 0.5;
/// Member id revealed at checkout in the mini-program / offline / app.
const P_USER_REVEAL_ORDER: f64 = 0.4;
/// Holding an unused coupon makes an order more likely.
const COUPON_ORDER_BOOST: f64 = 1.5;
/// 分享有礼: right after an order, the buyer shares an invitation with this multiple of the
/// industry's referral rate.
const REFERRAL_AFTER_ORDER: f64 = 2.0;
/// Live commerce converts better than a video: order-rate multiplier in a live session.
const LIVE_ORDER_BOOST: f64 = 2.5;
/// Churn per session: unfollow (per followed account; more when interest is gone), leave a
/// group, delete the WeCom contact, unsubscribe. Over 90 days ≈ 10–20 % of followers unfollow.
const P_UNFOLLOW: f64 = 0.008;
const P_UNFOLLOW_BORED: f64 = 0.03;
const P_GROUP_LEAVE: f64 = 0.012;
const P_WECOM_DELETE: f64 = 0.005;
const P_UNSUBSCRIBE: f64 = 0.01;
/// PIPL: a few reachable people withdraw marketing consent; some grant it again later.
const P_CONSENT_REVOKE: f64 = 0.0015;
const P_CONSENT_REGRANT: f64 = 0.15;
/// Member registration records consent (consent_granted) this often.
const P_CONSENT_ON_REGISTER: f64 = 0.5;
/// Delivery noise: late arrivals and re-sent duplicates (same message id).
const P_LATE: f64 = 0.005;
const P_DUP: f64 = 0.002;
/// Share of arrivals on a live evening who come in through the live room.
const P_ARRIVE_IN_LIVE: f64 = 0.3;
/// People per group before a new one is opened (fan groups cap at 500, WeCom groups at 200).
const GROUP_SIZE: [u32; 3] = [500, 500, 200];

// Person flags.
const F_WECHAT: u16 = 1;
const F_WECOM: u16 = 1 << 1;
const F_WECOM_EVER: u16 = 1 << 2;
const F_SALES: u16 = 1 << 3;
const F_PHONE: u16 = 1 << 4;
const F_USER: u16 = 1 << 5;
const F_MP_SUB: u16 = 1 << 6;
const F_REVOKED: u16 = 1 << 7;
const F_LEAD: u16 = 1 << 8;
const F_INVITED: u16 = 1 << 9;
const F_COUPON: u16 = 1 << 10;

// Emitted-so-far flags (for the statistics).
const E_ANY: u8 = 1;
const E_FOLLOW: u8 = 2;
const E_WECOM: u8 = 4;

/// One person's state: 14 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Person {
    flags: u16,
    /// Bit per account index: currently following.
    follows: u16,
    origin: u8,
    fan_group: u8,
    wx_group: u8,
    interest: u8,
    orders: u8,
    staff: u8,
    coupon: u8,
    emitted: u8,
    emitted_orders: u8,
}

impl Person {
    fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    fn reachable(&self) -> bool {
        !self.has(F_REVOKED)
            && (self.follows != 0
                || self.has(F_WECOM)
                || self.has(F_MP_SUB)
                || self.fan_group != 0
                || self.wx_group != 0)
    }

    fn bump(&mut self, by: u8) {
        self.interest = self.interest.saturating_add(by).min(100);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Public,
    Live,
    Private,
}

/// The running session: who, when (the clock advances as events happen), which day.
struct Session {
    pi: u32,
    t: i64,
    day: u32,
    promo: f64,
    ordered: bool,
}

/// A deterministic stream of simulated events; see [`simulate`](crate::simulate).
pub struct Simulator {
    ctx: Arc<Ctx>,
    profile: &'static Profile,
    cal: Calendar,
    rng: ChaCha8Rng,
    people: Vec<Person>,
    sessions: BinaryHeap<Reverse<(i64, u32)>>,
    pending: BinaryHeap<Reverse<Raw>>,
    late: BinaryHeap<Reverse<(i64, u64, bool, Raw)>>,
    late_seq: u64,
    arrivals: Vec<u32>,
    next_day: usize,
    seq: u64,
    orders: u32,
    group_fill: [u32; 3],
    stats: SimStats,
}

fn pick_weighted<const N: usize>(rng: &mut ChaCha8Rng, weights: &[u32; N]) -> usize {
    let total: u32 = weights.iter().sum();
    if total == 0 {
        return 0;
    }
    let mut x = rng.gen_range(0..total);
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    N - 1
}

fn exp_sample(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    let u: f64 = rng.gen();
    -(1.0 - u).ln() * mean
}

impl Simulator {
    pub(crate) fn new(config: &SimConfig) -> Simulator {
        let profile = profile(config.industry);
        let end = config.end.0 - config.end.0.rem_euclid(SECOND);
        let start = end - i64::from(config.days) * DAY;
        let cal = Calendar::new(start, end, profile);
        let ctx = Arc::new(Ctx::new(&config.tenant_label, config.seed, cal.days[0].epoch_day, profile));
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x7369_7975_2d73_696d);
        // Audience per local day: weekday × promo × live, a growing account (0.85 → 1.15), and
        // partial first/last days; cumulative rounding so the total is exactly `audience`.
        let n = cal.days.len();
        let weights: Vec<f64> = (0..n)
            .map(|k| {
                let trend = 0.85 + 0.3 * k as f64 / (n.max(2) - 1) as f64;
                cal.days[k].weight * trend * cal.coverage(k)
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut arrivals = vec![0u32; n];
        if total > 0.0 {
            let mut acc = 0.0;
            let mut given = 0u64;
            for k in 0..n {
                acc += weights[k];
                let upto = ((acc / total) * f64::from(config.audience)).round() as u64;
                let upto = if k == n - 1 { u64::from(config.audience) } else { upto.min(u64::from(config.audience)) };
                arrivals[k] = (upto - given) as u32;
                given = upto;
            }
        }
        // Keep the first draws independent of the audience size.
        let _: u64 = rng.gen();
        Simulator {
            ctx,
            profile,
            cal,
            rng,
            people: Vec::with_capacity(config.audience as usize + config.audience as usize / 16),
            sessions: BinaryHeap::new(),
            pending: BinaryHeap::new(),
            late: BinaryHeap::new(),
            late_seq: 0,
            arrivals,
            next_day: 0,
            seq: 1,
            orders: 0,
            group_fill: [0; 3],
            stats: SimStats::default(),
        }
    }

    /// Statistics of what has been emitted so far.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// People created so far (reached or invited), emitted or not.
    pub fn people_created(&self) -> usize {
        self.people.len()
    }

    fn channel(&self, account: u8) -> Channel {
        self.profile.accounts[account as usize].channel
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen::<f64>() < p
    }

    // ----- event construction ----------------------------------------------------------------

    fn raw(&mut self, ts: i64, s: &Session, p: &Person, kind: Kind, account: u8, ids: u8) -> Raw {
        let seq = self.seq;
        self.seq += 1;
        let _ = s;
        Raw {
            ts,
            seq,
            person: s.pi,
            amount: 0,
            src_id: 0,
            prop: 0,
            kind,
            account,
            origin: p.origin,
            ids,
            src: Src::None,
            src_aux: 0,
            props: Props::None,
            aux: 0,
        }
    }

    fn push(&mut self, raw: Raw) {
        self.pending.push(Reverse(raw));
    }

    /// Emits a plain event now and advances the session clock a little.
    fn emit(&mut self, s: &mut Session, p: &Person, kind: Kind, account: u8, src: (Src, u32, u8)) -> Raw {
        let ids = self.ids_for(p, account);
        let mut r = self.raw(s.t, s, p, kind, account, ids);
        (r.src, r.src_id, r.src_aux) = src;
        self.tick(s, 5, 90);
        r
    }

    fn tick(&mut self, s: &mut Session, min_s: i64, max_s: i64) {
        s.t += self.rng.gen_range(min_s..=max_s) * SECOND;
    }

    /// The identities an event on `account` carries for this person.
    fn ids_for(&self, p: &Person, account: u8) -> u8 {
        match self.channel(account) {
            Channel::WechatMp | Channel::MiniProgram => ID_NATIVE | ID_UNION,
            Channel::Wecom if p.has(F_WECHAT) => ID_NATIVE,
            Channel::Offline => {
                let origin_has_id = !matches!(self.channel(p.origin), Channel::Offline);
                let mut ids = if origin_has_id { ID_ORIGIN } else { ID_PHONE };
                if p.has(F_PHONE) {
                    ids |= ID_PHONE;
                } else if p.has(F_USER) {
                    ids |= ID_USER;
                }
                ids
            }
            _ => ID_NATIVE,
        }
    }

    // ----- arrivals and scheduling -----------------------------------------------------------

    fn frontier(&self) -> i64 {
        let session = self.sessions.peek().map_or(i64::MAX, |Reverse((t, _))| *t);
        let day = if self.next_day < self.cal.days.len() {
            self.cal.days[self.next_day].start.max(self.cal.start)
        } else {
            i64::MAX
        };
        session.min(day)
    }

    fn load_arrivals(&mut self) {
        let k = self.next_day;
        self.next_day += 1;
        let count = self.arrivals[k];
        let day = self.cal.days[k];
        for _ in 0..count {
            let origin = pick_weighted(&mut self.rng, &self.profile.origin_weights) as u8;
            let mut p = Person { origin, interest: self.rng.gen_range(0..30), ..Person::default() };
            let ch = self.channel(origin);
            if matches!(ch, Channel::WechatMp | Channel::MiniProgram) || self.chance(self.profile.wechat_share) {
                p.flags |= F_WECHAT;
            }
            match ch {
                Channel::Offline => p.flags |= F_PHONE,
                Channel::App => p.flags |= F_USER,
                _ => {}
            }
            p.staff = self.rng.gen_range(0..self.profile.staff) as u8;
            let live = self.live_window_for(origin, k);
            let mut t = 0;
            for _ in 0..8 {
                t = match live {
                    Some(w) if self.chance(P_ARRIVE_IN_LIVE) => self.cal.sample_in_live(w, &mut self.rng),
                    _ => day.start + self.cal.sample_time_of_day(&mut self.rng),
                };
                if t >= self.cal.start && t <= self.cal.end {
                    break;
                }
            }
            let t = t.clamp(self.cal.start, self.cal.end);
            let pi = self.people.len() as u32;
            self.people.push(p);
            self.sessions.push(Reverse((t, pi)));
        }
    }

    fn live_window_for(&self, account: u8, day: usize) -> Option<(i64, i64)> {
        match self.channel(account) {
            Channel::Douyin => self.cal.live_window(day, false),
            Channel::Kuaishou => self.cal.live_window(day, true),
            _ => None,
        }
    }

    /// The account whose live room this person would watch.
    fn live_account(&self, p: &Person) -> Option<u8> {
        match self.channel(p.origin) {
            Channel::Douyin => Some(ACC_DOUYIN_MAIN),
            Channel::Kuaishou => Some(ACC_KUAISHOU),
            _ => None,
        }
    }

    fn schedule_next(&mut self, pi: u32, p: &Person, t: i64) {
        let prof = self.profile;
        let (p_return, mean_days) = if p.reachable() {
            (P_RETURN_REACHABLE, prof.engaged_gap_days)
        } else if p.orders > 0 || p.has(F_INVITED) || p.has(F_WECOM_EVER) {
            (P_RETURN_BUYER, prof.engaged_gap_days * 1.5)
        } else {
            (P_RETURN_PUBLIC + f64::from(p.interest) / 250.0, prof.public_gap_days)
        };
        if !self.chance(p_return) {
            return;
        }
        let mut k = 0;
        for attempt in 0..4 {
            let gap = exp_sample(&mut self.rng, mean_days).max(0.02);
            let target = t + (gap * DAY as f64) as i64;
            if target > self.cal.end {
                return;
            }
            k = self.cal.day_index(target);
            if attempt == 3 || self.chance(self.cal.days[k].weight / self.cal.max_weight) {
                break;
            }
        }
        let fan_of_live = self.live_account(p).is_some_and(|a| {
            let same_platform = if a == ACC_DOUYIN_MAIN { 0b11 } else { 1 << a };
            p.follows & same_platform != 0 || p.fan_group != 0
        });
        let mut next = match self.live_account(p).and_then(|a| self.live_window_for(a, k)) {
            Some(w) if fan_of_live && self.chance(prof.p_live_attend) => self.cal.sample_in_live(w, &mut self.rng),
            _ => self.cal.days[k].start + self.cal.sample_time_of_day(&mut self.rng),
        };
        if next <= t {
            next = t + self.rng.gen_range(20 * 60..3 * 3600) * SECOND;
        }
        if next <= self.cal.end {
            self.sessions.push(Reverse((next, pi)));
        }
    }

    // ----- sessions --------------------------------------------------------------------------

    fn run_session(&mut self, pi: u32, t: i64) {
        let mut p = self.people[pi as usize];
        let day = self.cal.day_index(t);
        let mut s = Session { pi, t, day: day as u32, promo: self.cal.days[day].promo, ordered: false };
        let in_live =
            self.live_account(&p).and_then(|a| self.live_window_for(a, day)).is_some_and(|(a, b)| t >= a && t < b);
        let mode = if in_live {
            Mode::Live
        } else if p.reachable() && self.chance(P_PRIVATE_SESSION) {
            Mode::Private
        } else {
            Mode::Public
        };
        match mode {
            Mode::Live => self.live_session(&mut p, &mut s),
            Mode::Private => self.private_session(&mut p, &mut s),
            Mode::Public => {
                let acc = self.public_account(&p);
                self.public_session(&mut p, &mut s, acc);
            }
        }
        self.after_session(&mut p, &mut s, mode);
        p.interest = (f64::from(p.interest) * 0.93) as u8;
        self.people[pi as usize] = p;
        self.schedule_next(pi, &p, t);
    }

    fn public_account(&mut self, p: &Person) -> u8 {
        match self.channel(p.origin) {
            Channel::Douyin => {
                let other = if p.origin == ACC_DOUYIN_MAIN { ACC_DOUYIN_SECOND } else { ACC_DOUYIN_MAIN };
                if p.follows & (1 << other) != 0 && self.chance(0.4) || self.chance(0.2) {
                    other
                } else {
                    p.origin
                }
            }
            _ => p.origin,
        }
    }

    fn public_session(&mut self, p: &mut Person, s: &mut Session, acc: u8) {
        let ch = self.channel(acc);
        let fan = p.follows & (1 << acc) != 0;
        let f = usize::from(fan);
        let day = s.day;
        let src = match ch {
            Channel::Douyin | Channel::Kuaishou => (Src::Video, day, self.rng.gen_range(1..=4)),
            Channel::WechatMp => (Src::Article, day, 0),
            Channel::Taobao | Channel::Jd => (Src::Search, 0, self.rng.gen_range(1..=12)),
            Channel::Web => (Src::Ad, 0, self.rng.gen_range(1..=8)),
            _ => (Src::None, 0, 0),
        };
        let exposure_channel = !matches!(ch, Channel::MiniProgram | Channel::App | Channel::Offline);
        if exposure_channel {
            let r = self.emit(s, p, Kind::Exposure, acc, src);
            self.push(r);
        }
        let p_view = if fan { P_VIEW_FAN } else { P_VIEW_FIRST } + f64::from(p.interest) / 400.0;
        if !exposure_channel || self.chance(p_view) {
            let r = self.emit(s, p, Kind::View, acc, src);
            self.push(r);
            let social = matches!(ch, Channel::Douyin | Channel::Kuaishou | Channel::WechatMp);
            if social && self.chance(P_LIKE[f]) {
                let r = self.emit(s, p, Kind::Like, acc, src);
                self.push(r);
                p.bump(2);
            }
            if social && self.chance(P_COMMENT[f]) {
                let r = self.emit(s, p, Kind::Comment, acc, src);
                self.push(r);
                p.bump(5);
            }
            if social && self.chance(P_SHARE[f]) {
                let r = self.emit(s, p, Kind::Share, acc, src);
                self.push(r);
                p.bump(5);
            }
            let followable = matches!(ch, Channel::Douyin | Channel::Kuaishou | Channel::Taobao | Channel::Jd);
            if followable && !fan && self.chance(P_FOLLOW_AFTER_VIEW * (1.0 + f64::from(p.interest) / 50.0)) {
                let r = self.emit(s, p, Kind::Follow, acc, src);
                self.push(r);
                p.follows |= 1 << acc;
                p.bump(12);
            }
            if ch == Channel::WechatMp && !p.has(F_MP_SUB) && self.chance(P_MP_SUBSCRIBE) {
                let r = self.emit(s, p, Kind::Subscribe, acc, src);
                self.push(r);
                p.flags |= F_MP_SUB;
                p.bump(10);
            }
            if ch == Channel::Web && !p.has(F_LEAD) && self.chance(self.profile.p_lead * 4.0) {
                self.lead(p, s, acc);
            }
            p.bump(3);
        }
        let base = if p.follows != 0 { self.profile.p_order_follower } else { self.profile.p_order_public };
        self.maybe_order(p, s, base, (Src::None, 0, 0));
    }

    fn live_session(&mut self, p: &mut Person, s: &mut Session) {
        let Some(acc) = self.live_account(p) else { return };
        let src = (Src::Live, s.day, 0);
        let fan = p.follows & (1 << acc) != 0;
        let f = usize::from(fan);
        if !fan {
            let r = self.emit(s, p, Kind::Exposure, acc, src);
            self.push(r);
        }
        let mut r = self.emit(s, p, Kind::LiveWatch, acc, src);
        let mean = if fan { 900.0 } else { 150.0 };
        r.props = Props::Watch;
        r.prop = exp_sample(&mut self.rng, mean).clamp(5.0, 4.0 * 3600.0) as u32;
        self.push(r);
        p.bump(4);
        if self.chance(0.4) {
            let r = self.emit(s, p, Kind::Like, acc, src);
            self.push(r);
        }
        if self.chance(P_COMMENT[f] * 5.0) {
            let r = self.emit(s, p, Kind::Comment, acc, src);
            self.push(r);
            p.bump(4);
        }
        if self.chance(P_SHARE[f]) {
            let r = self.emit(s, p, Kind::Share, acc, src);
            self.push(r);
        }
        let p_gift = if fan { self.profile.p_gift_fan } else { self.profile.p_gift_other };
        if self.chance(p_gift) {
            let gifts = if fan { self.rng.gen_range(1..=3) } else { 1 };
            for _ in 0..gifts {
                let total: u32 = self.profile.gifts.iter().map(|g| g.weight).sum();
                let mut x = self.rng.gen_range(0..total);
                let mut gi = 0;
                for (i, g) in self.profile.gifts.iter().enumerate() {
                    if x < g.weight {
                        gi = i;
                        break;
                    }
                    x -= g.weight;
                }
                let mut r = self.emit(s, p, Kind::LiveGift, acc, src);
                r.amount = self.profile.gifts[gi].fen;
                r.props = Props::Gift;
                r.aux = gi as u8;
                self.push(r);
                p.bump(6);
            }
        }
        if !fan && self.chance(P_FOLLOW_IN_LIVE) {
            let r = self.emit(s, p, Kind::Follow, acc, src);
            self.push(r);
            p.follows |= 1 << acc;
            p.bump(12);
        }
        if p.follows & (1 << acc) != 0 && p.fan_group == 0 && self.chance(P_FAN_GROUP_JOIN) {
            let family = if acc == ACC_KUAISHOU { 1 } else { 0 };
            p.fan_group = self.join_group(p, s, acc, family);
        }
        if self.chance(P_COUPON_LIVE) {
            self.claim_coupon(p, s, acc, COUPON_LIVE, src);
        }
        if self.profile.p_lead > 0.0 && !p.has(F_LEAD) && self.chance(self.profile.p_lead) {
            self.lead(p, s, acc);
        }
        let base = if p.follows != 0 { self.profile.p_order_follower } else { self.profile.p_order_public };
        self.maybe_order(p, s, base * LIVE_ORDER_BOOST, src);
    }

    fn private_session(&mut self, p: &mut Person, s: &mut Session) {
        let local_life =
            self.channel(ACC_EXTRA[0]) == Channel::Offline && self.channel(ACC_EXTRA[2]) == Channel::Offline;
        let options = [
            if p.has(F_WECOM) { 4 } else { 0 },
            if p.fan_group != 0 || p.wx_group != 0 { 2 } else { 0 },
            if p.has(F_MP_SUB) { 2 } else { 0 },
            if p.has(F_WECHAT) { 2 } else { 0 },
            if local_life && (p.orders > 0 || p.has(F_PHONE)) { 2 } else { 0 },
            if p.follows != 0 { 3 } else { 0 },
        ];
        match pick_weighted(&mut self.rng, &options) {
            0 => self.wecom_chat(p, s),
            1 => self.group_activity(p, s),
            2 => {
                let r = self.emit(s, p, Kind::View, ACC_WECHAT_MP, (Src::Article, s.day, 0));
                self.push(r);
                if self.chance(0.06) {
                    let r = self.emit(s, p, Kind::Like, ACC_WECHAT_MP, (Src::Article, s.day, 0));
                    self.push(r);
                }
                if self.chance(0.03) {
                    let r = self.emit(s, p, Kind::Share, ACC_WECHAT_MP, (Src::Article, s.day, 0));
                    self.push(r);
                }
                if p.has(F_WECHAT) && self.chance(0.25) {
                    self.mini_program(p, s);
                }
            }
            3 => self.mini_program(p, s),
            4 => {
                let store = ACC_EXTRA[usize::from(p.staff) % 3];
                self.store_visit(p, s, store, 0, 0);
                if self.chance(0.3) {
                    self.order(p, s, Some(store), (Src::None, 0, 0));
                }
            }
            _ => {
                // Content of an account they follow.
                let followed: Vec<u8> = (0..10u8).filter(|a| p.follows & (1 << a) != 0).collect();
                let acc = followed[self.rng.gen_range(0..followed.len())];
                self.public_session(p, s, acc);
                return;
            }
        }
        p.bump(3);
        self.maybe_order(p, s, self.profile.p_order_private, (Src::None, 0, 0));
    }

    fn wecom_acc(p: &Person) -> u8 {
        if p.has(F_SALES) {
            ACC_WECOM_SALES
        } else {
            ACC_WECOM_CORP
        }
    }

    fn wecom_chat(&mut self, p: &mut Person, s: &mut Session) {
        let acc = Self::wecom_acc(p);
        let staff = (Src::Staff, u32::from(p.staff) + 1, 0);
        let r = self.emit(s, p, Kind::MessageOut, acc, staff);
        self.push(r);
        let heavy = self.profile.p_lead >= 0.02;
        let p_reply = if heavy { P_REPLY_HEAVY } else { P_REPLY };
        if self.chance(p_reply) {
            self.tick(s, 60, 1800);
            let r = self.emit(s, p, Kind::MessageIn, acc, staff);
            self.push(r);
            p.bump(6);
            if self.chance(0.5) {
                self.tick(s, 30, 600);
                let r = self.emit(s, p, Kind::MessageOut, acc, staff);
                self.push(r);
                if self.chance(0.35) {
                    self.tick(s, 30, 900);
                    let r = self.emit(s, p, Kind::MessageIn, acc, staff);
                    self.push(r);
                }
            }
            if heavy && !p.has(F_LEAD) && self.chance(self.profile.p_lead * 3.0) {
                self.lead(p, s, acc);
            }
        }
        if self.chance(P_COUPON_PRIVATE) {
            let coupon = if s.promo > 1.0 { COUPON_FESTIVAL } else { COUPON_VIP };
            self.claim_coupon(p, s, acc, coupon, staff);
        }
    }

    fn group_activity(&mut self, p: &mut Person, s: &mut Session) {
        let (acc, family, number) = if p.wx_group != 0 && (p.fan_group == 0 || self.chance(0.5)) {
            (ACC_WECOM_CORP, 2, p.wx_group)
        } else {
            let acc = self.live_account(p).unwrap_or(ACC_DOUYIN_MAIN);
            (acc, if acc == ACC_KUAISHOU { 1 } else { 0 }, p.fan_group)
        };
        let kind = if self.chance(0.35) { Kind::MessageIn } else { Kind::View };
        let mut r = self.emit(s, p, kind, acc, (Src::None, 0, 0));
        r.props = Props::Group;
        r.aux = family;
        r.prop = u32::from(number);
        self.push(r);
        if self.chance(0.1) {
            self.claim_coupon(p, s, acc, COUPON_GROUP, (Src::None, 0, 0));
        }
    }

    fn mini_program(&mut self, p: &mut Person, s: &mut Session) {
        let src = if s.promo > 1.0 { (Src::Campaign, s.day, 0) } else { (Src::None, 0, 0) };
        let mut r = self.emit(s, p, Kind::View, ACC_MINI_PROGRAM, src);
        if p.has(F_USER) && self.chance(0.5) {
            r.ids |= ID_USER;
        }
        self.push(r);
        if !p.has(F_USER) && self.chance(P_REGISTER) {
            p.flags |= F_USER | F_PHONE;
            let kind = if self.chance(P_CONSENT_ON_REGISTER) { Kind::ConsentGranted } else { Kind::View };
            let mut r = self.emit(s, p, kind, ACC_MINI_PROGRAM, (Src::None, 0, 0));
            r.ids |= ID_USER | ID_PHONE;
            if kind == Kind::ConsentGranted {
                r.props = Props::Consent;
            }
            self.push(r);
            p.bump(8);
        }
        if self.chance(P_COUPON_PRIVATE) {
            let coupon = if p.orders == 0 { COUPON_NEW } else { COUPON_VIP };
            self.claim_coupon(p, s, ACC_MINI_PROGRAM, coupon, src);
        }
    }

    fn claim_coupon(&mut self, p: &mut Person, s: &mut Session, acc: u8, coupon: u8, src: (Src, u32, u8)) {
        let mut r = self.emit(s, p, Kind::CouponClaimed, acc, src);
        r.props = Props::Coupon;
        r.aux = coupon;
        self.push(r);
        p.flags |= F_COUPON;
        p.coupon = coupon;
    }

    fn lead(&mut self, p: &mut Person, s: &mut Session, acc: u8) {
        let mut r = self.emit(s, p, Kind::LeadSubmit, acc, (Src::None, 0, 0));
        r.ids |= ID_PHONE;
        r.props = Props::Lead;
        self.push(r);
        p.flags |= F_LEAD | F_PHONE;
        p.bump(20);
    }

    fn join_group(&mut self, p: &Person, s: &mut Session, acc: u8, family: u8) -> u8 {
        let fill = self.group_fill[family as usize];
        self.group_fill[family as usize] += 1;
        let number = (fill / GROUP_SIZE[family as usize] % 99 + 1) as u8;
        let mut r = self.emit(s, p, Kind::GroupJoin, acc, (Src::None, 0, 0));
        r.props = Props::Group;
        r.aux = family;
        r.prop = u32::from(number);
        self.push(r);
        number
    }

    fn store_visit(&mut self, p: &mut Person, s: &mut Session, store: u8, order: u32, order_acc: u8) {
        if !p.has(F_PHONE) && self.chance(0.5) {
            p.flags |= F_PHONE; // the member desk asks for a phone
        }
        let mut r = self.emit(s, p, Kind::StoreVisit, store, (Src::None, 0, 0));
        r.props = Props::Visit;
        r.prop = order;
        r.aux = order_acc;
        self.push(r);
    }

    // ----- conversions -----------------------------------------------------------------------

    fn maybe_order(&mut self, p: &mut Person, s: &mut Session, base: f64, src: (Src, u32, u8)) {
        let mut rate = base * s.promo.sqrt();
        if p.orders > 0 {
            rate = (rate * self.profile.repurchase_factor).max(self.profile.p_repurchase * s.promo.sqrt());
        }
        if p.has(F_COUPON) {
            rate *= COUPON_ORDER_BOOST;
        }
        if p.has(F_LEAD) {
            rate *= 3.0;
        }
        if self.chance(rate) {
            self.order(p, s, None, src);
        }
    }

    fn order_account(&mut self, p: &Person) -> u8 {
        let origin_ch = self.channel(p.origin);
        let mut w = self.profile.order_weights;
        for (i, weight) in w.iter_mut().enumerate() {
            let ch = self.channel(i as u8);
            let ok = match ch {
                Channel::Douyin => origin_ch == Channel::Douyin || p.follows & 0b11 != 0,
                Channel::Kuaishou => origin_ch == Channel::Kuaishou,
                Channel::MiniProgram => p.has(F_WECHAT),
                _ => true,
            };
            if !ok {
                *weight = 0;
            }
        }
        if w.iter().sum::<u32>() == 0 {
            return ACC_EXTRA[0];
        }
        pick_weighted(&mut self.rng, &w) as u8
    }

    fn order(&mut self, p: &mut Person, s: &mut Session, forced: Option<u8>, src: (Src, u32, u8)) {
        let prof = self.profile;
        let acc = forced.unwrap_or_else(|| self.order_account(p));
        let ch = self.channel(acc);
        // Product and price.
        let weights: Vec<u32> = prof.skus.iter().map(|k| if p.orders == 0 { k.first } else { k.repeat }).collect();
        let total: u32 = weights.iter().sum();
        let mut x = self.rng.gen_range(0..total.max(1));
        let mut si = 0;
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                si = i;
                break;
            }
            x -= w;
        }
        let sku = prof.skus[si];
        let qty: u32 = if sku.price_fen < 30_000 {
            match self.rng.gen_range(0..100) {
                0..=74 => 1,
                75..=92 => 2,
                _ => 3,
            }
        } else {
            1
        };
        let mut price = u64::from(sku.price_fen) * u64::from(qty);
        if prof.negotiated_prices && price >= 1_000_000 {
            let factor = self.rng.gen_range(0.9..1.1);
            price = ((price as f64 * factor / 10_000.0).round() * 10_000.0) as u64;
        }
        if s.promo >= 2.0 && price >= 10_000 {
            price = price * 9 / 10; // 满减 on the peak day
        }
        let mut coupon_used = None;
        if p.has(F_COUPON) && self.chance(P_COUPON_USED) {
            let value = u64::from(COUPONS[p.coupon as usize % COUPONS.len()].1);
            if price > value * 2 {
                price -= value;
                coupon_used = Some(p.coupon);
            }
            p.flags &= !F_COUPON;
        }
        let amount = price.min(u64::from(u32::MAX)) as u32;
        // Identities: the channel's own, plus phone / member id when disclosed.
        let mut ids = self.ids_for(p, acc);
        if p.has(F_PHONE) {
            if self.chance(P_PHONE_REPEAT) {
                ids |= ID_PHONE;
            }
        } else {
            let reveal = if matches!(ch, Channel::Taobao | Channel::Jd) {
                P_PHONE_REVEAL_ORDER * 0.6
            } else {
                P_PHONE_REVEAL_ORDER
            };
            if self.chance(reveal) {
                ids |= ID_PHONE;
                p.flags |= F_PHONE;
            }
        }
        if ch == Channel::Offline {
            // The till asks for the member's phone.
            ids |= ID_PHONE;
            p.flags |= F_PHONE;
        }
        if matches!(ch, Channel::MiniProgram | Channel::Offline | Channel::App)
            && (p.has(F_USER) || self.chance(P_USER_REVEAL_ORDER))
        {
            ids |= ID_USER;
            p.flags |= F_USER;
        }
        self.orders += 1;
        let order_no = self.orders;
        let mut r = self.raw(s.t, s, p, Kind::OrderPaid, acc, ids);
        (r.src, r.src_id, r.src_aux) = src;
        r.amount = amount;
        r.props = Props::Order;
        r.prop = order_no;
        r.aux = si as u8 | (qty.min(15) as u8) << 4;
        self.push(r);
        let order_raw = r;
        self.tick(s, 1, 5);
        if let Some(coupon) = coupon_used {
            let mut c = self.raw(s.t, s, p, Kind::CouponRedeemed, acc, ids);
            c.props = Props::Coupon;
            c.aux = coupon | acc << 4;
            c.prop = order_no;
            self.push(c);
        }
        self.tick(s, 10, 120);
        // Refund (the whole order, later), or for a voucher, the store visit that redeems it.
        let p_refund = prof.p_refund * if s.promo >= 2.0 { 1.5 } else { 1.0 };
        if self.chance(p_refund) {
            let mean = if sku.voucher { 5.0 * DAY as f64 } else { 3.0 * DAY as f64 };
            let delay = HOUR + exp_sample(&mut self.rng, mean) as i64;
            let mut refund = order_raw;
            refund.seq = self.seq;
            self.seq += 1;
            refund.ts = order_raw.ts + delay - (order_raw.ts + delay).rem_euclid(SECOND);
            refund.kind = Kind::OrderRefunded;
            refund.src = Src::None;
            refund.ids = ids;
            self.push(refund);
        } else if sku.voucher {
            let delay = HOUR + exp_sample(&mut self.rng, 4.0 * DAY as f64) as i64;
            let day = self.cal.day_index(order_raw.ts + delay);
            let mut when = self.cal.days[day].start + self.cal.sample_time_of_day(&mut self.rng);
            if when <= order_raw.ts {
                when = order_raw.ts + delay - (order_raw.ts + delay).rem_euclid(SECOND);
            }
            let store = ACC_EXTRA[usize::from(p.staff) % 3];
            let store = if self.channel(store) == Channel::Offline { store } else { ACC_EXTRA[0] };
            let mut visit = Session { pi: s.pi, t: when, day: day as u32, promo: 1.0, ordered: false };
            self.store_visit(p, &mut visit, store, order_no, acc);
            let mut c = self.raw(visit.t, &visit, p, Kind::CouponRedeemed, store, self.ids_for(p, store));
            c.props = Props::Coupon;
            c.aux = COUPON_VOUCHER | acc << 4;
            c.prop = order_no;
            self.push(c);
        }
        p.orders = p.orders.saturating_add(1);
        p.bump(20);
        s.ordered = true;
    }

    fn after_session(&mut self, p: &mut Person, s: &mut Session, mode: Mode) {
        let prof = self.profile;
        self.tick(s, 30, 600);
        // WeCom add (引流到企微): followers, buyers, subscribers, group members, invitees.
        let candidate =
            p.follows != 0 || p.orders > 0 || p.has(F_MP_SUB) || p.has(F_INVITED) || p.fan_group != 0 || p.has(F_LEAD);
        if !p.has(F_WECOM) && !p.has(F_REVOKED) && candidate {
            let mut rate = prof.p_wecom_add * (1.0 + f64::from(p.interest) / 100.0);
            if s.ordered {
                rate += P_WECOM_ADD_AFTER_ORDER;
            }
            if mode == Mode::Live {
                rate *= 1.5;
            }
            if p.has(F_LEAD) {
                rate += 0.1;
            }
            if self.chance(rate) {
                self.wecom_add(p, s, mode);
            }
        }
        // Referral (裂变).
        let p_referral = if s.ordered {
            prof.p_referral * REFERRAL_AFTER_ORDER
        } else if mode == Mode::Private && (p.orders > 0 || p.interest >= 50) {
            prof.p_referral
        } else {
            0.0
        };
        if !p.has(F_REVOKED) && self.chance(p_referral) {
            self.referral(p, s);
        }
        // Churn.
        if p.follows != 0 {
            let p_unfollow = if p.interest < 10 { P_UNFOLLOW_BORED } else { P_UNFOLLOW };
            for acc in 0..10u8 {
                if p.follows & (1 << acc) != 0 && self.chance(p_unfollow) {
                    let r = self.emit(s, p, Kind::Unfollow, acc, (Src::None, 0, 0));
                    self.push(r);
                    p.follows &= !(1 << acc);
                }
            }
        }
        if p.fan_group != 0 && self.chance(P_GROUP_LEAVE) {
            let acc = self.live_account(p).unwrap_or(ACC_DOUYIN_MAIN);
            let mut r = self.emit(s, p, Kind::GroupLeave, acc, (Src::None, 0, 0));
            r.props = Props::Group;
            r.aux = if acc == ACC_KUAISHOU { 1 } else { 0 };
            r.prop = u32::from(p.fan_group);
            self.push(r);
            p.fan_group = 0;
        }
        if p.wx_group != 0 && self.chance(P_GROUP_LEAVE) {
            self.leave_wx_group(p, s);
        }
        if p.has(F_WECOM) && self.chance(P_WECOM_DELETE) {
            let r = self.emit(s, p, Kind::WecomDelete, Self::wecom_acc(p), (Src::None, 0, 0));
            self.push(r);
            p.flags &= !F_WECOM;
        }
        if p.has(F_MP_SUB) && self.chance(P_UNSUBSCRIBE) {
            let r = self.emit(s, p, Kind::Unsubscribe, ACC_WECHAT_MP, (Src::None, 0, 0));
            self.push(r);
            p.flags &= !F_MP_SUB;
        }
        // Consent (PIPL).
        let consent_acc = if p.has(F_WECOM) {
            Self::wecom_acc(p)
        } else if p.has(F_WECHAT) {
            ACC_MINI_PROGRAM
        } else {
            p.origin
        };
        if p.has(F_REVOKED) {
            if self.chance(P_CONSENT_REGRANT) {
                let mut r = self.emit(s, p, Kind::ConsentGranted, consent_acc, (Src::None, 0, 0));
                r.props = Props::Consent;
                self.push(r);
                p.flags &= !F_REVOKED;
            }
        } else if p.reachable() && self.chance(P_CONSENT_REVOKE) {
            let mut r = self.emit(s, p, Kind::ConsentRevoked, consent_acc, (Src::None, 0, 0));
            r.props = Props::Consent;
            self.push(r);
            p.flags |= F_REVOKED;
            if p.wx_group != 0 {
                self.leave_wx_group(p, s);
            }
        }
    }

    fn leave_wx_group(&mut self, p: &mut Person, s: &mut Session) {
        let mut r = self.emit(s, p, Kind::GroupLeave, ACC_WECOM_CORP, (Src::None, 0, 0));
        r.props = Props::Group;
        r.aux = 2;
        r.prop = u32::from(p.wx_group);
        self.push(r);
        p.wx_group = 0;
    }

    fn wecom_add(&mut self, p: &mut Person, s: &mut Session, mode: Mode) {
        let prof = self.profile;
        if !p.has(F_WECOM_EVER) && self.chance(prof.p_sales_app) {
            p.flags |= F_SALES;
        }
        let acc = Self::wecom_acc(p);
        let local_life =
            self.channel(ACC_EXTRA[0]) == Channel::Offline && self.channel(ACC_EXTRA[2]) == Channel::Offline;
        let state = if mode == Mode::Live {
            0
        } else if s.ordered {
            2
        } else if p.has(F_MP_SUB) && self.chance(0.5) {
            5
        } else if local_life && self.chance(0.4) {
            4
        } else if self.chance(0.5) {
            1
        } else {
            3
        };
        let src = if p.has(F_SALES) && self.chance(0.4) {
            (Src::Staff, u32::from(p.staff) + 1, 0)
        } else {
            (Src::Qr, 0, state)
        };
        let mut r = self.emit(s, p, Kind::WecomAdd, acc, src);
        if p.has(F_WECHAT) {
            r.ids |= ID_UNION;
        }
        self.push(r);
        p.flags |= F_WECOM | F_WECOM_EVER;
        p.bump(15);
        // The welcome message (欢迎语) goes out within a minute.
        let staff = (Src::Staff, u32::from(p.staff) + 1, 0);
        let r = self.emit(s, p, Kind::MessageOut, acc, staff);
        self.push(r);
        if p.wx_group == 0 && self.chance(P_WECOM_GROUP_INVITE) {
            self.tick(s, 60, 900);
            p.wx_group = self.join_group(p, s, ACC_WECOM_CORP, 2);
        }
    }

    fn referral(&mut self, p: &mut Person, s: &mut Session) {
        let acc = if p.has(F_WECHAT) {
            ACC_MINI_PROGRAM
        } else if p.has(F_WECOM) {
            Self::wecom_acc(p)
        } else {
            p.origin
        };
        // The invitee, a new person known by a member id from the start.
        let invitee_pi = self.people.len() as u32;
        let via_wechat = matches!(self.channel(acc), Channel::MiniProgram | Channel::Wecom) && p.has(F_WECHAT);
        let invitee_origin = if via_wechat { ACC_MINI_PROGRAM } else { p.origin };
        let mut q = Person {
            origin: invitee_origin,
            flags: F_USER | F_INVITED,
            interest: 35,
            staff: p.staff,
            ..Person::default()
        };
        if via_wechat || self.chance(self.profile.wechat_share) {
            q.flags |= F_WECHAT;
        }
        let mut r = self.emit(s, p, Kind::Referral, acc, (Src::None, 0, 0));
        r.ids |= ID_USER;
        r.props = Props::Referral;
        r.prop = invitee_pi;
        self.push(r);
        p.flags |= F_USER;
        p.bump(10);
        // The invitee's first steps, minutes to a day or two later.
        let first = s.t + 2 * MINUTE + exp_sample(&mut self.rng, 6.0 * HOUR as f64) as i64;
        let first = first - first.rem_euclid(SECOND);
        if first <= self.cal.end {
            let day = self.cal.day_index(first);
            let mut is = Session { pi: invitee_pi, t: first, day: day as u32, promo: 1.0, ordered: false };
            let mut r = self.emit(&mut is, &q, Kind::View, invitee_origin, (Src::Referrer, s.pi, 0));
            r.ids |= ID_USER;
            self.push(r);
            if self.chance(0.5) {
                self.claim_coupon(&mut q, &mut is, invitee_origin, COUPON_NEW, (Src::Referrer, s.pi, 0));
            }
            let start = is.t;
            self.people.push(q);
            self.schedule_next(invitee_pi, &q, start);
        } else {
            self.people.push(q);
        }
    }

    // ----- emission --------------------------------------------------------------------------

    /// The next event to deliver (with its duplicate / late marks), in delivery order.
    pub(crate) fn next_raw(&mut self) -> Option<(Raw, bool, bool)> {
        loop {
            let frontier = self.frontier();
            let ready = self.pending.peek().map(|Reverse(r)| r.ts).filter(|&ts| ts <= frontier);
            if let Some(ts) = ready {
                if let Some(Reverse((release, _, _, _))) = self.late.peek() {
                    if *release <= ts {
                        let Some(Reverse((_, _, dup, raw))) = self.late.pop() else { unreachable!() };
                        return Some((raw, dup, !dup));
                    }
                }
                let Some(Reverse(raw)) = self.pending.pop() else { unreachable!() };
                if raw.ts > self.cal.end {
                    continue;
                }
                if self.chance(P_LATE) {
                    let delay = self.rng.gen_range(2 * MINUTE..12 * HOUR);
                    self.late_seq += 1;
                    self.late.push(Reverse((raw.ts + delay, self.late_seq, false, raw)));
                    continue;
                }
                if self.chance(P_DUP) {
                    let delay = self.rng.gen_range(30 * SECOND..2 * HOUR);
                    self.late_seq += 1;
                    self.late.push(Reverse((raw.ts + delay, self.late_seq, true, raw)));
                }
                return Some((raw, false, false));
            }
            if frontier != i64::MAX {
                let session = self.sessions.peek().map_or(i64::MAX, |Reverse((t, _))| *t);
                if session <= frontier && session != i64::MAX {
                    let Some(Reverse((t, pi))) = self.sessions.pop() else { unreachable!() };
                    self.run_session(pi, t);
                } else {
                    self.load_arrivals();
                }
                continue;
            }
            let Reverse((_, _, dup, raw)) = self.late.pop()?;
            return Some((raw, dup, !dup));
        }
    }

    pub(crate) fn count(&mut self, raw: &Raw, duplicate: bool, late: bool, identities: u32) {
        let st = &mut self.stats;
        st.events += 1;
        if duplicate {
            st.duplicates += 1;
            return;
        }
        if late {
            st.late += 1;
        }
        st.type_counts[raw.kind as usize] += 1;
        if identities >= 2 {
            st.multi_identity_events += 1;
        }
        let p = &mut self.people[raw.person as usize];
        if p.emitted & E_ANY == 0 {
            p.emitted |= E_ANY;
            st.people += 1;
            if p.has(F_INVITED) {
                st.invited += 1;
            }
        }
        match raw.kind {
            Kind::Follow if p.emitted & E_FOLLOW == 0 => {
                p.emitted |= E_FOLLOW;
                st.followers += 1;
            }
            Kind::WecomAdd if p.emitted & E_WECOM == 0 => {
                p.emitted |= E_WECOM;
                st.wecom_contacts += 1;
            }
            Kind::OrderPaid => {
                st.orders += 1;
                st.revenue_fen += i64::from(raw.amount);
                p.emitted_orders = p.emitted_orders.saturating_add(1);
                match p.emitted_orders {
                    1 => st.buyers += 1,
                    2 => st.repeat_buyers += 1,
                    _ => {}
                }
            }
            Kind::OrderRefunded => {
                st.refunds += 1;
                st.refunded_fen += i64::from(raw.amount);
            }
            Kind::LiveGift => st.gifts_fen += i64::from(raw.amount),
            _ => {}
        }
    }

    /// Renders the next event into `out` (appending, no newline); false at the end.
    pub(crate) fn write_next(&mut self, out: &mut Vec<u8>) -> bool {
        let Some((raw, dup, late)) = self.next_raw() else { return false };
        let n = self.ctx.render(&raw, out);
        self.count(&raw, dup, late, n);
        true
    }
}

impl Iterator for Simulator {
    type Item = SimEvent;

    fn next(&mut self) -> Option<SimEvent> {
        let (raw, duplicate, late) = self.next_raw()?;
        let n = self.ctx.identity_count(&raw);
        self.count(&raw, duplicate, late, n);
        Some(SimEvent { ctx: Arc::clone(&self.ctx), raw, duplicate, late })
    }
}
