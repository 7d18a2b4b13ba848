//! approval-bridge chat adapters, one module per chat service, each implementing the
//! `bridge::channel::Channel` port. Adapters translate between the service's wire format
//! and the engine's types; they never decide anything.

#![recursion_limit = "256"]

mod common;
pub mod config;

#[cfg(feature = "telegram")]
pub mod telegram;

/// Always built: its config and rendering need no SDK; the adapter needs feature `matrix`.
pub mod matrix;

#[cfg(feature = "discord")]
pub mod discord;

#[cfg(feature = "slack")]
pub mod slack;
