//! Discord adapter: prompts with buttons in the owner's DM with the bot, answers by button
//! press (gateway `INTERACTION_CREATE`) or `/approve` text in the DM (`MESSAGE_CREATE`).
//!
//! - [`codec`]: button `custom_id`, one form per approval kind, ≤ 100 characters.
//! - [`render`]: the prompt embed, escaped and cut within Discord's limits, and buttons.
//! - [`rest`]: REST transport with our throttle, 429 `retry_after` (global and per route).
//! - [`receive`]: gateway dispatches → `Answer`s.
//! - [`gateway`]: the WebSocket session: identify/resume, heartbeats, reconnects.
//!
//! A press is acknowledged first (`DEFERRED_UPDATE_MESSAGE`, within Discord's 3-second
//! deadline), then handed to the engine; the engine's notice reaches the presser as an
//! ephemeral follow-up (`POST /webhooks/{app}/{token}`, flags 64), and the outcome edits
//! the prompt (`PATCH`, buttons removed). Bulletins are markdown-escaped message content in
//! the DM, mentioning nobody, edited with `PATCH`. The gateway loop reports the channel down
//! when Discord rejects the token (close 4004, or 401 on `GET /gateway/bot`), up at READY.

pub mod codec;
pub mod config;
pub mod gateway;
pub mod receive;
pub mod render;
pub mod rest;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bridge::approval::{Approval, Outcome, now_ms};
use bridge::bulletin::Bulletin;
use bridge::channel::{Answer, Channel, ChannelError, MessageRef, Notice, Reach, ReplyTo, Target};
use bridge::retry::CallPolicy;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

pub use config::{ConfigError, DiscordConfig, Snowflake};
pub use receive::Reply;

use crate::common::reach::ReachCell;
use crate::common::section;

/// The channel's name, also `Target::channel` and `Responder::channel`.
pub const NAME: &str = "discord";

/// Discord's limit on a message's `content`.
const MAX_CONTENT: usize = 2000;
/// Ephemeral message flag.
const EPHEMERAL: u64 = 1 << 6;
/// Message flag SUPPRESS_NOTIFICATIONS: delivered without a push or a sound.
const SILENT: u64 = 1 << 12;
/// Interaction response type: acknowledge a component press, edit nothing yet.
const DEFERRED_UPDATE_MESSAGE: u64 = 6;

/// Tunables with production defaults; tests shorten them.
#[derive(Debug, Clone)]
pub struct Options {
    /// First pause after a dropped gateway connection; doubles per failure (jittered to
    /// 50–100 %).
    pub min_backoff: Duration,
    /// Longest pause between reconnects (also, exactly, after a fatal close such as a bad
    /// token).
    pub max_backoff: Duration,
    /// How hard each REST call is tried before its error goes back to the engine.
    pub retry: CallPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            retry: CallPolicy::default(),
        }
    }
}

/// The bot's own user, from `GET /users/@me` or READY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotUser {
    pub id: String,
    pub username: String,
}

/// The Discord channel.
pub struct Discord {
    rest: Arc<rest::Rest>,
    token: String,
    allow_from: HashSet<u64>,
    targets: Vec<Target>,
    options: Options,
    /// DM channel id by user id, and back (`POST /users/@me/channels` is idempotent, so
    /// after a restart the cache refills with the same ids).
    dms: DmCache,
    me: OnceLock<BotUser>,
    /// Set while the gateway session is READY.
    ready: AtomicBool,
    /// Whether Discord takes the bot's token, as the gateway loop last saw.
    reach: ReachCell,
}

impl Discord {
    /// Builds the adapter from its config and the resolved bot token (the config holds
    /// only the secret's reference). No I/O: call `health` to check the token.
    pub fn new(config: &DiscordConfig, bot_token: &str) -> Result<Discord, ConfigError> {
        Self::with_options(config, bot_token, Options::default())
    }

    pub fn with_options(
        config: &DiscordConfig,
        bot_token: &str,
        options: Options,
    ) -> Result<Discord, ConfigError> {
        config.validate()?;
        let api = config::parse_api_url(&config.api_url)?;
        let token = bot_token.trim().trim_start_matches("Bot ").to_owned();
        Ok(Discord {
            rest: Arc::new(rest::Rest::new(api.as_str(), &token, options.retry)),
            token,
            allow_from: config.allow_from.iter().map(|u| u.0).collect(),
            targets: section::targets(NAME, &config.effective_targets()),
            options,
            dms: DmCache::default(),
            me: OnceLock::new(),
            ready: AtomicBool::new(false),
            reach: ReachCell::new(NAME),
        })
    }

