//! What the adapters share because it is the same for every service: how an outcome and an
//! instant are shown, and the button codec's error. What differs per service (escaping,
//! limits, wire forms) stays in the service's own module.

#[cfg(any(feature = "telegram", feature = "discord", feature = "slack"))]
pub mod codec;
pub mod render;
