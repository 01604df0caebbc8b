//! Douyin (抖音开放平台): what happens on Douyin comes in as webhooks and becomes siyu events
//! ([`webhook`], pure), and private messages go out through the open API ([`client`], the
//! [`DouyinConnector`]). `stand_in` (feature `stand-in`) is a local Douyin for tests and the demo.
//!
//! Identity: a Douyin user is `douyin_open_id` = their open id for this app; the channel is
//! `douyin`, the account the siyu channel account the server passes in.

pub mod client;
#[cfg(feature = "stand-in")]
pub mod stand_in;
pub mod webhook;

pub use client::{DouyinClient, DouyinClientError, DouyinConfig, DouyinConnector, DouyinContent};
pub use webhook::{
    challenge_response, handle, is_unsubscribe, parse, sign, verify_signature, DouyinEvent, DouyinWebhookError,
    Envelope, Notification, WebhookHeaders, WebhookOutcome,
};
