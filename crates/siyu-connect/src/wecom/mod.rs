//! WeCom (企业微信), the channel siyu reaches customers through most: the callback protocol in
//! and the customer-contact API out, so neither the engine nor the server knows WeCom's formats.
//!
//! - [`crypto`]: the callback encryption (WXBizMsgCrypt): URL verification, decrypting a callback,
//!   encrypting a passive reply; pure, checked against WeCom's published vectors.
//! - [`callback`]: the decrypted customer-contact callbacks, typed ([`CallbackEvent`]) and mapped
//!   to siyu events (`wecom_add`, `wecom_delete`, `group_join`, `group_leave`) with message ids
//!   that make WeCom's retries idempotent.
//! - [`client`]: the server API over reqwest ([`WeComClient`]): a shared, refreshed access token,
//!   errcode mapping, a rate limit.
//! - [`connector`]: [`WeComConnector`], the [`crate::Connector`] of WeCom: mass tasks, welcome
//!   messages, reconciliation of sends whose outcome was lost, task results.
//! - `stand_in` (feature `stand-in`): a local WeCom API for tests and demos.

pub mod callback;
pub mod client;
pub mod connector;
pub mod crypto;
#[cfg(feature = "stand-in")]
pub mod stand_in;

#[cfg(test)]
mod tests;

pub use callback::{parse as parse_callback, to_events, to_native_events, CallbackError, CallbackEvent};
pub use client::{ClientConfig, Secret, WeComClient, WeComError};
pub use connector::{WeComConfig, WeComConnector};
pub use crypto::{CryptoError, DecryptedCallback, MsgCrypt};
