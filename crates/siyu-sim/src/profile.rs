//! The four simulated merchants (SPEC §5.5 industries): their matrix accounts (矩阵号), products,
//! live schedule and the conversion rates that make each look like its industry.
//!
//! The numbers are per *session* (one visit of one person: a video watched, a live room entered,
//! a WeCom chat) unless they say otherwise; the comments give the cumulative rate they produce
//! over a 90-day window, which is what operators quote (and what the tests check roughly).

use siyu_model::{Channel, Industry};

/// A channel account (矩阵号) of the merchant. Every industry has ten, at fixed positions, so the
/// simulator can name roles by index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Account {
    pub channel: Channel,
    pub name: &'static str,
}

/// Douyin main account: the brand's enterprise account (企业号), where the live streams happen.
pub(crate) const ACC_DOUYIN_MAIN: u8 = 0;
/// Second Douyin account of the matrix: an outlet account or the creator/consultant IP account.
pub(crate) const ACC_DOUYIN_SECOND: u8 = 1;
/// Kuaishou account (lives on fewer days than Douyin).
pub(crate) const ACC_KUAISHOU: u8 = 2;
/// WeCom corp app (客服/运营): QR-code adds, SOP broadcasts, customer groups.
pub(crate) const ACC_WECOM_CORP: u8 = 3;
/// WeCom sales app (导购/顾问): staff-owned contacts and 1v1 follow-up.
pub(crate) const ACC_WECOM_SALES: u8 = 4;
/// WeChat official account (公众号): subscribe / articles.
pub(crate) const ACC_WECHAT_MP: u8 = 5;
/// The mini-program store / booking app (小程序): member registration, orders, referral (裂变).
pub(crate) const ACC_MINI_PROGRAM: u8 = 6;
/// Positions 7..=9 are industry-specific: marketplaces (taobao, jd), offline stores, app, web site.
pub(crate) const ACC_EXTRA: [u8; 3] = [7, 8, 9];

/// A product with its list price.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sku {
    pub code: &'static str,
    pub price_fen: u32,
    /// Relative weight for a first order and for a repeat order.
    pub first: u32,
    pub repeat: u32,
    /// A voucher (团购券/代金券) redeemed later at a store (local life).
    pub voucher: bool,
}

/// A live gift (打赏) and its price.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gift {
    pub name: &'static str,
    pub fen: u32,
    pub weight: u32,
}

/// Everything industry-specific.
#[derive(Debug)]
pub(crate) struct Profile {
    pub accounts: [Account; 10],
    /// Where newly reached people come from (weights by account index; 0 = never).
    pub origin_weights: [u32; 10],
    /// Where orders are placed (weights by account index; filtered by what the person can use).
    pub order_weights: [u32; 10],
    pub skus: &'static [Sku],
    /// Big-ticket prices are negotiated: ±10 %, rounded to 100 yuan.
    pub negotiated_prices: bool,
    pub gifts: &'static [Gift],
    /// Probability of an order in a session of someone only reached in the public domain
    /// (impulse buys from a video / live room).
    pub p_order_public: f64,
    /// … of a follower (not yet in the private domain).
    pub p_order_follower: f64,
    /// … in a private-domain session (WeCom chat, group, mini-program, article).
    pub p_order_private: f64,
    /// Multiplier on the above for people who already bought (repurchase, 复购).
    pub repurchase_factor: f64,
    /// Floor of a buyer's order probability per session (replenishment: the jar runs empty, the
    /// membership runs out), whatever the session's kind.
    pub p_repurchase: f64,
    /// Share of orders refunded (refund = whole order, same order id).
    pub p_refund: f64,
    /// Probability of a gift (打赏) in a live session, for followers and for passers-by.
    pub p_gift_fan: f64,
    pub p_gift_other: f64,
    /// Probability of a lead form (留资) in an engaged session (follower or private domain).
    pub p_lead: f64,
    pub lead_form: &'static str,
    /// Probability that a buyer / fan brings a friend in a private-domain session (裂变).
    pub p_referral: f64,
    /// Probability that a follower or buyer adds the merchant on WeCom in a session.
    pub p_wecom_add: f64,
    /// Share of WeCom adds owned by a sales/advisor account rather than the corp app.
    pub p_sales_app: f64,
    /// Mean days between sessions of engaged people, and between public re-exposures.
    pub engaged_gap_days: f64,
    pub public_gap_days: f64,
    /// Live streams: on which weekdays (Mon = 0), local start minute and length.
    pub live_weekdays: [bool; 7],
    pub live_start_min: u32,
    pub live_len_min: u32,
    /// Probability that an engaged person's next session is the next live stream (开播提醒 works).
    pub p_live_attend: f64,
    /// Share of the audience also reachable in the WeChat ecosystem (mini-program, official account).
    pub wechat_share: f64,
    /// Number of staff members (导购/顾问) who own WeCom contacts.
    pub staff: u32,
}

