//! `payment-service`: customer accounts and the payment side of the order
//! saga (charge and refund).

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

/// Customer accounts (balances), charges and refunds.
#[derive(Debug, Parser)]
#[command(name = "payment-service", version, about)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// HTTP listen address.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8081")]
    http_addr: SocketAddr,
}

#[tokio::main]
async fn main() {
    let args = saga_common::config::parse::<Args>();
    let mut service = Service::start("payment-service", args.service, &MIGRATOR).await;
    service.consume(Destination::Payment, Arc::new(handlers::PaymentHandler));
    let (router, openapi) =
        api::router(saga_common::http::ApiState { pool: service.pool.clone(), auth: service.auth.clone() });
    service.run(args.http_addr, router, openapi).await;
}
