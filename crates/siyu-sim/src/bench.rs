//! A simpler, faster generator for the import benchmark: exactly N valid native events over M
//! people, with a realistic type mix, roughly in time order, and some multi-identity events so
//! identity resolution has merges to do. No per-person state: everything about a person is
//! derived from a hash of its number.

use std::collections::VecDeque;
use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use siyu_model::{Channel, Industry, Millis};

use crate::calendar::{DAY, LOCAL_OFFSET, SECOND};
use crate::event::*;
use crate::profile::*;

/// The benchmark data ends at 2026-11-12 00:00 Asia/Shanghai (after 双11) and spans 180 days.
pub const BENCH_END: Millis = Millis(1_794_412_800_000);
const BENCH_DAYS: i64 = 180;

/// Event type mix of the benchmark (per 10 000), roughly what a consumer brand's stream holds.
const MIX: [(Kind, u32); 25] = [
    (Kind::Exposure, 2_800),
    (Kind::View, 1_800),
    (Kind::Like, 900),
    (Kind::Comment, 250),
    (Kind::Share, 120),
    (Kind::Follow, 300),
    (Kind::Unfollow, 50),
    (Kind::Subscribe, 80),
    (Kind::Unsubscribe, 20),
    (Kind::MessageIn, 400),
    (Kind::MessageOut, 600),
    (Kind::GroupJoin, 150),
    (Kind::GroupLeave, 40),
    (Kind::WecomAdd, 150),
    (Kind::WecomDelete, 20),
    (Kind::LiveWatch, 800),
    (Kind::LiveGift, 100),
    (Kind::OrderPaid, 300),
    (Kind::OrderRefunded, 30),
    (Kind::CouponClaimed, 200),
    (Kind::CouponRedeemed, 80),
    (Kind::Referral, 30),
    (Kind::LeadSubmit, 50),
    (Kind::ConsentGranted, 30),
    (Kind::ConsentRevoked, 10),
];

