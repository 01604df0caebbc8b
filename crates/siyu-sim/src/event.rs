//! The compact in-flight form of a simulated event and its rendering to a native event line
//! (SPEC §3). Identity values are derived from `(seed, person)` by hashing, so nothing per person
//! needs storing beyond a few flag bits.

use std::sync::Arc;

use siyu_model::{Channel, EventType, Fen, Millis};

use crate::json::{push_compact_date, push_escaped, push_hex, push_padded, push_timestamp, push_u64, push_yuan};
use crate::profile::Profile;

/// An event type the simulator emits: the canonical ones plus the custom `store_visit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub(crate) enum Kind {
    Exposure,
    View,
    Like,
    Comment,
    Share,
    Follow,
    Unfollow,
    Subscribe,
    Unsubscribe,
    MessageIn,
    MessageOut,
    GroupJoin,
    GroupLeave,
    WecomAdd,
    WecomDelete,
    LiveWatch,
    LiveGift,
    OrderPaid,
    OrderRefunded,
    CouponClaimed,
    CouponRedeemed,
    Referral,
    LeadSubmit,
    ConsentGranted,
    ConsentRevoked,
    StoreVisit,
}

pub(crate) const KIND_COUNT: usize = 26;

pub(crate) const KIND_NAMES: [&str; KIND_COUNT] = [
    "exposure",
    "view",
    "like",
    "comment",
    "share",
    "follow",
    "unfollow",
    "subscribe",
    "unsubscribe",
    "message_in",
    "message_out",
    "group_join",
    "group_leave",
    "wecom_add",
    "wecom_delete",
    "live_watch",
    "live_gift",
    "order_paid",
    "order_refunded",
    "coupon_claimed",
    "coupon_redeemed",
    "referral",
    "lead_submit",
    "consent_granted",
    "consent_revoked",
    "store_visit",
];

impl Kind {
    pub fn name(self) -> &'static str {
        KIND_NAMES[self as usize]
    }

    pub fn known(self) -> Option<EventType> {
        EventType::parse(self.name())
    }
}

/// Where the event came from inside its channel (rendered as `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Src {
    None,
    /// `video` / `v-YYYYMMDD-n`: `id` = day index, `aux` = n.
    Video,
    /// `live` / `live-YYYYMMDD`: `id` = day index.
    Live,
    /// `qr` / `state-<name>` (WeCom contact-way state): `aux` indexes [`QR_STATES`].
    Qr,
    /// `staff` / `staff-007`: `id` = staff number.
    Staff,
    /// `article` / `art-YYYYMMDD`: `id` = day index.
    Article,
    /// `referral` / the referrer's member id: `id` = referrer person.
    Referrer,
    /// `ad` / `sem-plan-07`: `aux` = plan.
    Ad,
    /// `search` / `kw-07`: `aux` = keyword.
    Search,
    /// `campaign` / `camp-YYYYMMDD`: `id` = day index.
    Campaign,
}

/// WeCom contact-way `state` values (渠道活码): where the QR code was shown.
pub(crate) const QR_STATES: [&str; 6] =
    ["live-card", "homepage", "parcel-card", "video-pin", "store-poster", "mp-menu"];

/// What `properties` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Props {
    None,
    /// `{"group_id": …}`: `aux` = family ([`GROUP_FAMILIES`]), `prop` = group number.
    Group,
    /// `{"order_id": …, "sku": …, "quantity": n}`: `prop` = order number, `aux` = sku | qty << 4.
    Order,
    /// `{"coupon_id": …, "order_id": …}`: `aux` = coupon | order account << 4, `prop` = order
    /// number (0: none).
    Coupon,
    /// `{"invitee": <user id>}`: `prop` = invitee person.
    Referral,
    /// `{"duration_s": n}`.
    Watch,
    /// `{"gift": name, "count": 1}`: `aux` = gift index.
    Gift,
    /// `{"form": name}`.
    Lead,
    /// `{"purpose": "marketing"}`.
    Consent,
    /// `{"order_id": …}` of the voucher redeemed at a store visit (`aux` = the order's account),
    /// or `{}`.
    Visit,
}

/// Group families: Douyin fan groups (粉丝群), Kuaishou fan groups, WeCom customer groups.
pub(crate) const GROUP_FAMILIES: [&str; 3] = ["fans-", "ks-fans-", "wx-vip-"];

