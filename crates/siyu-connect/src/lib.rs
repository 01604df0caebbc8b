//! siyu-connect holds the outside protocols, so that neither the engine nor the server knows any
//! third party's wire format:
//!
//! - inbound, data already flowing through other tools lands in siyu's event log unchanged:
//!   `segment` maps Segment's tracking API to validated [`siyu_model::Event`]s (pure functions from
//!   bytes, shared by the server, the bulk importer and the tests);
//! - outbound, [`outbound::Connector`] is the one contract of every channel a message leaves by.
//!
//! Nothing here stores records: the outbox, campaigns and templates live in siyu-store.

pub mod douyin;
pub mod log;
pub mod outbound;
pub mod segment;
pub mod webhook;
pub mod wecom;

pub use outbound::{Accepted, Connector, Outbound, SendError, SendKind, TaskRecipientStatus};
pub use segment::{
    parse_batch, parse_single, write_key_from_body, BatchParse, CallKind, Endpoint, Mapping, SegmentError,
    SegmentLimits,
};
