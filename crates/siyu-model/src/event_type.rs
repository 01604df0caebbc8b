//! The canonical event types of SPEC §3. Tenants may add custom types; those carry weight 0
//! unless the tenant configures one.

use serde::{Deserialize, Serialize};

macro_rules! event_types {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// A canonical event type. Its discriminant is its compact code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[repr(u16)]
        pub enum EventType { $($variant),+ }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name),+ }
            }

            /// A `match` on the name: this runs once per event on every replay.
            pub fn parse(text: &str) -> Option<EventType> {
                match text { $($name => Some(EventType::$variant),)+ _ => None }
            }
        }
    };
}

event_types! {
    Exposure => "exposure",
    View => "view",
    Like => "like",
    Comment => "comment",
    Share => "share",
    Follow => "follow",
    Unfollow => "unfollow",
    Subscribe => "subscribe",
    Unsubscribe => "unsubscribe",
    MessageIn => "message_in",
    MessageOut => "message_out",
    GroupJoin => "group_join",
    GroupLeave => "group_leave",
    WecomAdd => "wecom_add",
    WecomDelete => "wecom_delete",
    LiveWatch => "live_watch",
    LiveGift => "live_gift",
    OrderPaid => "order_paid",
    OrderRefunded => "order_refunded",
    CouponClaimed => "coupon_claimed",
    CouponRedeemed => "coupon_redeemed",
    Referral => "referral",
    LeadSubmit => "lead_submit",
    ConsentGranted => "consent_granted",
    ConsentRevoked => "consent_revoked",
    // Not in SPEC §3's list but needed by the Segment API: an `identify` call records traits and
    // identities, an `alias` links two identities. Both weigh 0 by default.
    Identify => "identify",
    Alias => "alias",
}

/// Codes below this are canonical; tenants' custom types are numbered from here.
pub const FIRST_CUSTOM_CODE: u16 = 128;

impl EventType {
    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn from_code(code: u16) -> Option<EventType> {
        EventType::ALL.get(code as usize).copied()
    }

    /// Does this type carry money (`amount` required)?
    pub fn carries_amount(self) -> bool {
        matches!(self, EventType::OrderPaid | EventType::OrderRefunded)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Is `name` acceptable as a custom event type name (lowercase snake case, ≤ 64 bytes)?
pub fn is_valid_custom_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_round_trip() {
        for (i, t) in EventType::ALL.iter().enumerate() {
            assert_eq!(t.code() as usize, i);
            assert_eq!(EventType::from_code(t.code()), Some(*t));
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        assert!((EventType::ALL.len() as u16) < FIRST_CUSTOM_CODE);
    }

    #[test]
    fn custom_names() {
        assert!(is_valid_custom_name("store_visit"));
        assert!(!is_valid_custom_name("Store Visit"));
        assert!(!is_valid_custom_name(""));
    }
}
