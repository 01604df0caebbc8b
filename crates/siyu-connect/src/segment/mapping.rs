//! Which siyu event type a Segment `track` event name becomes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use siyu_model::event::EventKind;
use siyu_model::EventType;

use super::error::{codes, SegmentError};

/// A tenant's Segment event name → siyu type name table.
///
/// Keys match loosely (case, spaces, `_` and `-` are ignored: `Order Completed`,
/// `order_completed` and `orderCompleted` are one key) because the same spec event reaches us
/// from SDKs and hand-written integrations spelled every way. Values must be canonical type
/// names or valid custom names. Names not in the table fall through to [`Mapping::resolve`]'s
/// snake-case rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mapping {
    pub event_names: BTreeMap<String, String>,
}

/// Segment's semantic-event names (e-commerce v2, B2B SaaS and email specs) whose meaning matches
/// a canonical siyu type.
///
/// `Coupon Applied` is `coupon_redeemed`, not `coupon_claimed`: Segment fires it when a coupon
/// was accepted against the cart/order, i.e. used; claiming (领券) has no Segment counterpart.
/// Wishlisting is the closest e-commerce act to a `like`. Sign-ups and lead forms are both leads.
pub const DEFAULT_EVENT_NAMES: &[(&str, &str)] = &[
    ("Order Completed", "order_paid"),
    ("Order Refunded", "order_refunded"),
    ("Coupon Applied", "coupon_redeemed"),
    ("Product Viewed", "view"),
    ("Product List Viewed", "view"),
    ("Product Shared", "share"),
    ("Cart Shared", "share"),
    ("Product Added to Wishlist", "like"),
    ("Product Reviewed", "comment"),
    ("Signed Up", "lead_submit"),
    ("Lead Submitted", "lead_submit"),
    ("Form Submitted", "lead_submit"),
];

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            event_names: DEFAULT_EVENT_NAMES.iter().map(|(from, to)| (from.to_string(), to.to_string())).collect(),
        }
    }
}

impl Mapping {
    /// An empty table: only the snake-case fallback applies.
    pub fn empty() -> Self {
        Mapping { event_names: BTreeMap::new() }
    }

    /// The default table with the tenant's entries on top. A tenant key replaces any default key
    /// it loosely equals, so `order_completed => live_gift` really overrides `Order Completed`.
    pub fn with_overrides(overrides: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut mapping = Mapping::default();
        for (from, to) in overrides {
            mapping.event_names.retain(|key, _| !loosely_equal(key, &from));
            mapping.event_names.insert(from, to);
        }
        mapping
    }

    /// Checks every target once, when the tenant saves the table, so a typo is reported there
    /// rather than as rejected events later.
    pub fn validate(&self) -> Result<(), SegmentError> {
        for (from, to) in &self.event_names {
            target_kind(from, to)?;
        }
        Ok(())
    }

    /// The siyu event type of a Segment `track` event name.
    ///
    /// Order: the table (exact key, then loose key); otherwise the snake case of the name, which
    /// is a canonical type when it spells one (`follow`, `Order Paid`) and a custom type
    /// otherwise (`Store Visit` → `store_visit`). `identify` and `alias` are refused: those
    /// meanings belong to their own Segment calls and must carry their identities.
    pub fn resolve(&self, event_name: &str) -> Result<EventKind, SegmentError> {
        let target = self
            .event_names
            .get(event_name)
            .or_else(|| self.event_names.iter().find(|(key, _)| loosely_equal(key, event_name)).map(|(_, to)| to));
        if let Some(to) = target {
            return target_kind(event_name, to);
        }
        let name = snake_case(event_name).ok_or_else(|| {
            invalid_name(format!(
                "event name {event_name:?} cannot be converted to a type name (only ascii names convert); add it to the tenant's segment mapping"
            ))
        })?;
        if name.len() > 64 {
            return Err(invalid_name(format!("event name {event_name:?} is longer than 64 bytes as a type name")));
        }
        let kind = EventKind::parse(&name)
            .ok_or_else(|| invalid_name(format!("event name {event_name:?} cannot become a type name")))?;
        refuse_reserved(event_name, kind)
    }
}

fn target_kind(from: &str, to: &str) -> Result<EventKind, SegmentError> {
    let kind = EventKind::parse(to).ok_or_else(|| {
        invalid_name(format!(
            "the segment mapping sends {from:?} to {to:?}, which is neither a canonical type nor a valid custom name"
        ))
    })?;
    refuse_reserved(from, kind)
}

fn refuse_reserved(from: &str, kind: EventKind) -> Result<EventKind, SegmentError> {
    match kind.known() {
        Some(EventType::Identify | EventType::Alias) => Err(invalid_name(format!(
            "track event {from:?} cannot be {}; use segment's {} call",
            kind.as_str(),
            kind.as_str()
        ))),
        _ => Ok(kind),
    }
}

fn invalid_name(message: String) -> SegmentError {
    SegmentError::new(codes::INVALID_EVENT_NAME, "event", message)
}

/// Compares ASCII letters and digits only, ignoring case, so table keys match however the SDK
/// spelled the name; allocation-free because it runs against every key for every unmapped event.
fn loosely_equal(a: &str, b: &str) -> bool {
    fn significant(s: &str) -> impl Iterator<Item = char> + '_ {
        s.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase())
    }
    // Names without ASCII letters (加入购物车) only ever match exactly.
    significant(a).next().is_some() && significant(a).eq(significant(b))
}