    /// Whether the gateway session is READY (or RESUMED) right now.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn dm_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.dms.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn dm_channel(&self, user: &str) -> Result<String, ChannelError> {
        open_dm(&self.rest, &self.dms, user).await
    }

    /// The DM with `user` for a new message: a user id that names no DM is a permanent
    /// failure of the send, not a message gone.
    async fn dm_to_send(&self, user: &str) -> Result<String, ChannelError> {
        self.dm_channel(user).await.map_err(|e| match e {
            ChannelError::MessageGone(m) => ChannelError::Permanent(m),
            e => e,
        })
    }

    /// The target user whose DM `channel` is, if it is one of ours.
    fn owner_of_dm(&self, channel: &str) -> Option<String> {
        self.dm_cache()
            .iter()
            .find(|(_, c)| c.as_str() == channel)
            .map(|(u, _)| u.clone())
    }

    async fn get_me(&self) -> Result<BotUser, ChannelError> {
        let v = self
            .rest
            .call(Method::GET, "/users/@me", "GET /users/@me", None, None)
            .await
            .map_err(rest::RestError::classify)?;
        let me = BotUser {
            id: v
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            username: v
                .get("username")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        };
        if v.get("bot").and_then(Value::as_bool) != Some(true) {
            return Err(ChannelError::Permanent(format!(
                "discord.bot_token belongs to {} (id {}), which is not a bot account",
                me.username, me.id
            )));
        }
        let _ = self.me.set(me.clone());
        Ok(me)
    }

    /// `PATCH /channels/{id}/messages/{id}`: rewrites one of the bot's messages.
    async fn edit_message(
        &self,
        channel: &str,
        message: &str,
        body: &Value,
    ) -> Result<(), ChannelError> {
        self.rest
            .call(
                Method::PATCH,
                &format!("/channels/{channel}/messages/{message}"),
                "PATCH /channels/{id}/messages/{id}",
                Some(channel),
                Some(body),
            )
            .await
            .map(|_| ())
            .map_err(rest::RestError::classify)
    }

    /// `POST /channels/{id}/messages` to `target`'s DM; a gone channel is permanent there.
    async fn send_message(
        &self,
        target: &Target,
        channel: &str,
        body: &Value,
    ) -> Result<MessageRef, ChannelError> {
        let msg = self
            .rest
            .call(
                Method::POST,
                &format!("/channels/{channel}/messages"),
                "POST /channels/{id}/messages",
                Some(channel),
                Some(body),
            )
            .await
            .map_err(|e| match e.classify() {
                ChannelError::MessageGone(m) => ChannelError::Permanent(m),
                e => e,
            })?;
        let id = msg
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ChannelError::Transient {
                message: "message without an id".into(),
                retry_after: None,
            })?;
        Ok(MessageRef {
            target: target.clone(),
            message: id.to_owned(),
        })
    }

    fn on_ready(&self, data: &Value) {
        let id = data
            .pointer("/user/id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = data
            .pointer("/user/username")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match self.me.get() {
            Some(me) if me.id != id => {
                tracing::error!(expected = %me.id, got = %id, "discord gateway READY names another bot user than GET /users/@me");
            }
            _ => {
                let _ = self.me.set(BotUser {
                    id: id.to_owned(),
                    username: name.to_owned(),
                });
            }
        }
        self.ready.store(true, Ordering::SeqCst);
        self.reach.up();
        tracing::info!(bot = %name, id = %id, "discord gateway ready");
    }

    /// A component press: acknowledged first (3-second deadline), then handed on.
    fn on_interaction(&self, data: &Value, answers: &mpsc::Sender<Answer>) {
        let channel_id = data
            .get("channel_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let known = self.owner_of_dm(&channel_id).is_some();
        let Some(press) = receive::interaction(data, |c| self.owner_of_dm(c)) else {
            return;
        };
        let rest = self.rest.clone();
        let dms = self.dms.clone();
        let answers = answers.clone();
        let targets: Vec<String> = if known {
            Vec::new()
        } else {
            self.targets.iter().map(|t| t.chat.clone()).collect()
        };
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let path = format!(
                "/interactions/{}/{}/callback",
                press.interaction_id, press.token
            );
            let body = json!({"type": DEFERRED_UPDATE_MESSAGE});
            let acked = match rest
                .call(
                    Method::POST,
                    &path,
                    "POST /interactions/{id}/{token}/callback",
                    None,
                    Some(&body),
                )
                .await
            {
                Ok(_) => {
                    tracing::debug!(
                        ack_ms = started.elapsed().as_millis() as u64,
                        "interaction acknowledged"
                    );
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not acknowledge the interaction; the answer goes to the presser's DM");
                    false
                }
            };
            let mut answer = press.answer;
            // Unacknowledged, the interaction has no follow-up webhook (Discord answers
            // "Unknown Webhook"): the presser is answered in their DM instead.
            if !acked && let Ok(dm) = open_dm(&rest, &dms, &answer.responder.user_id).await {
                let to_dm = Reply::Channel {
                    channel: dm,
                    reply_to: None,
                };
                answer.reply = ReplyTo::new(NAME, to_dm);
            }
            // A press in a DM not opened since start (it failed then): learn which
            // target's DM it is, so a prompt sent before a restart is still recognised.
            if let bridge::channel::Via::Prompt(r) = &mut answer.via {
                for user in targets {
                    if let Ok(c) = open_dm(&rest, &dms, &user).await
                        && c == channel_id
                    {
                        r.target.chat = user;
                        break;
                    }
                }
            }
            let _ = answers.send(answer).await;
        });
    }
}

