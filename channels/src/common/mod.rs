//! What the adapters share because it is the same for every service: how an outcome and an
//! instant are shown, the button codec's error, what an adapter makes of its config
//! section, and how it reports whether it reaches its chats. What differs per service (escaping, limits, wire forms) stays in its own module.

#[cfg(any(feature = "telegram", feature = "discord", feature = "slack"))]
pub mod codec;
#[cfg(any(
    feature = "telegram",
    feature = "matrix",
    feature = "discord",
    feature = "slack"
))]
pub mod reach;
pub mod render;
#[cfg(any(feature = "telegram", feature = "discord", feature = "slack"))]
pub mod section;
