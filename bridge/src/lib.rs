//! approval-bridge core: the approval domain, the engine that decides, and the ports it
//! talks through (gateway, channels, store). No chat SDK is imported here; adapters live
//! in the `channels` crate and are wired by the binary.

pub mod approval;
pub mod bulletin;
pub mod channel;
pub mod config;
pub mod engine;
pub mod gateway;
pub mod grant;
pub mod history;
pub mod policy;
pub mod retry;
pub mod store;
pub mod telemetry;
pub mod time;
