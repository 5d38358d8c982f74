//! The public order API.

pub mod model;
mod orders;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use saga_common::auth::Auth;
use saga_common::outbox::OutboxSignal;
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admission::{Admission, Waiters};
use crate::finished::StatusChanges;
use crate::orchestrator::Orchestrator;
use crate::placement::Placements;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub auth: Auth,
    pub signal: OutboxSignal,
    pub placements: Placements,
    pub orchestrator: Arc<Orchestrator>,
    pub status_changes: StatusChanges,
    pub admission: Admission,
    pub waiters: Waiters,
}

impl FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Auth {
        state.auth.clone()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Saga Platform — order service", description = "Place orders and follow their saga."),
    security(("bearer" = []))
)]
struct ApiDoc;

pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(orders::place_order, orders::list_orders))
        .routes(routes!(orders::get_order))
        .routes(routes!(orders::cancel_order))
        .routes(routes!(orders::order_events))
        .with_state(state)
        .split_for_parts()
}
