//! The outbound path: throttle, retry, and error classification around teloxide calls.
//!
//! The throttle sits innermost: every chat-directed call first waits for its chat's slot
//! (1 message per chat per second, with a small margin so network jitter cannot make two
//! sends arrive closer than a second) and for the bot-wide slot (30 per second, governor).
//! Prompts go first: a chat's slot goes to a waiting prompt before any edit or notice,
//! which is why the per-chat spacing is our own small scheduler; `ready` lets the engine
//! wait for a chat's slot before it chooses a digest's rows. Retries follow bridge's
//! [`CallPolicy`]: a 429's `retry_after` is honoured by sleeping and sending again; network
//! faults and 5xx answers are retried with backoff. Nothing is dropped, only delayed, up to
//! a bound after which the caller gets a transient error it may retry itself.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use bridge::channel::ChannelError;
use bridge::retry::{CallPolicy, Verdict};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use teloxide::{ApiError, RequestError};
use tokio::time::Instant;

/// Per-chat spacing: Telegram's "about one message per second" per chat, plus a margin.
pub const PER_CHAT_PERIOD: Duration = Duration::from_millis(1050);
/// Bot-wide limit: Telegram's 30 messages per second.
pub const GLOBAL_PER_SECOND: u32 = 30;

/// The shortest wait a 429 gets, whatever its `retry_after` says.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Where a call sends a message, which decides its place in the throttle.
#[derive(Debug, Clone, Copy)]
pub enum Dest {
    /// A prompt (or digest) to this chat, or an orphan's buttons removed: ahead of
    /// everything else for the chat.
    Prompt(i64),
    /// Any other message or edit in this chat.
    Chat(i64),
    /// Sends no message (getMe, callback answers): not throttled.
    Nothing,
}

/// How long a call held behind a prompt waits before looking again.
const YIELD: Duration = Duration::from_millis(20);
/// How long a free slot stays kept for the prompt that [`Throttle::ready`] announced.
const PROMISE: Duration = Duration::from_millis(250);
/// Above this many chats remembered, idle ones are forgotten.
const MAX_IDLE_CHATS: usize = 1024;

/// One chat's spacing.
#[derive(Debug, Default)]
struct Slot {
    /// When the chat may get its next message.
    next: Option<Instant>,
    /// Prompts waiting for this chat.
    prompts_waiting: usize,
    /// Until then the free slot is kept for a prompt that `ready` announced.
    promised: Option<Instant>,
}

impl Slot {
    /// Whether a call that is not a prompt must let a prompt go first.
    fn held_for_prompt(&self, now: Instant) -> bool {
        self.prompts_waiting > 0 || self.promised.is_some_and(|p| p > now)
    }
}

pub struct Throttle {
    chats: Mutex<HashMap<i64, Slot>>,
    global: DefaultDirectRateLimiter,
    policy: CallPolicy,
    /// The bot token, to scrub from error texts (reqwest errors carry the URL).
    token: String,
}

impl Throttle {
    pub fn new(token: &str, policy: CallPolicy) -> Throttle {
        let global = Quota::per_second(NonZeroU32::new(GLOBAL_PER_SECOND).expect("non-zero"));
        Throttle {
            chats: Mutex::new(HashMap::new()),
            global: RateLimiter::direct(global),
            policy,
            token: token.to_owned(),
        }
    }

