//! The public order API.

mod dead_letters;
pub mod model;
mod orders;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use saga_common::amqp::Broker;
use saga_common::auth::Auth;
use saga_common::outbox::OutboxSignal;
use saga_common::runtime::Shutdown;
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
    /// Ends open event streams when the service stops.
    pub shutdown: Shutdown,
    /// For the dead-letter routes: the broker and the platform name.
    pub broker: Arc<Broker>,
    pub platform: String,
}

impl FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Auth {
        state.auth.clone()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Saga Platform — order service",
        description = "Place orders and follow their saga.\n\nWhen an order reaches a final status the service \
            also publishes an order event (`order.completed`, `order.failed`, `order.cancelled`) on the topic \
            exchange `{platform}.events`: described in AsyncAPI 3.0 at [/api/asyncapi.yaml](/api/asyncapi.yaml)."
    ),
    external_docs(url = "/api/asyncapi.yaml", description = "The order events (AsyncAPI 3.0)"),
    security(("bearer" = [])),
    // Referred to from schemas built by hand (model::lines_schema).
    components(schemas(model::LineRequest))
)]
struct ApiDoc;

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(orders::place_order, orders::list_orders))
        .routes(routes!(orders::order_counts))
        .routes(routes!(orders::get_order))
        .routes(routes!(orders::cancel_order))
        .routes(routes!(orders::retry_order))
        .routes(routes!(orders::compensate_order))
        .routes(routes!(orders::order_events))
        .routes(routes!(stream::order_stream))
        .routes(routes!(dead_letters::list_dead_letters))
        .routes(routes!(dead_letters::replay_dead_letters))
        .routes(routes!(dead_letters::purge_dead_letters))
}

pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    routes().with_state(state).split_for_parts()
}

#[cfg(test)]
mod tests {
    /// The document as served (`saga_common::http::finish` completes it).
    fn document() -> utoipa::openapi::OpenApi {
        let mut openapi = super::routes().into_openapi();
        saga_common::openapi::complete(&mut openapi);
        openapi
    }

    #[test]
    fn the_document_follows_the_shared_rules() {
        let errors = saga_common::openapi::check(&document());
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn the_document_states_the_limits_the_handlers_check() {
        use super::model::*;
        let doc = serde_json::to_value(document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["PlaceOrder"]["properties"]["items"]["minItems"], 1);
        assert_eq!(schemas["PlaceOrder"]["properties"]["items"]["maxItems"], MAX_LINES);
        assert_eq!(schemas["LineRequest"]["properties"]["quantity"]["maximum"], MAX_QUANTITY);
        assert_eq!(schemas["LineRequest"]["properties"]["sku"]["$ref"], "#/components/schemas/Sku");
        assert_eq!(schemas["Sku"]["pattern"], saga_common::sku::SKU_PATTERN);
        let list = &doc["paths"]["/api/v1/orders"]["get"]["parameters"];
        let limit = list.as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(
            (limit["schema"]["minimum"].clone(), limit["schema"]["maximum"].clone()),
            (1.into(), PAGE.max.into())
        );
        let get = &doc["paths"]["/api/v1/orders/{id}"]["get"]["parameters"];
        let wait = get.as_array().unwrap().iter().find(|p| p["name"] == "wait").unwrap();
        assert_eq!(wait["schema"]["maximum"], MAX_WAIT_SECONDS);
        // Always present (null until known), as the contract lists them.
        for field in ["total_cents", "failure_reason"] {
            assert!(schemas["OrderView"]["required"].as_array().unwrap().contains(&field.into()), "{field}");
        }
        let placed = &doc["paths"]["/api/v1/orders"]["post"]["responses"]["202"];
        for link in ["GetOrder", "OrderEvents", "CancelOrder"] {
            assert_eq!(placed["links"][link]["parameters"]["id"], "$response.body#/id", "{link}");
        }
        assert_eq!(
            crate::saga::OrderStatus::ALL.map(crate::saga::OrderStatus::as_str),
            crate::saga::OrderStatus::ALL_STR
        );
    }
}