type DmCache = Arc<Mutex<HashMap<String, String>>>;

/// The DM channel with `user`, from the cache or opened (found) with
/// `POST /users/@me/channels`, which is idempotent.
async fn open_dm(rest: &rest::Rest, dms: &DmCache, user: &str) -> Result<String, ChannelError> {
    if let Some(c) = dms.lock().unwrap_or_else(|p| p.into_inner()).get(user) {
        return Ok(c.clone());
    }
    if user.is_empty() || !user.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ChannelError::MessageGone(format!(
            "{user:?} is not a Discord user id"
        )));
    }
    let v = rest
        .call(
            Method::POST,
            "/users/@me/channels",
            "POST /users/@me/channels",
            Some("dm"),
            Some(&json!({"recipient_id": user})),
        )
        .await
        .map_err(rest::RestError::classify)?;
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ChannelError::Transient {
            message: "DM channel without an id".into(),
            retry_after: None,
        })?
        .to_owned();
    dms.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(user.to_owned(), id.clone());
    Ok(id)
}

/// Discord's message nonce (at most 25 characters) for one prompt: the same approval to the
/// same target always yields the same nonce.
pub fn nonce(approval: &Approval, target: &Target) -> String {
    nonce_of(approval.id.as_str(), target)
}

/// The nonce of a message identified by `key` to `target`.
fn nonce_of(key: &str, target: &Target) -> String {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: stable across processes of one build, which is all a
    // nonce checked "within the past few minutes" needs.
    let hash = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        (salt, key, target.chat.as_str()).hash(&mut h);
        h.finish()
    };
    let s = format!("ab{:016x}{:016x}", hash(1), hash(2));
    s[..25].to_owned()
}

fn allowed_mentions_none() -> Value {
    json!({"parse": [], "replied_user": false})
}

/// A notice as message content: markdown-escaped, within Discord's 2000 characters.
fn notice_content(notice: &Notice) -> String {
    render::escape_capped(&notice.text(), MAX_CONTENT)
}

#[async_trait]
impl Channel for Discord {
    fn name(&self) -> &str {
        NAME
    }

    fn targets(&self) -> Vec<Target> {
        self.targets.clone()
    }

    fn allows(&self, user_id: &str) -> bool {
        section::allows_decimal(&self.allow_from, user_id)
    }

    async fn health(&self) -> Result<String, ChannelError> {
        let me = self.get_me().await.map_err(|e| match e {
            ChannelError::MessageGone(m) => ChannelError::Permanent(m),
            e => e,
        })?;
        Ok(format!("{} (id {})", me.username, me.id))
    }

    #[tracing::instrument(skip_all, fields(target = %target, approval = %approval.id))]
    async fn deliver(
        &self,
        target: &Target,
        approval: &Approval,
    ) -> Result<MessageRef, ChannelError> {
        let components = render::components(approval)
            .map_err(|e| ChannelError::Permanent(format!("cannot build buttons: {e}")))?;
        let channel = self.dm_to_send(&target.chat).await?;
        // The nonce makes the send idempotent: a bridge killed between Discord's answer
        // and its own store write sends again after the restart, and Discord hands back
        // the same message instead of a duplicate prompt.
        let body = json!({
            "embeds": [render::embed(approval, render::Footer::Pending { now_ms: now_ms() })],
            "components": components,
            "allowed_mentions": allowed_mentions_none(),
            "nonce": nonce(approval, target),
            "enforce_nonce": true,
        });
        self.send_message(target, &channel, &body).await
    }