    fn chats(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Slot>> {
        self.chats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for `dest`'s turn: the chat's next slot (which a waiting prompt takes before
    /// anything else), then the bot-wide slot.
    async fn turn(&self, dest: Dest) {
        let (chat, prompt) = match dest {
            Dest::Nothing => return,
            Dest::Prompt(chat) => (chat, true),
            Dest::Chat(chat) => (chat, false),
        };
        loop {
            let wake = {
                let now = Instant::now();
                let mut chats = self.chats();
                if chats.len() > MAX_IDLE_CHATS {
                    chats.retain(|_, s| s.held_for_prompt(now) || s.next.is_some_and(|n| n > now));
                }
                let slot = chats.entry(chat).or_default();
                let free_at = slot.next.unwrap_or(now);
                if !prompt && slot.held_for_prompt(now) {
                    free_at.max(now) + YIELD
                } else if free_at <= now {
                    slot.next = Some(now + PER_CHAT_PERIOD);
                    if prompt {
                        slot.promised = None;
                    }
                    break;
                } else {
                    free_at
                }
            };
            tokio::time::sleep_until(wake).await;
        }
        self.global.until_ready().await;
    }

    /// Waits until `chat` could take a prompt at once, then keeps the free slot for
    /// that prompt for a moment ([`PROMISE`]) so no edit or notice takes it first. What
    /// the prompt carries (a digest's rows) is best chosen after this.
    pub async fn ready(&self, chat: i64) {
        let _first = PromptFirst::new(self, chat);
        loop {
            let wake = {
                let now = Instant::now();
                let mut chats = self.chats();
                let slot = chats.entry(chat).or_default();
                match slot.next {
                    Some(next) if next > now => next,
                    _ => {
                        slot.promised = Some(now + PROMISE);
                        return;
                    }
                }
            };
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Runs `call` until it succeeds or the policy gives up, each attempt in `dest`'s turn.
    pub async fn call<T, F, Fut>(
        &self,
        dest: Dest,
        what: &'static str,
        call: F,
    ) -> Result<T, RequestError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RequestError>>,
    {
        let _first = match dest {
            Dest::Prompt(chat) => Some(PromptFirst::new(self, chat)),
            _ => None,
        };
        let chat = match dest {
            Dest::Prompt(c) | Dest::Chat(c) => Some(c),
            Dest::Nothing => None,
        };
        let call = &call;
        self.policy
            .run(
                move || async move {
                    self.turn(dest).await;
                    call().await
                },
                verdict,
                |e, state, _| {
                    match e {
                        RequestError::RetryAfter(s) => tracing::warn!(
                            method = what,
                            chat,
                            retry_after_s = s.seconds(),
                            "telegram rate limit; waiting"
                        ),
                        e => {
                            tracing::warn!(method = what, chat, attempt = state.transient, error = %self.redact(e), "telegram call failed; retrying")
                        }
                    }
                    std::future::ready(None)
                },
            )
            .await
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

/// Marks a prompt as waiting for its chat until dropped; other calls for the chat wait.
struct PromptFirst<'a> {
    throttle: &'a Throttle,
    chat: i64,
}

impl<'a> PromptFirst<'a> {
    fn new(throttle: &'a Throttle, chat: i64) -> PromptFirst<'a> {
        throttle.chats().entry(chat).or_default().prompts_waiting += 1;
        PromptFirst { throttle, chat }
    }
}

impl Drop for PromptFirst<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.throttle.chats().get_mut(&self.chat) {
            slot.prompts_waiting = slot.prompts_waiting.saturating_sub(1);
        }
    }
}

/// What a failed call says about trying it again: a 429 waits its `retry_after` (at least
/// [`MIN_RETRY_AFTER`]), network faults and 5xx are transient, anything else is final.
fn verdict(e: &RequestError) -> Verdict {
    match e {
        RequestError::RetryAfter(s) => Verdict::After(s.duration().max(MIN_RETRY_AFTER)),
        e if is_transient(e) => Verdict::Transient,
        _ => Verdict::Final,
    }
}

/// Whether a failed call may still have been carried out by Telegram (its answer was
/// lost or garbled): network faults and 5xx, not a refusal or a rate limit.
pub fn maybe_handled(e: &RequestError) -> bool {
    !matches!(e, RequestError::RetryAfter(_)) && is_transient(e)
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
    use std::sync::Arc;
    use tokio::task::JoinHandle;

    type Log = Arc<Mutex<Vec<(&'static str, Instant)>>>;

    fn recorder() -> (Arc<Throttle>, Log) {
        let t = Arc::new(Throttle::new("t", CallPolicy::default()));
        (t, Log::default())
    }

    /// A call in `dest`'s turn that records when it went out.
    fn timed_call(
        t: &Arc<Throttle>,
        log: &Log,
        dest: Dest,
        what: &'static str,
    ) -> JoinHandle<Result<(), RequestError>> {
        let (t, log) = (t.clone(), log.clone());
        tokio::spawn(async move {
            t.call(dest, what, || async {
                log.lock().unwrap().push((what, Instant::now()));
                Ok::<_, RequestError>(())
            })
            .await
        })
    }

    #[tokio::test]
    async fn a_waiting_prompt_takes_the_chat_slot_before_an_earlier_edit() {
        let (t, log) = recorder();
        let send = |dest, what| timed_call(&t, &log, dest, what);
        send(Dest::Prompt(7), "prompt 1").await.unwrap().unwrap();
        let edit = send(Dest::Chat(7), "edit");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let prompt = send(Dest::Prompt(7), "prompt 2");
        let elsewhere = send(Dest::Chat(8), "other chat");
        for task in [edit, prompt, elsewhere] {
            task.await.unwrap().unwrap();
        }
        let log = log.lock().unwrap().clone();
        let order: Vec<&str> = log.iter().map(|(w, _)| *w).collect();
        assert_eq!(order, ["prompt 1", "other chat", "prompt 2", "edit"]);
        assert!(log[2].1 - log[0].1 >= PER_CHAT_PERIOD);
        assert!(log[3].1 - log[2].1 >= PER_CHAT_PERIOD);
    }

    #[tokio::test]
    async fn ready_waits_for_the_chat_slot_and_keeps_it_for_the_prompt() {
        let (t, log) = recorder();
        let send = |dest, what| timed_call(&t, &log, dest, what);
        send(Dest::Prompt(7), "prompt").await.unwrap().unwrap();
        t.ready(7).await;
        let ready_at = Instant::now();
        // An edit that comes after `ready` must not take the slot kept for the digest.
        let edit = send(Dest::Chat(7), "edit");
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(Dest::Prompt(7), "digest").await.unwrap().unwrap();
        edit.await.unwrap().unwrap();
        let log = log.lock().unwrap().clone();
        let order: Vec<&str> = log.iter().map(|(w, _)| *w).collect();
        assert_eq!(order, ["prompt", "digest", "edit"]);
        assert!(
            ready_at - log[0].1 >= PER_CHAT_PERIOD,
            "ready waited for the slot"
        );
        assert!(log[2].1 - log[1].1 >= PER_CHAT_PERIOD);
    }

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
    fn a_429_waits_at_least_100_ms_5xx_are_retried_and_refusals_are_final() {
        let after = |s| {
            verdict(&RequestError::RetryAfter(
                teloxide::types::Seconds::from_seconds(s),
            ))
        };
        assert_eq!(after(0), Verdict::After(MIN_RETRY_AFTER));
        assert_eq!(after(3), Verdict::After(Duration::from_secs(3)));
        assert_eq!(
            verdict(&RequestError::Api(ApiError::Unknown("Bad Gateway".into()))),
            Verdict::Transient
        );
        assert_eq!(
            verdict(&RequestError::Api(ApiError::ChatNotFound)),
            Verdict::Final
        );
    }

    #[test]
    fn stale_messages_are_gone_and_limits_are_transient() {
        let t = Throttle::new("t", CallPolicy::default());
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