const fn acc(channel: Channel, name: &'static str) -> Account {
    Account { channel, name }
}

const fn sku(code: &'static str, price_fen: u32, first: u32, repeat: u32) -> Sku {
    Sku { code, price_fen, first, repeat, voucher: false }
}

const fn voucher(code: &'static str, price_fen: u32, first: u32, repeat: u32) -> Sku {
    Sku { code, price_fen, first, repeat, voucher: true }
}

const fn gift(name: &'static str, fen: u32, weight: u32) -> Gift {
    Gift { name, fen, weight }
}

/// Douyin-style gifts: many small hearts and roses, the occasional rocket.
const GIFTS: &[Gift] = &[
    gift("小心心", 10, 400),
    gift("玫瑰", 100, 250),
    gift("棒棒糖", 990, 120),
    gift("为你闪耀", 5200, 40),
    gift("礼花筒", 9900, 20),
    gift("火箭", 52000, 5),
    gift("嘉年华", 131_400, 1),
];

/// 重决策商品: a home-renovation brand. Few, big orders after a long consideration: a deposit or a
/// design plan first, then the package; leads (留资) and 1v1 advisor chats carry the funnel.
static HEAVY: Profile = Profile {
    accounts: [
        acc(Channel::Douyin, "brand-main"),
        acc(Channel::Douyin, "designer-chen"),
        acc(Channel::Kuaishou, "ks-main"),
        acc(Channel::Wecom, "corp-app"),
        acc(Channel::Wecom, "sales-app"),
        acc(Channel::WechatMp, "mp-service"),
        acc(Channel::MiniProgram, "mp-booking"),
        acc(Channel::Offline, "showroom-pudong"),
        acc(Channel::Jd, "jd-store"),
        acc(Channel::Web, "official-site"),
    ],
    origin_weights: [46, 16, 14, 0, 0, 8, 0, 0, 4, 12],
    order_weights: [10, 5, 3, 0, 0, 0, 30, 45, 7, 0],
    skus: &[
        sku("DEPOSIT-99", 9_900, 50, 5),
        sku("DESIGN-PLAN", 299_900, 25, 10),
        sku("PKG-BASIC", 3_980_000, 12, 35),
        sku("PKG-PREMIUM", 8_980_000, 5, 20),
        sku("CABINET-CUSTOM", 1_580_000, 8, 30),
    ],
    negotiated_prices: true,
    gifts: GIFTS,
    // ~0.2 % of the exposed audience ever pays anything, mostly deposits.
    p_order_public: 0.000_3,
    p_order_follower: 0.003,
    p_order_private: 0.012,
    repurchase_factor: 1.5,
    p_repurchase: 0.015,
    // Deposits are often taken back: ~7 %.
    p_refund: 0.07,
    p_gift_fan: 0.01,
    p_gift_other: 0.001,
    // Leads are the main conversion: ~25 % of WeCom contacts leave a phone.
    p_lead: 0.03,
    lead_form: "free-design",
    p_referral: 0.012,
    // ~20 % of followers are added on WeCom (advisors push hard).
    p_wecom_add: 0.02,
    p_sales_app: 0.75,
    engaged_gap_days: 5.0,
    public_gap_days: 12.0,
    live_weekdays: [false, false, true, false, false, true, false],
    live_start_min: 19 * 60,
    live_len_min: 120,
    p_live_attend: 0.18,
    wechat_share: 0.6,
    staff: 24,
};

