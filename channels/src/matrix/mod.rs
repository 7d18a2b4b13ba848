//! Matrix: prompts in an encrypted direct room per owner, answers by reaction (✅ ❌ ♾️)
//! or `/approve` text.
//!
//! - [`config`]: `[matrix]`, user ids validated as `@local:server`.
//! - [`render`]: plain body + escaped HTML, reaction keys and their normalization.
//! - `adapter` (feature `matrix`): the channel itself, on matrix-sdk.
//!
//! `config` and `render` are plain Rust, so tools such as the fuzz targets use them without
//! building the Matrix SDK.

pub mod config;
pub mod render;

#[cfg(feature = "matrix")]
mod adapter;

#[cfg(feature = "matrix")]
pub use adapter::*;
pub use config::{ConfigError, MatrixConfig};
