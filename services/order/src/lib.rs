//! order-service as a library: the modules of the binary (src/main.rs), so
//! that code outside the binary can call them, such as the fuzz targets in
//! fuzz/ (which take the request models and their validation).

pub mod admission;
pub mod api;
pub mod asyncapi;
pub mod finished;
pub mod gauges;
pub mod orchestrator;
pub mod placement;
pub mod proxy;
pub mod saga;
pub mod store;
pub mod timeouts;
pub mod ui;

/// The API's request and response models and their validation (public for
/// the fuzz targets).
pub use api::model;
