//! Test support shared by the end-to-end tests and the benchmark: a real OpenClaw gateway
//! started on a free loopback port, and fakes of the chat services' wire APIs.

#![recursion_limit = "256"]

pub mod bridge;
pub mod conformance;
pub mod fake_discord;
pub mod fake_model;
pub mod fake_service;
pub mod fake_slack;
pub mod fake_telegram;
pub mod fault_proxy;
pub mod figures;
pub mod openclaw;
pub mod procfs;
pub mod service_faults;
pub mod synapse;
pub mod tls_proxy;
