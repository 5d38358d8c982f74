//! `saga-operator`: reconciles `SagaPlatform` resources (`saga.dev/v1alpha1`)
//! into the broker topology and the three services' workloads.
//!
//! Library surface for other tools: [`crd::SagaPlatform`] (the resource types)
//! and [`topology_spec`] (the broker topology a resource asks for), so
//! `sagactl topology apply -f` declares exactly what the operator declares.

pub mod api_client;
pub mod broker;
pub mod controller;
pub mod crd;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod reconcile;
pub mod scaling;
pub mod tls;

pub use reconcile::build::topology_spec;
