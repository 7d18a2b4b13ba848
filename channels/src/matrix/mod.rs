//! Matrix: prompts in an encrypted direct room per owner, answers by reaction (✅ ❌ ♾️)
//! or `/approve` text.
//!
//! - [`config`]: `[matrix]`, user ids validated as `@local:server`.
//! - [`render`]: plain body + escaped HTML, reaction keys and their normalization.
//!
//! With feature `matrix`, the channel itself, on matrix-sdk:
//! - `channel`: `Matrix`, the `Channel` port over the parts below, and its `Options`.
//! - `session`: login or restore; the saved session and store in `<state dir>/matrix/`.
//! - `rooms`: the owner's direct room: find, adopt or create, invite, wait for the join.
//! - `send`: the prompt and its seeded reactions, the outcome edit and redactions, notices.
//! - `receive`: the sync loop; timeline events → `Answer`s.
//! - `ids`: the channel's name, the prompt marker, `<room id>|<event id>` references, the
//!   reply handle.
//! - `error`: matrix-sdk errors → `ChannelError`, transient or permanent.
//!
//! `config` and `render` are plain Rust, so tools such as the fuzz targets use them without
//! building the Matrix SDK.

pub mod config;
pub mod render;

#[cfg(feature = "matrix")]
mod channel;
#[cfg(feature = "matrix")]
mod error;
#[cfg(feature = "matrix")]
mod ids;
#[cfg(feature = "matrix")]
mod receive;
#[cfg(feature = "matrix")]
mod rooms;
#[cfg(feature = "matrix")]
mod send;
#[cfg(feature = "matrix")]
mod session;

#[cfg(feature = "matrix")]
pub use channel::{Matrix, Options};
pub use config::{ConfigError, MatrixConfig};
#[cfg(feature = "matrix")]
pub use ids::{NAME, PROMPT_KEY, Reply};