/// 文化娱乐: a knowledge creator / live entertainer. Lives almost every evening, many gifts,
/// memberships and courses.
static CULTURE: Profile = Profile {
    accounts: [
        acc(Channel::Douyin, "creator-main"),
        acc(Channel::Douyin, "creator-clips"),
        acc(Channel::Kuaishou, "ks-main"),
        acc(Channel::Wecom, "corp-app"),
        acc(Channel::Wecom, "sales-app"),
        acc(Channel::WechatMp, "mp-column"),
        acc(Channel::MiniProgram, "mp-academy"),
        acc(Channel::App, "academy-app"),
        acc(Channel::Taobao, "tmall-books"),
        acc(Channel::Web, "official-site"),
    ],
    origin_weights: [50, 20, 18, 0, 0, 6, 0, 0, 2, 4],
    order_weights: [40, 10, 10, 0, 0, 0, 25, 10, 5, 0],
    skus: &[
        sku("COURSE-INTRO", 990, 50, 5),
        sku("MEMBER-MONTH", 1_990, 25, 30),
        sku("MEMBER-YEAR", 19_900, 8, 20),
        sku("BOOK-SET", 5_980, 10, 10),
        sku("COURSE-PRO", 69_900, 5, 25),
        sku("CAMP-21D", 199_900, 2, 10),
    ],
    negotiated_prices: false,
    gifts: GIFTS,
    p_order_public: 0.002,
    p_order_follower: 0.010,
    p_order_private: 0.02,
    repurchase_factor: 1.3,
    p_repurchase: 0.05,
    // 7-day no-reason course refunds: ~6 %.
    p_refund: 0.06,
    // Fans tip: ~10 % of a fan's live visits carry a gift.
    p_gift_fan: 0.10,
    p_gift_other: 0.012,
    p_lead: 0.004,
    lead_form: "trial-lesson",
    p_referral: 0.02,
    // ~12 % of followers end up on WeCom (course advisors).
    p_wecom_add: 0.01,
    p_sales_app: 0.3,
    engaged_gap_days: 2.5,
    public_gap_days: 8.0,
    live_weekdays: [false, true, true, true, true, true, true],
    live_start_min: 20 * 60,
    live_len_min: 180,
    p_live_attend: 0.45,
    wechat_share: 0.5,
    staff: 8,
};

/// 消费品: a cosmetics brand. Frequent repurchase at 60–300 yuan, marketplaces beside Douyin.
static CONSUMER: Profile = Profile {
    accounts: [
        acc(Channel::Douyin, "brand-main"),
        acc(Channel::Douyin, "brand-outlet"),
        acc(Channel::Kuaishou, "ks-main"),
        acc(Channel::Wecom, "corp-app"),
        acc(Channel::Wecom, "sales-app"),
        acc(Channel::WechatMp, "mp-brand"),
        acc(Channel::MiniProgram, "mp-store"),
        acc(Channel::Taobao, "tmall-flagship"),
        acc(Channel::Jd, "jd-self"),
        acc(Channel::Web, "brand-site"),
    ],
    origin_weights: [44, 18, 14, 0, 0, 6, 0, 10, 5, 3],
    order_weights: [35, 10, 8, 0, 0, 0, 22, 17, 8, 0],
    skus: &[
        sku("TRIAL-KIT", 1_990, 20, 2),
        sku("MASK-10P", 6_990, 15, 20),
        sku("SUNSCREEN-50ML", 9_900, 12, 15),
        sku("TONER-200ML", 12_900, 12, 18),
        sku("CREAM-50G", 18_900, 12, 18),
        sku("SERUM-30ML", 23_900, 10, 16),
        sku("GIFT-BOX", 39_900, 4, 6),
    ],
    negotiated_prices: false,
    gifts: GIFTS,
    p_order_public: 0.004,
    p_order_follower: 0.015,
    p_order_private: 0.035,
    // Repurchase rate among buyers over 90 days lands around 25–35 %.
    repurchase_factor: 1.8,
    p_repurchase: 0.06,
    // E-commerce returns: ~10 % (more after 双11).
    p_refund: 0.10,
    p_gift_fan: 0.01,
    p_gift_other: 0.002,
    p_lead: 0.0,
    lead_form: "skin-test",
    p_referral: 0.015,
    // ~15 % of followers / buyers are added on WeCom (parcel cards, 加微返现).
    p_wecom_add: 0.015,
    p_sales_app: 0.4,
    engaged_gap_days: 4.5,
    public_gap_days: 10.0,
    live_weekdays: [false, true, false, true, false, true, false],
    live_start_min: 19 * 60 + 30,
    live_len_min: 180,
    p_live_attend: 0.3,
    wechat_share: 0.55,
    staff: 16,
};