/// `Store Visit` → `store_visit`, `addToCart` → `add_to_cart`, `3D Viewed` → `event_3d_viewed`.
///
/// `None` when the name has non-ASCII letters (加入购物车): dropping them would collapse distinct
/// Chinese names into one type, so those must be mapped explicitly.
pub fn snake_case(name: &str) -> Option<String> {
    if name.chars().any(|c| c.is_alphanumeric() && !c.is_ascii()) {
        return None;
    }
    let chars: Vec<char> = name.trim().chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_alphanumeric() || c == '.' {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            let boundary = c.is_ascii_uppercase()
                && match prev {
                    // fooBar; not after a digit, so `3D` stays one word
                    Some(p) if p.is_ascii_lowercase() => true,
                    // HTMLPage: the P starts a new word
                    Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                    _ => false,
                };
            if boundary && !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() {
        return None;
    }
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        // A type name must start with a letter; keep the digits rather than drop them so
        // `3D Viewed` and `D Viewed` stay distinct.
        out.insert_str(0, "event_");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_cases_segment_names() {
        let cases = [
            ("Store Visit", "store_visit"),
            ("addToCart", "add_to_cart"),
            ("Checkout Step-2 / Viewed", "checkout_step_2_viewed"),
            ("HTMLPage Opened", "html_page_opened"),
            ("  Video   Played  ", "video_played"),
            ("3D Viewed", "event_3d_viewed"),
            ("shop.visit", "shop.visit"),
            ("already_snake", "already_snake"),
        ];
        for (name, expected) in cases {
            assert_eq!(snake_case(name).as_deref(), Some(expected), "{name}");
        }
        assert_eq!(snake_case("加入购物车"), None);
        assert_eq!(snake_case("加购 v2"), None);
        assert_eq!(snake_case("!!!"), None);
    }

    #[test]
    fn default_table_maps_ecommerce_names() {
        let m = Mapping::default();
        let kind = |name: &str| m.resolve(name).unwrap();
        assert_eq!(kind("Order Completed"), EventKind::Known(EventType::OrderPaid));
        assert_eq!(kind("order_completed"), EventKind::Known(EventType::OrderPaid));
        assert_eq!(kind("orderCompleted"), EventKind::Known(EventType::OrderPaid));
        assert_eq!(kind("Order Refunded"), EventKind::Known(EventType::OrderRefunded));
        assert_eq!(kind("Coupon Applied"), EventKind::Known(EventType::CouponRedeemed));
        assert_eq!(kind("Product Viewed"), EventKind::Known(EventType::View));
        assert_eq!(kind("Product Shared"), EventKind::Known(EventType::Share));
        assert_eq!(kind("Product Added to Wishlist"), EventKind::Known(EventType::Like));
        assert_eq!(kind("Product Reviewed"), EventKind::Known(EventType::Comment));
        assert_eq!(kind("Signed Up"), EventKind::Known(EventType::LeadSubmit));
        assert_eq!(kind("Lead Submitted"), EventKind::Known(EventType::LeadSubmit));
        assert!(m.validate().is_ok());
    }

    #[test]
    fn canonical_names_pass_through_and_others_become_custom() {
        let m = Mapping::default();
        assert_eq!(m.resolve("follow").unwrap(), EventKind::Known(EventType::Follow));
        assert_eq!(m.resolve("Live Gift").unwrap(), EventKind::Known(EventType::LiveGift));
        assert_eq!(m.resolve("Store Visit").unwrap(), EventKind::Custom("store_visit".into()));
        assert_eq!(m.resolve("Product Added").unwrap(), EventKind::Custom("product_added".into()));
    }

    #[test]
    fn tenant_table_overrides_and_reaches_chinese_names() {
        let mut m = Mapping::default();
        m.event_names.insert("加入购物车".into(), "add_to_cart".into());
        m.event_names.insert("Product Viewed".into(), "exposure".into());
        assert_eq!(m.resolve("加入购物车").unwrap(), EventKind::Custom("add_to_cart".into()));
        assert_eq!(m.resolve("Product Viewed").unwrap(), EventKind::Known(EventType::Exposure));
        let e = Mapping::empty().resolve("加入购物车").unwrap_err();
        assert_eq!((e.code, e.field.as_str()), (codes::INVALID_EVENT_NAME, "event"));
    }

    #[test]
    fn refuses_bad_targets_reserved_types_and_long_names() {
        let mut m = Mapping::empty();
        m.event_names.insert("Thing".into(), "Not A Type".into());
        assert_eq!(m.validate().unwrap_err().code, codes::INVALID_EVENT_NAME);
        assert_eq!(m.resolve("thing").unwrap_err().code, codes::INVALID_EVENT_NAME);
        for name in ["identify", "Alias"] {
            assert_eq!(Mapping::empty().resolve(name).unwrap_err().code, codes::INVALID_EVENT_NAME, "{name}");
        }
        let long = "word ".repeat(20);
        assert!(Mapping::empty().resolve(&long).unwrap_err().message.contains("64 bytes"));
    }

    #[test]
    fn mapping_round_trips_as_config() {
        let m = Mapping::default();
        let json = serde_json::to_string(&m).unwrap();
        let back: Mapping = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        // A config without the table means "the defaults"; an explicit empty table means none.
        let omitted: Mapping = serde_json::from_str("{}").unwrap();
        assert_eq!(omitted, Mapping::default());
        let none: Mapping = serde_json::from_str(r#"{"event_names": {}}"#).unwrap();
        assert!(none.event_names.is_empty());
    }

    #[test]
    fn overrides_replace_loosely_equal_defaults() {
        let m = Mapping::with_overrides([("order_completed".to_string(), "live_gift".to_string())]);
        assert!(!m.event_names.contains_key("Order Completed"));
        assert_eq!(m.resolve("Order Completed").unwrap(), EventKind::Known(EventType::LiveGift));
        assert_eq!(m.resolve("Order Refunded").unwrap(), EventKind::Known(EventType::OrderRefunded));
    }
}
