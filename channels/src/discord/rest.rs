//! The REST transport: reqwest with our own rate limiting, 429 handling and error classes.
//!
//! serenity's `Http` is not used for transport: it honours `proxy()` only with its rate
//! limiter disabled (else every call goes to discord.com), and with the limiter disabled
//! its error type drops the 429 body's `retry_after`. So the throttle is ours (governor,
//! innermost): a bot-wide slot (Discord's 50 requests/s) and a per-route slot (5 per 5 s
//! for message writes to one channel). Retries follow bridge's [`CallPolicy`]: a 429 is
//! honoured by waiting `retry_after`, and a global 429 (`global: true`) holds back every
//! call of this bot until it passes; network faults and 5xx answers are retried with backoff.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bridge::channel::ChannelError;
use bridge::retry::{CallPolicy, Verdict};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use reqwest::Method;
use serde_json::Value;

/// Discord's bot-wide limit.
pub const GLOBAL_PER_SECOND: u32 = 50;
/// Per-route burst for message writes to one channel (Discord: 5 per 5 s).
pub const ROUTE_BURST: u32 = 5;
pub const ROUTE_PERIOD: Duration = Duration::from_secs(5);

/// Discord JSON error codes that mean "that message/channel is gone".
const UNKNOWN_CHANNEL: i64 = 10003;
const UNKNOWN_MESSAGE: i64 = 10008;
/// "Cannot send messages to this user" (no shared server, or DMs closed).
pub const CANNOT_DM: i64 = 50007;

/// A 429's wait when Discord names none, and the shortest wait a 429 gets.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
const MIN_RETRY_AFTER: Duration = Duration::from_millis(50);

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{method} {route}: {message}")]
pub struct RestError {
    pub method: String,
    /// The route template (no ids, no tokens), e.g. `POST /channels/{id}/messages`.
    pub route: String,
    pub status: Option<u16>,
    /// Discord's JSON error code.
    pub code: Option<i64>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl RestError {
    pub fn is_transient(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s == 429 || s >= 500,
        }
    }

    /// What this error says about trying the call again: a 429 waits its `retry_after`
    /// ([`DEFAULT_RETRY_AFTER`] when Discord names none, at least [`MIN_RETRY_AFTER`]),
    /// network faults and 5xx are transient, anything else is final.
    fn verdict(&self) -> Verdict {
        match self.status {
            Some(429) => Verdict::After(
                self.retry_after
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .max(MIN_RETRY_AFTER),
            ),
            _ if self.is_transient() => Verdict::Transient,
            _ => Verdict::Final,
        }
    }

    /// For the engine.
    pub fn classify(self) -> ChannelError {
        let message = self.to_string();
        if self.is_transient() {
            return ChannelError::Transient {
                message,
                retry_after: self.retry_after,
            };
        }
        match (self.status, self.code) {
            (_, Some(UNKNOWN_MESSAGE | UNKNOWN_CHANNEL)) | (Some(404), _) => {
                ChannelError::MessageGone(message)
            }
            (Some(401), _) => ChannelError::Permanent(format!(
                "Discord rejected the bot token ({message}); check discord.bot_token"
            )),
            (_, Some(CANNOT_DM)) => ChannelError::Permanent(format!(
                "{message}: Discord refuses to DM this user; a bot can DM only users who share a server with it and allow DMs from its members"
            )),
            _ => ChannelError::Permanent(message),
        }
    }
}

pub struct Rest {
    http: reqwest::Client,
    /// `<api_url>/v10`.
    base: String,
    auth: String,
    global: DefaultDirectRateLimiter,
    per_route: DefaultKeyedRateLimiter<String>,
    /// Set by a global 429: nothing goes out before this instant.
    blocked_until: Mutex<Option<Instant>>,
    policy: CallPolicy,
}

impl Rest {
    pub fn new(api_url: &str, token: &str, policy: CallPolicy) -> Rest {
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "DiscordBot (https://github.com/openclaw/approval-bridge, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        let route = Quota::with_period(ROUTE_PERIOD / ROUTE_BURST)
            .expect("non-zero")
            .allow_burst(NonZeroU32::new(ROUTE_BURST).expect("non-zero"));
        Rest {
            http,
            base: format!("{}/v10", api_url.trim_end_matches('/')),
            auth: format!("Bot {token}"),
            global: RateLimiter::direct(Quota::per_second(
                NonZeroU32::new(GLOBAL_PER_SECOND).expect("non-zero"),
            )),
            per_route: RateLimiter::keyed(route),
            blocked_until: Mutex::new(None),
            policy,
        }
    }