/// 本地生活: a restaurant chain. Vouchers bought on Douyin, redeemed at a store (store_visit).
static LOCAL: Profile = Profile {
    accounts: [
        acc(Channel::Douyin, "store-main"),
        acc(Channel::Douyin, "store-explorer"),
        acc(Channel::Kuaishou, "ks-local"),
        acc(Channel::Wecom, "corp-app"),
        acc(Channel::Wecom, "sales-app"),
        acc(Channel::WechatMp, "mp-member"),
        acc(Channel::MiniProgram, "mp-booking"),
        acc(Channel::Offline, "store-xuhui"),
        acc(Channel::Offline, "store-jingan"),
        acc(Channel::Offline, "store-minhang"),
    ],
    origin_weights: [52, 20, 14, 0, 0, 8, 0, 2, 2, 2],
    order_weights: [50, 12, 8, 0, 0, 0, 18, 4, 4, 4],
    skus: &[
        voucher("TRIAL-9.9", 990, 15, 3),
        voucher("VOUCHER-100", 7_990, 30, 25),
        voucher("SET-2P", 16_800, 25, 25),
        voucher("SET-4P", 29_800, 12, 15),
        sku("CARD-STORED-1000", 100_000, 1, 6),
    ],
    negotiated_prices: false,
    gifts: GIFTS,
    p_order_public: 0.006,
    p_order_follower: 0.018,
    p_order_private: 0.03,
    repurchase_factor: 1.5,
    p_repurchase: 0.06,
    // Unused vouchers refunded: ~12 %.
    p_refund: 0.12,
    p_gift_fan: 0.006,
    p_gift_other: 0.001,
    p_lead: 0.003,
    lead_form: "table-booking",
    p_referral: 0.02,
    p_wecom_add: 0.015,
    p_sales_app: 0.5,
    engaged_gap_days: 6.0,
    public_gap_days: 10.0,
    live_weekdays: [false, false, false, false, true, false, true],
    live_start_min: 18 * 60,
    live_len_min: 120,
    p_live_attend: 0.2,
    wechat_share: 0.6,
    staff: 12,
};

pub(crate) fn profile(industry: Industry) -> &'static Profile {
    match industry {
        Industry::HeavyDecision => &HEAVY,
        Industry::CultureEntertainment => &CULTURE,
        Industry::ConsumerGoods => &CONSUMER,
        Industry::LocalLife => &LOCAL,
    }
}

/// The matrix accounts (channel, name) of an industry's simulated merchant.
pub fn accounts(industry: Industry) -> Vec<(Channel, &'static str)> {
    profile(industry).accounts.iter().map(|a| (a.channel, a.name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_consistent() {
        for industry in Industry::ALL {
            let p = profile(industry);
            assert_eq!(p.accounts[ACC_DOUYIN_MAIN as usize].channel, Channel::Douyin);
            assert_eq!(p.accounts[ACC_DOUYIN_SECOND as usize].channel, Channel::Douyin);
            assert_eq!(p.accounts[ACC_KUAISHOU as usize].channel, Channel::Kuaishou);
            assert_eq!(p.accounts[ACC_WECOM_CORP as usize].channel, Channel::Wecom);
            assert_eq!(p.accounts[ACC_WECOM_SALES as usize].channel, Channel::Wecom);
            assert_eq!(p.accounts[ACC_WECHAT_MP as usize].channel, Channel::WechatMp);
            assert_eq!(p.accounts[ACC_MINI_PROGRAM as usize].channel, Channel::MiniProgram);
            for i in [ACC_WECOM_CORP, ACC_WECOM_SALES, ACC_MINI_PROGRAM] {
                assert_eq!(p.origin_weights[i as usize], 0, "{industry:?}");
            }
            for i in ACC_EXTRA {
                let a = p.accounts[i as usize];
                // Only web and offline/marketplace/app extras; offline origins get a phone at once.
                assert!(matches!(
                    a.channel,
                    Channel::Taobao | Channel::Jd | Channel::Offline | Channel::Web | Channel::App
                ));
            }
            assert!(p.skus.len() <= 15 && p.gifts.len() <= 15);
            assert!(p.origin_weights.iter().sum::<u32>() > 0);
        }
    }
}
