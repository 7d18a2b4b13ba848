//! The outbound path: throttle, retry, and error classification around teloxide calls.
//!
//! The throttle sits innermost: every chat-directed call first waits for its chat's slot
//! (1 message per chat per second, with a small margin so network jitter cannot make two
//! sends arrive closer than a second) and for the bot-wide slot (30 per second). A 429's
//! `retry_after` is honoured by sleeping and sending again; network faults and 5xx answers
//! are retried with exponential backoff. Nothing is dropped, only delayed, up to a bound
//! after which the caller gets a transient error it may retry itself.

use std::future::Future;
use std::num::NonZeroU32;
use std::time::Duration;

use bridge::channel::ChannelError;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use teloxide::{ApiError, RequestError};

/// Per-chat spacing: Telegram's "about one message per second" per chat, plus a margin.
pub const PER_CHAT_PERIOD: Duration = Duration::from_millis(1050);
/// Bot-wide limit: Telegram's 30 messages per second.
pub const GLOBAL_PER_SECOND: u32 = 30;

/// How hard to try before giving the error back.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Network/5xx retries.
    pub transient_attempts: u32,
    /// First backoff; doubles per attempt.
    pub backoff: Duration,
    /// Total time spent honouring 429s before giving up.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            transient_attempts: 4,
            backoff: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

pub struct Throttle {
    per_chat: DefaultKeyedRateLimiter<i64>,
    global: DefaultDirectRateLimiter,
    policy: RetryPolicy,
    /// The bot token, to scrub from error texts (reqwest errors carry the URL).
    token: String,
}

impl Throttle {
    pub fn new(token: &str, policy: RetryPolicy) -> Throttle {
        let per_chat = Quota::with_period(PER_CHAT_PERIOD).expect("non-zero period");
        let global = Quota::per_second(NonZeroU32::new(GLOBAL_PER_SECOND).expect("non-zero"));
        Throttle {
            per_chat: RateLimiter::keyed(per_chat),
            global: RateLimiter::direct(global),
            policy,
            token: token.to_owned(),
        }
    }

    /// Runs `call` until it succeeds or fails for good. `chat` names the chat a message
    /// goes to (throttled); `None` for calls that send no message (callback answers).
    pub async fn call<T, F, Fut>(
        &self,
        chat: Option<i64>,
        what: &'static str,
        call: F,
    ) -> Result<T, RequestError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RequestError>>,
    {
        let mut transient = 0;
        let mut waited = Duration::ZERO;
        loop {
            if let Some(chat) = chat {
                self.per_chat.until_key_ready(&chat).await;
                self.global.until_ready().await;
            }
            let err = match call().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match &err {
                RequestError::RetryAfter(s) if waited < self.policy.max_retry_after => {
                    let wait = s.duration().max(Duration::from_millis(100));
                    tracing::warn!(
                        method = what,
                        chat,
                        retry_after_s = s.seconds(),
                        "telegram rate limit; waiting"
                    );
                    waited += wait;
                    tokio::time::sleep(wait).await;
                }
                e if is_transient(e) && transient < self.policy.transient_attempts => {
                    let wait = self.policy.backoff * 2u32.pow(transient);
                    transient += 1;
                    tracing::warn!(method = what, chat, attempt = transient, error = %self.redact(e), "telegram call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(err),
            }
        }
    }

    /// The error's text with the bot token removed.
    pub fn redact(&self, e: &RequestError) -> String {
        redact(&e.to_string(), &self.token)
    }

    /// Classifies a final error for the engine.
    pub fn classify(&self, e: RequestError) -> ChannelError {
        let message = self.redact(&e);
        match e {
            RequestError::RetryAfter(s) => ChannelError::Transient {
                message,
                retry_after: Some(s.duration()),
            },
            ref e if is_transient(e) => ChannelError::Transient {
                message,
                retry_after: None,
            },
            RequestError::Api(
                ApiError::MessageToEditNotFound
                | ApiError::MessageIdInvalid
                | ApiError::MessageCantBeEdited,
            ) => ChannelError::MessageGone(message),
            _ => ChannelError::Permanent(message),
        }
    }
}

fn is_transient(e: &RequestError) -> bool {
    match e {
        RequestError::Network(_) | RequestError::Io(_) | RequestError::InvalidJson { .. } => true,
        RequestError::Api(ApiError::Unknown(text)) => {
            let t = text.to_ascii_lowercase();
            [
                "internal server error",
                "bad gateway",
                "gateway timeout",
                "service unavailable",
                "too many requests",
            ]
            .iter()
            .any(|p| t.contains(p))
        }
        _ => false,
    }
}

pub fn redact(text: &str, token: &str) -> String {
    if token.is_empty() {
        text.to_owned()
    } else {
        text.replace(token, "<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_survives_in_error_text() {
        assert_eq!(
            redact(
                "error sending request for url (https://api.telegram.org/bot123:ABC/sendMessage)",
                "123:ABC"
            ),
            "error sending request for url (https://api.telegram.org/bot<redacted>/sendMessage)"
        );
    }

    #[test]
    fn stale_messages_are_gone_and_limits_are_transient() {
        let t = Throttle::new("t", RetryPolicy::default());
        assert!(matches!(
            t.classify(RequestError::Api(ApiError::MessageToEditNotFound)),
            ChannelError::MessageGone(_)
        ));
        assert!(matches!(
            t.classify(RequestError::Api(ApiError::MessageCantBeEdited)),
            ChannelError::MessageGone(_)
        ));
        assert!(matches!(
            t.classify(RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(3))),
            ChannelError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            t.classify(RequestError::Api(ApiError::ChatNotFound)),
            ChannelError::Permanent(_)
        ));
    }
}
