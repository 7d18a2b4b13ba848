//! The Web API over reqwest: `POST <api_url>/<method>` with `Authorization: Bearer`,
//! wrapped in the throttle and retry that Slack's rate limits ask for.
//!
//! The throttle sits innermost: a message to a channel waits for that channel's slot
//! (Slack allows about one message per second per channel, with short bursts) and every
//! call for the app-wide slot. Retries follow bridge's [`CallPolicy`]: a 429's `Retry-After`
//! is honoured by sleeping and calling again; network faults and 5xx answers are retried
//! with backoff. Slack's `{"ok": false, "error": ...}` answers are typed and classified for
//! the engine.

use std::num::NonZeroU32;
use std::time::Duration;

use bridge::channel::ChannelError;
use bridge::retry::{CallPolicy, Verdict};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;

/// Which token a method takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// `xoxb-`: every Web API method the bot calls.
    Bot,
    /// `xapp-`: `apps.connections.open` only.
    App,
}

/// How a body is sent.
#[derive(Debug, Clone)]
pub enum Body {
    /// `application/x-www-form-urlencoded` (every method accepts it).
    Form(Vec<(&'static str, String)>),
    /// `application/json` (methods that take Block Kit).
    Json(Value),
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Slack answered `ok: false` with this error code (`invalid_auth`, `message_not_found`, ...).
    #[error("slack error {0}")]
    Slack(String),
    /// HTTP 429 after the retry budget was spent.
    #[error("rate limited (retry after {0:?})")]
    RateLimited(Duration),
    /// Network fault, 5xx, or an unreadable answer.
    #[error("{0}")]
    Transport(String),
    /// Any other HTTP status.
    #[error("HTTP {0}")]
    Status(u16),
}

impl ApiError {
    fn is_transient(&self) -> bool {
        matches!(self, ApiError::Transport(_) | ApiError::RateLimited(_))
            || matches!(self, ApiError::Slack(e) if matches!(e.as_str(), "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" | "ratelimited"))
    }

    /// What this error says about trying the call again: a 429 waits its `Retry-After`,
    /// network faults, 5xx and Slack's own outages are transient, anything else is final.
    fn verdict(&self) -> Verdict {
        match self {
            ApiError::RateLimited(d) => Verdict::After(*d),
            e if e.is_transient() => Verdict::Transient,
            _ => Verdict::Final,
        }
    }

    /// Classifies a final error for the engine.
    pub fn classify(self) -> ChannelError {
        let message = self.to_string();
        match self {
            ApiError::RateLimited(d) => ChannelError::Transient {
                message,
                retry_after: Some(d),
            },
            ref e if e.is_transient() => ChannelError::Transient {
                message,
                retry_after: None,
            },
            ApiError::Slack(ref e)
                if matches!(
                    e.as_str(),
                    "message_not_found"
                        | "cant_update_message"
                        | "channel_not_found"
                        | "edit_window_closed"
                        | "is_archived"
                ) =>
            {
                ChannelError::MessageGone(message)
            }
            _ => ChannelError::Permanent(message),
        }
    }
}

/// Per-channel message spacing: one per second, bursts of up to 5.
pub const PER_CHANNEL_PERIOD: Duration = Duration::from_secs(1);
pub const PER_CHANNEL_BURST: u32 = 5;
/// App-wide calls per second (Slack's tiers allow 20–100+ per minute per method; this
/// keeps a burst of prompts smooth without tripping them).
pub const GLOBAL_PER_SECOND: u32 = 10;

pub struct Api {
    http: reqwest::Client,
    base: String,
    bot_token: String,
    app_token: String,
    per_channel: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
    policy: CallPolicy,
}

impl Api {
    pub fn new(base: &str, bot_token: &str, app_token: &str, policy: CallPolicy) -> Api {
        let per_channel = Quota::with_period(PER_CHANNEL_PERIOD)
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(PER_CHANNEL_BURST).expect("non-zero"));
        let global = Quota::per_second(NonZeroU32::new(GLOBAL_PER_SECOND).expect("non-zero"))
            .allow_burst(NonZeroU32::new(2 * GLOBAL_PER_SECOND).expect("non-zero"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest client");
        Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            bot_token: bot_token.to_owned(),
            app_token: app_token.to_owned(),
            per_channel: RateLimiter::keyed(per_channel),
            global: RateLimiter::direct(global),
            policy,
        }
    }

    /// Calls `method` until it succeeds or fails for good. `channel` names the channel a
    /// message goes to (throttled per channel); `None` for other calls.
    pub async fn call(
        &self,
        method: &'static str,
        token: Token,
        channel: Option<&str>,
        body: Body,
    ) -> Result<Value, ApiError> {
        self.call_or_recover(method, token, channel, body, || std::future::ready(None))
            .await
    }

    /// [`Api::call`] for a call Slack may have carried out although its answer was lost (a
    /// network fault or 5xx): after the pause before each retry of such a failure `recover`
    /// looks for the result, and what it finds is the answer.
    pub async fn call_or_recover<R, F>(
        &self,
        method: &'static str,
        token: Token,
        channel: Option<&str>,
        body: Body,
        recover: R,
    ) -> Result<Value, ApiError>
    where
        R: Fn() -> F,
        F: Future<Output = Option<Value>>,
    {
        let (body, recover) = (&body, &recover);
        self.policy
            .run(
                move || async move {
                    if let Some(c) = channel {
                        self.per_channel.until_key_ready(&c.to_owned()).await;
                    }
                    self.global.until_ready().await;
                    self.once(method, token, body).await
                },
                ApiError::verdict,
                move |e, state, _| {
                    if let ApiError::RateLimited(d) = e {
                        tracing::warn!(
                            method,
                            channel,
                            retry_after_s = d.as_secs_f64(),
                            "slack rate limit; waiting"
                        );
                    } else {
                        tracing::warn!(method, channel, attempt = state.transient, error = %e, "slack call failed; retrying");
                    }
                    let lost_answer = matches!(e, ApiError::Transport(_));
                    async move { if lost_answer { recover().await } else { None } }
                },
            )
            .await
    }

    async fn once(&self, method: &str, token: Token, body: &Body) -> Result<Value, ApiError> {
        let token = match token {
            Token::Bot => &self.bot_token,
            Token::App => &self.app_token,
        };
        let req = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(token);
        let req = match body {
            Body::Form(f) => req.form(f),
            Body::Json(v) => req.json(v),
        };
        // reqwest errors name the URL, never the headers: the token stays out of them.
        let resp = req
            .send()
            .await
            .map_err(|e| ApiError::Transport(format!("{method}: {e}")))?;
        let status = resp.status().as_u16();
        if status == 429 {
            let secs = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1);
            return Err(ApiError::RateLimited(Duration::from_secs(secs.max(1))));
        }
        if status >= 500 {
            return Err(ApiError::Transport(format!("{method}: HTTP {status}")));
        }
        if status != 200 {
            return Err(ApiError::Status(status));
        }
        let v: Value = resp
            .json()
            .await
            .map_err(|e| ApiError::Transport(format!("{method}: unreadable answer: {e}")))?;
        if v["ok"].as_bool() == Some(true) {
            Ok(v)
        } else {
            Err(ApiError::Slack(
                v["error"].as_str().unwrap_or("unknown_error").to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_waits_its_retry_after_outages_are_retried_and_refusals_are_final() {
        let d = Duration::from_secs(3);
        assert_eq!(ApiError::RateLimited(d).verdict(), Verdict::After(d));
        for transient in [
            ApiError::Transport("reset".into()),
            ApiError::Slack("service_unavailable".into()),
        ] {
            assert_eq!(transient.verdict(), Verdict::Transient, "{transient}");
        }
        for last in [
            ApiError::Slack("invalid_auth".into()),
            ApiError::Status(404),
        ] {
            assert_eq!(last.verdict(), Verdict::Final, "{last}");
        }
    }

    #[test]
    fn errors_are_classified() {
        for gone in [
            "message_not_found",
            "cant_update_message",
            "channel_not_found",
        ] {
            assert!(
                matches!(
                    ApiError::Slack(gone.into()).classify(),
                    ChannelError::MessageGone(_)
                ),
                "{gone}"
            );
        }
        assert!(matches!(
            ApiError::Slack("invalid_auth".into()).classify(),
            ChannelError::Permanent(_)
        ));
        assert!(matches!(
            ApiError::Slack("internal_error".into()).classify(),
            ChannelError::Transient { .. }
        ));
        assert!(matches!(
            ApiError::Transport("x".into()).classify(),
            ChannelError::Transient {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            ApiError::RateLimited(Duration::from_secs(3)).classify(),
            ChannelError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            ApiError::Status(404).classify(),
            ChannelError::Permanent(_)
        ));
    }
}
