//! Everything the three services share. Each mechanism lives here once:
//! the message contracts and envelope, the broker topology, the publisher with
//! confirms, the consumer (inbox, retry, dead letters), the transactional
//! outbox relay, the order events, configuration, telemetry and the HTTP plumbing.

pub mod amqp;
pub mod auth;
pub mod component;
pub mod config;
pub mod consumer;
pub mod contracts;
pub mod customer;
pub mod db;
pub mod dlq;
pub mod envelope;
pub mod events;
pub mod health;
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod page;
pub mod problem;
pub mod runtime;
pub mod secret;
pub mod service;
pub mod sku;
pub mod telemetry;
pub mod text;
pub mod topology;
pub mod trace_context;
pub mod webhook_signature;