    /// `GET`/`POST`/`PATCH` `path` (under `/v10`) with an optional JSON body.
    /// `route` names the call in logs and errors (never ids or tokens); `bucket`, when
    /// set, is the per-route throttle key (e.g. the channel a message goes to).
    /// Interaction callbacks pass `throttle: false`: Discord exempts them from the global
    /// limit and they have a 3-second deadline.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        route: &'static str,
        bucket: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, RestError> {
        let method = &method;
        self.policy
            .run(
                move || async move {
                    // Interaction callbacks are exempt from the global limit (and due within 3 s).
                    if !route.starts_with("POST /interactions/") {
                        self.wait_global_block().await;
                    }
                    if let Some(b) = bucket {
                        self.per_route
                            .until_key_ready(&format!("{route}|{b}"))
                            .await;
                        self.global.until_ready().await;
                    }
                    self.once(method.clone(), path, route, body).await
                },
                RestError::verdict,
                |err, state, pause| {
                    if err.status == Some(429) {
                        tracing::warn!(
                            route,
                            retry_after_ms = pause.as_millis() as u64,
                            "discord rate limit; waiting"
                        );
                    } else {
                        tracing::warn!(route, attempt = state.transient, error = %err, "discord call failed; retrying");
                    }
                    std::future::ready(None)
                },
            )
            .await
    }

    async fn wait_global_block(&self) {
        loop {
            let until = *self.blocked_until.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => return,
            }
        }
    }

    async fn once(
        &self,
        method: Method,
        path: &str,
        route: &'static str,
        body: Option<&Value>,
    ) -> Result<Value, RestError> {
        let err = |status: Option<u16>,
                   code: Option<i64>,
                   message: String,
                   retry_after: Option<Duration>| RestError {
            method: method.to_string(),
            route: route.to_owned(),
            status,
            code,
            message,
            retry_after,
        };
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("Authorization", &self.auth);
        if let Some(b) = body {
            req = req.json(b);
        }
        // reqwest's error text names the URL, which can hold an interaction token: drop it.
        let resp = req
            .send()
            .await
            .map_err(|e| err(None, None, e.without_url().to_string(), None))?;
        let status = resp.status().as_u16();
        let header_retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok())
            .map(Duration::from_secs_f64);
        let header_global = resp
            .headers()
            .get("x-ratelimit-global")
            .is_some_and(|v| v == "true");
        let text = resp
            .text()
            .await
            .map_err(|e| err(Some(status), None, e.without_url().to_string(), None))?;
        let json: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let code = json.get("code").and_then(Value::as_i64);
        let message = json
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}"));
        let retry_after = json
            .get("retry_after")
            .and_then(Value::as_f64)
            .map(Duration::from_secs_f64)
            .or(header_retry);
        if status == 429
            && (header_global || json.get("global").and_then(Value::as_bool) == Some(true))
        {
            let until = Instant::now() + retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            *self.blocked_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
            tracing::warn!(route, "discord global rate limit: holding every call");
        }
        Err(err(
            Some(status),
            code,
            format!("HTTP {status}: {message}"),
            retry_after,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(status: Option<u16>, code: Option<i64>) -> RestError {
        RestError {
            method: "PATCH".into(),
            route: "r".into(),
            status,
            code,
            message: "m".into(),
            retry_after: None,
        }
    }

    #[test]
    fn a_429_waits_its_retry_after_1_s_without_one_and_at_least_50_ms() {
        let limited = |retry_after| RestError {
            retry_after,
            ..e(Some(429), None)
        };
        assert_eq!(limited(None).verdict(), Verdict::After(DEFAULT_RETRY_AFTER));
        assert_eq!(
            limited(Some(Duration::from_millis(1))).verdict(),
            Verdict::After(MIN_RETRY_AFTER)
        );
        assert_eq!(
            limited(Some(Duration::from_secs(3))).verdict(),
            Verdict::After(Duration::from_secs(3))
        );
        assert_eq!(e(None, None).verdict(), Verdict::Transient);
        assert_eq!(e(Some(503), None).verdict(), Verdict::Transient);
        assert_eq!(e(Some(403), Some(CANNOT_DM)).verdict(), Verdict::Final);
    }

    #[test]
    fn errors_are_classified_by_whether_a_retry_helps() {
        assert!(matches!(
            e(None, None).classify(),
            ChannelError::Transient { .. }
        ));
        assert!(matches!(
            e(Some(429), None).classify(),
            ChannelError::Transient { .. }
        ));
        assert!(matches!(
            e(Some(502), None).classify(),
            ChannelError::Transient { .. }
        ));
        assert!(matches!(
            e(Some(404), Some(UNKNOWN_MESSAGE)).classify(),
            ChannelError::MessageGone(_)
        ));
        assert!(matches!(
            e(Some(400), Some(UNKNOWN_CHANNEL)).classify(),
            ChannelError::MessageGone(_)
        ));
        let ChannelError::Permanent(m) = e(Some(401), None).classify() else {
            panic!()
        };
        assert!(m.contains("discord.bot_token"), "{m}");
        let ChannelError::Permanent(m) = e(Some(403), Some(CANNOT_DM)).classify() else {
            panic!()
        };
        assert!(m.contains("share a server"), "{m}");
    }
}
