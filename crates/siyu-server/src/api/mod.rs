//! The native API under `/api/v1`: ingestion, profiles, the tenant's summary and settings, audience,
//! reach and WeCom operations.

mod events;
mod profiles;
mod reach;
mod segments;
mod tenant;
pub mod views;
mod wecom;

use utoipa_axum::router::OpenApiRouter;

use crate::error::{ApiError, Code};
use crate::AppState;

pub use events::IngestResponse;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(events::routes())
        .merge(profiles::routes())
        .merge(tenant::routes())
        .merge(segments::routes())
        .merge(reach::routes())
        .merge(wecom::routes())
}

/// Parses an optional RFC 3339 `as_of` query parameter.
pub(crate) fn parse_as_of(value: Option<&str>) -> Result<Option<siyu_model::Millis>, ApiError> {
    value
        .map(|text| {
            siyu_model::Millis::parse_rfc3339(text).ok_or_else(|| {
                ApiError::new(Code::InvalidQuery, format!("as_of {text:?} is not an RFC 3339 timestamp"))
                    .with_field("as_of")
            })
        })
        .transpose()
}
