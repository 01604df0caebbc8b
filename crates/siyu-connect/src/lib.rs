//! siyu-connect exists so that data already flowing through other tools' wire formats (Segment's
//! tracking API first) lands in siyu's event log unchanged, without the server knowing any format.
//!
//! Everything here is a pure function from bytes to validated [`siyu_model::Event`]s: no I/O, no
//! HTTP framework, so the server, the bulk importer and the tests share one mapping.

pub mod segment;

pub use segment::{
    parse_batch, parse_single, write_key_from_body, BatchParse, CallKind, Endpoint, Mapping, SegmentError,
    SegmentLimits,
};