/// Coupon templates: (id, value in fen). The last one is a voucher bought as an order (团购券).
pub(crate) const COUPONS: [(&str, u32); 6] = [
    ("cp-new-10", 1_000),
    ("cp-live-20", 2_000),
    ("cp-vip-30", 3_000),
    ("cp-festival-50", 5_000),
    ("cp-group-15", 1_500),
    ("voucher", 0),
];
pub(crate) const COUPON_NEW: u8 = 0;
pub(crate) const COUPON_LIVE: u8 = 1;
pub(crate) const COUPON_VIP: u8 = 2;
pub(crate) const COUPON_FESTIVAL: u8 = 3;
pub(crate) const COUPON_GROUP: u8 = 4;
pub(crate) const COUPON_VOUCHER: u8 = 5;

/// Identity bits of an event.
pub(crate) const ID_NATIVE: u8 = 1;
pub(crate) const ID_UNION: u8 = 2;
pub(crate) const ID_ORIGIN: u8 = 4;
pub(crate) const ID_PHONE: u8 = 8;
pub(crate) const ID_USER: u8 = 16;

/// One simulated event before rendering: ~40 bytes, ordered by (timestamp, sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Raw {
    pub ts: i64,
    pub seq: u64,
    pub person: u32,
    pub amount: u32,
    pub src_id: u32,
    pub prop: u32,
    pub kind: Kind,
    pub account: u8,
    pub origin: u8,
    pub ids: u8,
    pub src: Src,
    pub src_aux: u8,
    pub props: Props,
    pub aux: u8,
}

/// What rendering needs besides the event: the tenant's label, the identity salt, the calendar's
/// first day and the industry tables.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub label: String,
    /// `{"message_id":"<escaped label>-`
    pub head: Vec<u8>,
    pub salt: u64,
    pub order_base: u64,
    pub first_day: i64,
    pub profile: &'static Profile,
}

pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Ctx {
    pub fn new(label: &str, seed: u64, first_day: i64, profile: &'static Profile) -> Ctx {
        // message_id must stay under 200 bytes: the label is cut to 64.
        let mut cut = label.len().min(64);
        while !label.is_char_boundary(cut) {
            cut -= 1;
        }
        let label = if label[..cut].trim().is_empty() { "sim" } else { &label[..cut] };
        let mut head = b"{\"message_id\":\"".to_vec();
        push_escaped(&mut head, label);
        head.push(b'-');
        let salt = mix(seed ^ 0x5159_5553_494d_0001);
        Ctx {
            label: label.to_string(),
            head,
            salt,
            order_base: (salt % 9_000 + 1_000) * 100_000_000,
            first_day,
            profile,
        }
    }

    fn hash(&self, person: u32, kind: u64) -> u64 {
        mix(self.salt ^ mix((u64::from(person) << 8) | kind))
    }

    fn channel(&self, account: u8) -> Channel {
        self.profile.accounts[account as usize].channel
    }

    /// Writes one identity `"kind":"value"` of `person` on `channel`; false if the channel has none.
    fn push_native(&self, out: &mut Vec<u8>, channel: Channel, person: u32) -> Option<&'static str> {
        let (kind, prefix, salt): (&'static str, &[u8], u64) = match channel {
            Channel::Douyin => ("douyin_open_id", b"_000", 1),
            Channel::Kuaishou => ("kuaishou_open_id", b"f", 2),
            Channel::Wecom => ("wecom_external_userid", b"wm", 3),
            Channel::WechatMp => ("wechat_openid", b"oMp", 4),
            Channel::MiniProgram => ("wechat_openid", b"oMn", 5),
            Channel::Taobao => ("taobao_ouid", b"AAH", 7),
            Channel::Jd => ("jd_pin", b"jd_", 8),
            Channel::Web => {
                out.extend_from_slice(b"\"anonymous_id\":\"");
                let a = self.hash(person, 9);
                let b = self.hash(person, 10);
                push_hex(out, a >> 32, 8);
                out.push(b'-');
                push_hex(out, a >> 16, 4);
                out.extend_from_slice(b"-4");
                push_hex(out, a, 3);
                out.extend_from_slice(b"-a");
                push_hex(out, b >> 48, 3);
                out.push(b'-');
                push_hex(out, b, 12);
                out.push(b'"');
                return Some("anonymous_id");
            }
            Channel::App => {
                self.push_user(out, person);
                return Some("user_id");
            }
            _ => return None,
        };
        out.push(b'"');
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(prefix);
        push_hex(out, self.hash(person, salt), 16);
        out.push(b'"');
        Some(kind)
    }

    fn push_union(&self, out: &mut Vec<u8>, person: u32) {
        out.extend_from_slice(b"\"wechat_unionid\":\"oU");
        push_hex(out, self.hash(person, 6), 16);
        push_hex(out, self.hash(person, 11), 8);
        out.push(b'"');
    }

    /// The member id (user_id): `M` and nine digits, unique per person (an affine bijection).
    pub fn user_digits(&self, person: u32) -> u64 {
        (u64::from(person) * 387_420_489 + self.salt % 1_000_000_000) % 1_000_000_000
    }

    fn push_user(&self, out: &mut Vec<u8>, person: u32) {
        out.extend_from_slice(b"\"user_id\":\"M");
        push_padded(out, self.user_digits(person), 9);
        out.push(b'"');
    }

    pub fn push_user_value(&self, out: &mut Vec<u8>, person: u32) {
        out.push(b'M');
        push_padded(out, self.user_digits(person), 9);
    }

    /// A mobile number unique per person, written in one of the formats people really type.
    fn push_phone(&self, out: &mut Vec<u8>, person: u32, style: u64) {
        const SECOND: [u8; 5] = *b"35789";
        let rest = (u64::from(person) * 48_271 + (self.salt >> 20) % 1_000_000_000) % 1_000_000_000;
        let second = SECOND[(self.hash(person, 12) % 5) as usize];
        let mut digits = [0u8; 11];
        digits[0] = b'1';
        digits[1] = second;
        let mut r = rest;
        for i in (2..11).rev() {
            digits[i] = b'0' + (r % 10) as u8;
            r /= 10;
        }
        out.extend_from_slice(b"\"phone\":\"");
        match style % 20 {
            0..=7 => out.extend_from_slice(&digits),
            8..=12 => {
                out.extend_from_slice(&digits[..3]);
                out.push(b'-');
                out.extend_from_slice(&digits[3..7]);
                out.push(b'-');
                out.extend_from_slice(&digits[7..]);
            }
            13..=16 => {
                out.extend_from_slice(b"+86 ");
                out.extend_from_slice(&digits);
            }
            17..=18 => {
                out.extend_from_slice(b"+86 ");
                out.extend_from_slice(&digits[..3]);
                out.push(b' ');
                out.extend_from_slice(&digits[3..7]);
                out.push(b' ');
                out.extend_from_slice(&digits[7..]);
            }
            _ => {
                out.extend_from_slice(b"86");
                out.extend_from_slice(&digits);
            }
        }
        out.push(b'"');
    }

    /// Writes the identities object's members; returns how many were written.
    fn push_identities(&self, out: &mut Vec<u8>, e: &Raw) -> u32 {
        let channel = self.channel(e.account);
        let mut n = 0u32;
        let sep = |out: &mut Vec<u8>, n: &mut u32| {
            if *n > 0 {
                out.push(b',');
            }
            *n += 1;
        };
        let mut native_kind = None;
        if e.ids & ID_NATIVE != 0 && channel_has_native(channel) {
            sep(out, &mut n);
            native_kind = self.push_native(out, channel, e.person);
        }
        if e.ids & ID_ORIGIN != 0 {
            let origin = self.channel(e.origin);
            let clash = native_kind.is_some() && (origin == channel || native_kind == Some(native_kind_name(origin)));
            if !clash && channel_has_native(origin) {
                sep(out, &mut n);
                native_kind = native_kind.or(self.push_native(out, origin, e.person));
            }
        }
        if e.ids & ID_UNION != 0 {
            sep(out, &mut n);
            self.push_union(out, e.person);
        }
        let want_phone = e.ids & ID_PHONE != 0;
        let mut want_user = e.ids & ID_USER != 0 && native_kind != Some("user_id");
        if n == 0 && !want_phone && !want_user {
            // Never leave an event without an identity.
            want_user = true;
        }
        if want_phone {
            sep(out, &mut n);
            self.push_phone(out, e.person, mix(e.seq));
        }
        if want_user {
            sep(out, &mut n);
            self.push_user(out, e.person);
        }
        n
    }

    /// How many identities `render` writes for this event.
    pub fn identity_count(&self, e: &Raw) -> u32 {
        let mut scratch = Vec::with_capacity(128);
        self.push_identities(&mut scratch, e)
    }

    fn push_date_of(&self, out: &mut Vec<u8>, day_index: u32) {
        push_compact_date(out, self.first_day + i64::from(day_index));
    }

    fn push_order_id(&self, out: &mut Vec<u8>, channel: Channel, order: u32) {
        out.extend_from_slice(match channel {
            Channel::Douyin => b"DY",
            Channel::Kuaishou => b"KS",
            Channel::Taobao => b"TB",
            Channel::Jd => b"JD",
            Channel::MiniProgram | Channel::WechatMp => b"WX",
            Channel::Offline => b"PS",
            Channel::App => b"AP",
            _ => b"OD",
        });
        push_u64(out, self.order_base + u64::from(order));
    }

    /// Appends one NDJSON line (without the newline). Returns the number of identities.
    pub fn render(&self, e: &Raw, out: &mut Vec<u8>) -> u32 {
        let acc = self.profile.accounts[e.account as usize];
        out.extend_from_slice(&self.head);
        push_hex(out, e.seq, 10);
        out.extend_from_slice(b"\",\"type\":\"");
        out.extend_from_slice(e.kind.name().as_bytes());
        out.extend_from_slice(b"\",\"channel\":\"");
        out.extend_from_slice(acc.channel.as_str().as_bytes());
        out.extend_from_slice(b"\",\"account\":\"");
        out.extend_from_slice(acc.name.as_bytes());
        out.extend_from_slice(b"\",\"identities\":{");
        let n = self.push_identities(out, e);
        out.extend_from_slice(b"},\"timestamp\":\"");
        push_timestamp(out, e.ts);
        out.push(b'"');
        if matches!(e.kind, Kind::OrderPaid | Kind::OrderRefunded | Kind::LiveGift) {
            out.extend_from_slice(b",\"amount\":");
            push_yuan(out, u64::from(e.amount));
            out.extend_from_slice(b",\"currency\":\"CNY\"");
        }
        if e.src != Src::None {
            out.extend_from_slice(b",\"source\":{\"kind\":\"");
            match e.src {
                Src::None => {}
                Src::Video => {
                    out.extend_from_slice(b"video\",\"id\":\"v-");
                    self.push_date_of(out, e.src_id);
                    out.push(b'-');
                    push_u64(out, u64::from(e.src_aux));
                }
                Src::Live => {
                    out.extend_from_slice(b"live\",\"id\":\"live-");
                    self.push_date_of(out, e.src_id);
                }
                Src::Qr => {
                    out.extend_from_slice(b"qr\",\"id\":\"state-");
                    out.extend_from_slice(QR_STATES[e.src_aux as usize % QR_STATES.len()].as_bytes());
                }
                Src::Staff => {
                    out.extend_from_slice(b"staff\",\"id\":\"staff-");
                    push_padded(out, u64::from(e.src_id), 3);
                }
                Src::Article => {
                    out.extend_from_slice(b"article\",\"id\":\"art-");
                    self.push_date_of(out, e.src_id);
                }
                Src::Referrer => {
                    out.extend_from_slice(b"referral\",\"id\":\"");
                    self.push_user_value(out, e.src_id);
                }
                Src::Ad => {
                    out.extend_from_slice(b"ad\",\"id\":\"sem-plan-");
                    push_padded(out, u64::from(e.src_aux), 2);
                }
                Src::Search => {
                    out.extend_from_slice(b"search\",\"id\":\"kw-");
                    push_padded(out, u64::from(e.src_aux), 2);
                }
                Src::Campaign => {
                    out.extend_from_slice(b"campaign\",\"id\":\"camp-");
                    self.push_date_of(out, e.src_id);
                }
            }
            out.extend_from_slice(b"\"}");
        }
        match e.props {
            Props::None => {}
            Props::Group => {
                out.extend_from_slice(b",\"properties\":{\"group_id\":\"");
                out.extend_from_slice(GROUP_FAMILIES[e.aux as usize % 3].as_bytes());
                push_padded(out, u64::from(e.prop), 2);
                out.extend_from_slice(b"\"}");
            }
            Props::Order => {
                out.extend_from_slice(b",\"properties\":{\"order_id\":\"");
                self.push_order_id(out, acc.channel, e.prop);
                out.extend_from_slice(b"\",\"sku\":\"");
                let sku = self.profile.skus[(e.aux & 0xf) as usize % self.profile.skus.len()];
                out.extend_from_slice(sku.code.as_bytes());
                out.extend_from_slice(b"\",\"quantity\":");
                push_u64(out, u64::from((e.aux >> 4).max(1)));
                out.push(b'}');
            }
            Props::Coupon => {
                out.extend_from_slice(b",\"properties\":{\"coupon_id\":\"");
                out.extend_from_slice(COUPONS[(e.aux & 0xf) as usize % COUPONS.len()].0.as_bytes());
                out.push(b'"');
                if e.prop != 0 {
                    out.extend_from_slice(b",\"order_id\":\"");
                    self.push_order_id(out, self.channel(e.aux >> 4), e.prop);
                    out.push(b'"');
                }
                out.push(b'}');
            }
            Props::Referral => {
                out.extend_from_slice(b",\"properties\":{\"invitee\":\"");
                self.push_user_value(out, e.prop);
                out.extend_from_slice(b"\"}");
            }
            Props::Watch => {
                out.extend_from_slice(b",\"properties\":{\"duration_s\":");
                push_u64(out, u64::from(e.prop));
                out.push(b'}');
            }
            Props::Gift => {
                let g = self.profile.gifts[e.aux as usize % self.profile.gifts.len()];
                out.extend_from_slice(b",\"properties\":{\"gift\":\"");
                out.extend_from_slice(g.name.as_bytes());
                out.extend_from_slice(b"\",\"count\":1}");
            }
            Props::Lead => {
                out.extend_from_slice(b",\"properties\":{\"form\":\"");
                out.extend_from_slice(self.profile.lead_form.as_bytes());
                out.extend_from_slice(b"\"}");
            }
            Props::Consent => {
                out.extend_from_slice(b",\"properties\":{\"purpose\":\"marketing\"}");
            }
            Props::Visit => {
                out.extend_from_slice(b",\"properties\":{");
                if e.prop != 0 {
                    out.extend_from_slice(b"\"order_id\":\"");
                    self.push_order_id(out, self.channel(e.aux), e.prop);
                    out.push(b'"');
                }
                out.push(b'}');
            }
        }
        out.push(b'}');
        n
    }
}

