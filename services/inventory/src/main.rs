//! `inventory-service`: the product catalogue and the inventory side of the
//! order saga (reserve, confirm and release stock).

mod api;
mod handlers;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use saga_common::config::ServiceArgs;
use saga_common::service::Service;
use saga_common::topology::Destination;
use sqlx::migrate::Migrator;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Product catalogue, stock reservation and release.
#[derive(Debug, Parser)]
#[command(name = "inventory-service", version, about)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// HTTP listen address.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8082")]
    http_addr: SocketAddr,
}

#[tokio::main]
async fn main() {
    let args = saga_common::config::parse::<Args>();
    let mut service = Service::start("inventory-service", args.service, &MIGRATOR).await;
    service.consume(Destination::Inventory, Arc::new(handlers::InventoryHandler));
    let (router, openapi) =
        api::router(saga_common::http::ApiState { pool: service.pool.clone(), auth: service.auth.clone() });
    service.run(args.http_addr, router, openapi).await;
}
