//! WeCom operations (docs/reach.md, "WeCom operations"): contact ways (渠道活码) with their
//! attribution, the external-contact sync, and tagging a segment's members in WeCom. The calls to
//! WeCom and what is recorded after them are siyu-outbox's `wecom_ops`; here is only the wire.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use siyu_engine::contact_ways as engine_view;
use siyu_model::ProfileId;
use siyu_outbox::wecom_ops;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Manager;
use crate::error::{ApiError, ErrorBody};
use crate::json::JsonBody;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_contact_ways, create_contact_way))
        .routes(routes!(sync_contacts))
        .routes(routes!(mark_tag))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ContactWayRequest {
    /// A send account with connector `wecom`.
    pub account: String,
    /// The staff userids customers are added to (exactly one when `single`).
    pub staff: Vec<String>,
    /// The attribution key, at most 30 characters, unique in the tenant; generated when absent.
    pub state: Option<String>,
    /// At most 30 characters, shown in WeCom's admin console.
    pub remark: Option<String>,
    /// The campaign the code belongs to (for reports).
    pub campaign_id: Option<i64>,
    /// A single-person way (单人); default: multi-person (多人).
    #[serde(default)]
    pub single: bool,
}

impl From<ContactWayRequest> for wecom_ops::ContactWayRequest {
    fn from(r: ContactWayRequest) -> Self {
        let kind = if r.single { wecom_ops::WayKind::Single } else { wecom_ops::WayKind::Multi };
        wecom_ops::ContactWayRequest {
            account: r.account,
            staff: r.staff,
            state: r.state,
            remark: r.remark,
            campaign_id: r.campaign_id,
            kind,
        }
    }
}

/// A contact way and what it brought.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactWayView {
    /// Customers added through it carry the source `contact_way:<state>`.
    pub state: String,
    pub config_id: String,
    /// The QR code's URL.
    pub qr_code: Option<String>,
    pub account: String,
    pub staff: Vec<String>,
    pub campaign_id: Option<i64>,
    pub remark: Option<String>,
    pub created_at: String,
    pub attribution: AttributionView,
}

/// Counted from the profiles of the people added through the contact way.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttributionView {
    /// People with a `wecom_add` from it.
    pub adds: u64,
    /// Those `wecom_add` events (a callback and a sync of one add are two).
    pub add_events: u64,
    /// Of those people, the ones whose latest WeCom add is later than their latest delete.
    pub still_contacts: u64,
    /// People who paid an order at or after their add.
    pub buyers: u64,
    /// People whose first paid order ever came at or after their add.
    pub first_orders: u64,
    /// Paid orders at or after the add.
    pub orders: u64,
    /// Paid minus refunded at or after the add, in yuan.
    pub net_revenue: f64,
}