    #[tracing::instrument(skip_all, fields(user = %prompt.target.chat, message = %prompt.message, approval = %approval.id))]
    async fn finish(
        &self,
        prompt: &MessageRef,
        approval: &Approval,
        outcome: &Outcome,
    ) -> Result<(), ChannelError> {
        if prompt.message.is_empty() || !prompt.message.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ChannelError::MessageGone(format!(
                "{:?} is not a Discord message id",
                prompt.message
            )));
        }
        let channel = self.dm_channel(&prompt.target.chat).await?;
        let body = json!({
            "embeds": [render::embed(approval, render::Footer::Finished(outcome))],
            "components": [],
            "allowed_mentions": allowed_mentions_none(),
        });
        self.edit_message(&channel, &prompt.message, &body).await
    }

    #[tracing::instrument(skip_all, fields(target = %target))]
    async fn post(&self, target: &Target, bulletin: &Bulletin) -> Result<MessageRef, ChannelError> {
        let channel = self.dm_to_send(&target.chat).await?;
        let content = render::escape_capped(&bulletin.text(), MAX_CONTENT);
        // One nonce per post: a retry of this call whose answer was lost gets the message
        // Discord already made; another post is another message (and another notification).
        let mut body = json!({
            "content": content,
            "components": render::revoke_rows(bulletin.revokes()),
            "allowed_mentions": allowed_mentions_none(),
            "nonce": nonce_of(&uuid::Uuid::new_v4().to_string(), target),
            "enforce_nonce": true,
        });
        if bulletin.quiet() {
            body["flags"] = json!(SILENT);
        }
        self.send_message(target, &channel, &body).await
    }

    #[tracing::instrument(skip_all, fields(user = %post.target.chat, message = %post.message))]
    async fn edit_post(&self, post: &MessageRef, bulletin: &Bulletin) -> Result<(), ChannelError> {
        if post.message.is_empty() || !post.message.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ChannelError::MessageGone(format!(
                "{:?} is not a Discord message id",
                post.message
            )));
        }
        let channel = self.dm_channel(&post.target.chat).await?;
        let body = json!({
            "content": render::escape_capped(&bulletin.text(), MAX_CONTENT),
            "allowed_mentions": allowed_mentions_none(),
        });
        self.edit_message(&channel, &post.message, &body).await
    }

    fn reach(&self) -> Option<watch::Receiver<Reach>> {
        Some(self.reach.subscribe())
    }

    async fn notify(&self, to: &ReplyTo, notice: &Notice) -> Result<(), ChannelError> {
        let content = notice_content(notice);
        let components = render::revoke_rows(notice.revokes());
        let reply = to.handle::<Reply>().ok_or_else(|| {
            ChannelError::Permanent(format!("not a Discord reply handle: {to:?}"))
        })?;
        match reply {
            Reply::Interaction { application, token } => {
                // Follow-up to the deferred press: ephemeral, only the presser sees it.
                let body = json!({"content": content, "components": components, "flags": EPHEMERAL, "allowed_mentions": allowed_mentions_none()});
                self.rest
                    .call(
                        Method::POST,
                        &format!("/webhooks/{application}/{token}"),
                        "POST /webhooks/{app}/{token}",
                        None,
                        Some(&body),
                    )
                    .await
            }
            Reply::Channel { channel, reply_to } => {
                let mut body = json!({"content": content, "components": components, "allowed_mentions": allowed_mentions_none()});
                if let Some(reply_to) = reply_to {
                    body["message_reference"] =
                        json!({"message_id": reply_to, "fail_if_not_exists": false});
                }
                self.rest
                    .call(
                        Method::POST,
                        &format!("/channels/{channel}/messages"),
                        "POST /channels/{id}/messages",
                        Some(channel),
                        Some(&body),
                    )
                    .await
            }
        }
        .map(|_| ())
        .map_err(rest::RestError::classify)
    }

    #[tracing::instrument(skip_all, fields(channel = NAME))]
    async fn run(&self, answers: mpsc::Sender<Answer>, shutdown: broadcast::Receiver<()>) {
        // Learn the targets' DM channels first, so presses on prompts sent before a
        // restart map to their target at once.
        for t in &self.targets {
            if let Err(e) = self.dm_channel(&t.chat).await {
                tracing::warn!(user = %t.chat, error = %e, "cannot open the DM with a target yet");
            }
        }
        gateway::run(self, answers, shutdown).await;
    }
}