/// Writes exactly `events` native-event lines about `people` people (for `siyu import`
/// benchmarks: 10 M events / 1 M profiles). Deterministic for a seed.
pub fn generate_bench_dataset(events: u64, people: u32, seed: u64, mut out: impl Write) -> std::io::Result<()> {
    let people = people.max(1);
    let profile = profile(Industry::ConsumerGoods);
    let end = BENCH_END.0;
    let start = end - BENCH_DAYS * DAY;
    let first_day = (start + LOCAL_OFFSET).div_euclid(DAY);
    let ctx = Ctx::new(&format!("bench{seed}"), seed, first_day, profile);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6265_6e63_6800_0001);
    let mix_total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let span = end - start - 10 * 60 * SECOND;
    let hot = (people / 10).max(1);
    let mut orders: VecDeque<(u32, u32, u32, u8, u8)> = VecDeque::with_capacity(4096);
    let mut order_no = 0u32;
    let mut buf = Vec::with_capacity(1 << 18);
    for i in 0..events {
        let base = start + ((i128::from(span) * i128::from(i)) / i128::from(events.max(1))) as i64;
        let ts = base - base.rem_euclid(SECOND) + rng.gen_range(0..300) * SECOND;
        // A tenth of the people make 30 % of the events.
        let person = if rng.gen_ratio(3, 10) { rng.gen_range(0..hot) } else { rng.gen_range(0..people) };
        let h = mix(seed ^ mix(u64::from(person)));
        let origin = origin_of(profile, h);
        let wechat = (h >> 20) % 100 < 55;
        let mut x = rng.gen_range(0..mix_total);
        let mut kind = Kind::Exposure;
        for (k, w) in MIX {
            if x < w {
                kind = k;
                break;
            }
            x -= w;
        }
        if kind == Kind::OrderRefunded && orders.is_empty() {
            kind = Kind::OrderPaid;
        }
        let origin_ch = profile.accounts[origin as usize].channel;
        let public_acc =
            if matches!(origin_ch, Channel::Douyin | Channel::Kuaishou) { origin } else { ACC_DOUYIN_MAIN };
        let wecom_acc = if (h >> 30) % 10 < 4 { ACC_WECOM_SALES } else { ACC_WECOM_CORP };
        let day_index = ((ts + LOCAL_OFFSET).div_euclid(DAY) - first_day) as u32;
        let mut raw = Raw {
            ts,
            seq: i + 1,
            person,
            amount: 0,
            src_id: 0,
            prop: 0,
            kind,
            account: origin,
            origin,
            ids: ID_NATIVE,
            src: Src::None,
            src_aux: 0,
            props: Props::None,
            aux: 0,
        };
        let phone_share = match kind {
            Kind::OrderPaid | Kind::LeadSubmit => 40,
            Kind::ConsentGranted => 60,
            _ => 3,
        };
        match kind {
            Kind::Exposure | Kind::View | Kind::Like | Kind::Comment | Kind::Share | Kind::Follow | Kind::Unfollow => {
                raw.account = if matches!(origin_ch, Channel::Taobao | Channel::Jd | Channel::Web | Channel::WechatMp)
                    && matches!(kind, Kind::Exposure | Kind::View)
                {
                    origin
                } else {
                    public_acc
                };
                raw.src = Src::Video;
                raw.src_id = day_index;
                raw.src_aux = (h % 4) as u8 + 1;
            }
            Kind::LiveWatch | Kind::LiveGift => {
                raw.account = if origin == ACC_KUAISHOU { ACC_KUAISHOU } else { ACC_DOUYIN_MAIN };
                raw.src = Src::Live;
                raw.src_id = day_index;
                if kind == Kind::LiveGift {
                    let gi = rng.gen_range(0..profile.gifts.len().min(4));
                    raw.amount = profile.gifts[gi].fen;
                    raw.props = Props::Gift;
                    raw.aux = gi as u8;
                } else {
                    raw.props = Props::Watch;
                    raw.prop = rng.gen_range(10..3600);
                }
            }
            Kind::Subscribe | Kind::Unsubscribe => raw.account = ACC_WECHAT_MP,
            Kind::MessageIn | Kind::MessageOut | Kind::WecomAdd | Kind::WecomDelete => {
                raw.account = wecom_acc;
                raw.src = if kind == Kind::WecomAdd { Src::Qr } else { Src::Staff };
                raw.src_id = (h >> 40) as u32 % 16 + 1;
                raw.src_aux = (h >> 44) as u8 % 6;
                if kind == Kind::WecomAdd && wechat {
                    raw.ids |= ID_UNION;
                }
            }
            Kind::GroupJoin | Kind::GroupLeave => {
                let wx = (h >> 8) & 1 == 0;
                raw.account = if wx { ACC_WECOM_CORP } else { public_acc };
                raw.props = Props::Group;
                raw.aux = if wx {
                    2
                } else if public_acc == ACC_KUAISHOU {
                    1
                } else {
                    0
                };
                raw.prop = (h >> 12) as u32 % 40 + 1;
            }
            Kind::OrderPaid => {
                let acc = match origin_ch {
                    Channel::Douyin | Channel::Kuaishou | Channel::Taobao | Channel::Jd => origin,
                    _ if wechat => ACC_MINI_PROGRAM,
                    _ => 7,
                };
                let si = rng.gen_range(0..profile.skus.len());
                let qty = if rng.gen_ratio(1, 5) { 2 } else { 1 };
                order_no += 1;
                raw.account = acc;
                raw.amount = profile.skus[si].price_fen * qty;
                raw.props = Props::Order;
                raw.prop = order_no;
                raw.aux = si as u8 | (qty as u8) << 4;
                if orders.len() == 4096 {
                    orders.pop_front();
                }
                orders.push_back((order_no, person, raw.amount, acc, raw.aux));
            }
            Kind::OrderRefunded => {
                // The oldest unrefunded recent order: refunds always follow their order.
                let Some((no, who, amount, acc, aux)) = orders.pop_front() else { unreachable!() };
                raw.person = who;
                let hw = mix(seed ^ mix(u64::from(who)));
                raw.origin = origin_of(profile, hw);
                raw.account = acc;
                raw.amount = amount;
                raw.props = Props::Order;
                raw.prop = no;
                raw.aux = aux;
            }
            Kind::CouponClaimed
            | Kind::CouponRedeemed
            | Kind::Referral
            | Kind::ConsentGranted
            | Kind::ConsentRevoked => {
                raw.account = if wechat { ACC_MINI_PROGRAM } else { wecom_acc };
                match kind {
                    Kind::Referral => {
                        raw.ids |= ID_USER;
                        raw.props = Props::Referral;
                        raw.prop = rng.gen_range(0..people);
                    }
                    Kind::CouponClaimed | Kind::CouponRedeemed => {
                        raw.props = Props::Coupon;
                        raw.aux = (h % 5) as u8;
                    }
                    _ => raw.props = Props::Consent,
                }
            }
            Kind::LeadSubmit => {
                raw.account = if origin_ch == Channel::Web { origin } else { wecom_acc };
                raw.props = Props::Lead;
                raw.ids |= ID_PHONE;
            }
            Kind::StoreVisit => {}
        }
        let ch = profile.accounts[raw.account as usize].channel;
        if matches!(ch, Channel::WechatMp | Channel::MiniProgram) {
            raw.ids |= ID_UNION;
            if kind == Kind::OrderPaid && rng.gen_ratio(1, 2) {
                raw.ids |= ID_USER;
            }
        }
        if rng.gen_range(0..100) < phone_share {
            raw.ids |= ID_PHONE;
        }
        ctx.render(&raw, &mut buf);
        buf.push(b'\n');
        if buf.len() >= (1 << 18) - 1024 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    out.flush()
}

fn origin_of(profile: &Profile, h: u64) -> u8 {
    let total: u32 = profile.origin_weights.iter().sum();
    let mut x = (h % u64::from(total)) as u32;
    for (idx, &w) in profile.origin_weights.iter().enumerate() {
        if x < w {
            return idx as u8;
        }
        x -= w;
    }
    0
}