fn channel_has_native(channel: Channel) -> bool {
    !matches!(channel, Channel::Offline | Channel::Youzan | Channel::Other)
}

fn native_kind_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Douyin => "douyin_open_id",
        Channel::Kuaishou => "kuaishou_open_id",
        Channel::Wecom => "wecom_external_userid",
        Channel::WechatMp | Channel::MiniProgram => "wechat_openid",
        Channel::Taobao => "taobao_ouid",
        Channel::Jd => "jd_pin",
        Channel::Web => "anonymous_id",
        Channel::App => "user_id",
        _ => "",
    }
}

/// One simulated event, as the [`Simulator`](crate::Simulator) yields it: owned (it shares the
/// tenant's rendering context through an `Arc`), cheap to move, rendered on demand.
#[derive(Debug, Clone)]
pub struct SimEvent {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) raw: Raw,
    /// A re-send of an event already yielded (same message id, same bytes).
    pub duplicate: bool,
    /// Yielded later than its timestamp's place in the stream (late arrival).
    pub late: bool,
}

impl SimEvent {
    /// The event type's name (`order_paid`, …, or the custom `store_visit`).
    pub fn event_type(&self) -> &'static str {
        self.raw.kind.name()
    }

    /// The canonical type, `None` for custom types.
    pub fn known_type(&self) -> Option<EventType> {
        self.raw.kind.known()
    }

    pub fn channel(&self) -> Channel {
        self.ctx.channel(self.raw.account)
    }

    /// The channel account (矩阵号).
    pub fn account(&self) -> &'static str {
        self.ctx.profile.accounts[self.raw.account as usize].name
    }

    pub fn timestamp(&self) -> Millis {
        Millis(self.raw.ts)
    }

    /// Money carried (orders, refunds, live gifts).
    pub fn amount(&self) -> Option<Fen> {
        matches!(self.raw.kind, Kind::OrderPaid | Kind::OrderRefunded | Kind::LiveGift)
            .then_some(Fen(i64::from(self.raw.amount)))
    }

    /// The simulator's ground truth: which person this is (dense, from 0). Identity resolution
    /// can be scored against it; it is not part of the line.
    pub fn person(&self) -> u32 {
        self.raw.person
    }

    /// The per-stream sequence number inside the message id.
    pub fn sequence(&self) -> u64 {
        self.raw.seq
    }

    pub fn message_id(&self) -> String {
        format!("{}-{:010x}", self.ctx.label, self.raw.seq)
    }

    /// Appends the NDJSON line (no newline) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.ctx.render(&self.raw, out);
    }

    /// One NDJSON line, without the newline.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(320);
        self.write_json(&mut out);
        // Everything rendered is UTF-8: ASCII plus the escaped label and static UTF-8 names.
        String::from_utf8(out).unwrap_or_default()
    }
}