impl From<engine_view::ContactWayView> for ContactWayView {
    fn from(view: engine_view::ContactWayView) -> Self {
        let engine_view::ContactWayView { record, attribution } = view;
        let engine_view::Attribution { adds, add_events, still_contacts, buyers, first_orders, orders, net_revenue } =
            attribution;
        let engine_view::ContactWayRecord {
            state,
            config_id,
            qr_code,
            account,
            staff,
            campaign_id,
            remark,
            created_at,
        } = record;
        ContactWayView {
            state,
            config_id,
            qr_code,
            account,
            staff,
            campaign_id,
            remark,
            created_at: created_at.to_rfc3339(),
            attribution: AttributionView {
                adds,
                add_events,
                still_contacts,
                buyers,
                first_orders,
                orders,
                net_revenue,
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SyncRequest {
    pub account: String,
    /// Whose customers to sync (default: the account's `staff`).
    #[serde(default)]
    pub staff: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncReport {
    pub staff: u64,
    /// (staff member, customer) relations WeCom listed.
    pub contacts: u64,
    /// `wecom_add` events appended (relations the log did not hold yet).
    pub new_events: u64,
    /// Relations synced before.
    pub duplicates: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MarkTagRequest {
    pub account: String,
    /// The staff member whose customers are tagged (WeCom tags each relation).
    pub staff: String,
    pub segment_id: i64,
    /// WeCom corp tag ids to add.
    #[serde(default)]
    pub add_tag: Vec<String>,
    /// WeCom corp tag ids to remove.
    #[serde(default)]
    pub remove_tag: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarkTagReport {
    /// Members of the segment now.
    pub members: u64,
    /// Of them, with a `wecom_external_userid`.
    pub addressed: u64,
    /// Addressed members who are not the staff member's customers (skipped).
    pub not_contacts: u64,
    /// Successful `mark_tag` calls.
    pub tagged: u64,
    pub failed: u64,
    /// The first 100 failures.
    pub failures: Vec<TagFailure>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TagFailure {
    pub profile_id: ProfileId,
    pub external_userid: String,
    /// WeCom's errcode (`84061`, ...), or `timeout`, `http_503`, `rate_limited`.
    pub code: String,
    pub message: String,
}

/// The tenant's contact ways, oldest first, with their attribution.
#[utoipa::path(get, path = "/api/v1/contact-ways", tag = "wecom",
    responses((status = 200, body = [ContactWayView])), security(("bearer" = [])))]
async fn list_contact_ways(
    State(state): State<AppState>,
    Manager(tenant): Manager,
) -> Result<Json<Vec<ContactWayView>>, ApiError> {
    Ok(Json(super::views::list(state.engine.contact_ways(tenant).await?)))
}

/// Creates a QR-code contact way in WeCom (`add_contact_way`) and records it.
#[utoipa::path(post, path = "/api/v1/contact-ways", tag = "wecom", request_body = ContactWayRequest,
    responses((status = 200, body = ContactWayView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_contact_way(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    JsonBody(request): JsonBody<ContactWayRequest>,
) -> Result<Json<ContactWayView>, ApiError> {
    let record = wecom_ops::create_contact_way(&state.engine, tenant, &request.into()).await?;
    let view = engine_view::ContactWayView { record, attribution: Default::default() };
    Ok(Json(view.into()))
}

/// Ingests one `wecom_add` per (staff member, customer) relation WeCom lists; idempotent.
#[utoipa::path(post, path = "/api/v1/wecom/sync", tag = "wecom", request_body = SyncRequest,
    responses((status = 200, body = SyncReport), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody)),
    security(("bearer" = [])))]
async fn sync_contacts(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    JsonBody(request): JsonBody<SyncRequest>,
) -> Result<Json<SyncReport>, ApiError> {
    let request = wecom_ops::SyncRequest { account: request.account, staff: request.staff };
    let wecom_ops::SyncReport { staff, contacts, new_events, duplicates } =
        wecom_ops::sync_contacts(&state.engine, tenant, &request).await?;
    Ok(Json(SyncReport { staff, contacts, new_events, duplicates }))
}

/// Adds and removes WeCom tags (`mark_tag`) on the segment's members who are the staff member's
/// customers; failures are reported with WeCom's errcode.
#[utoipa::path(post, path = "/api/v1/wecom/mark-tag", tag = "wecom", request_body = MarkTagRequest,
    responses((status = 200, body = MarkTagReport), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody)),
    security(("bearer" = [])))]
async fn mark_tag(
    State(state): State<AppState>,
    Manager(tenant): Manager,
    JsonBody(r): JsonBody<MarkTagRequest>,
) -> Result<Json<MarkTagReport>, ApiError> {
    let request = wecom_ops::MarkTagRequest {
        account: r.account,
        staff: r.staff,
        segment_id: r.segment_id,
        add_tag: r.add_tag,
        remove_tag: r.remove_tag,
    };
    let report = wecom_ops::mark_tag(&state.engine, tenant, &request).await?;
    Ok(Json(report.into()))
}

impl From<wecom_ops::MarkTagReport> for MarkTagReport {
    fn from(report: wecom_ops::MarkTagReport) -> Self {
        let wecom_ops::MarkTagReport { members, addressed, not_contacts, tagged, failed, failures } = report;
        let failures = failures
            .into_iter()
            .map(|f| TagFailure {
                profile_id: f.profile_id,
                external_userid: f.external_userid,
                code: f.code,
                message: f.message,
            })
            .collect();
        MarkTagReport { members, addressed, not_contacts, tagged, failed, failures }
    }
}
