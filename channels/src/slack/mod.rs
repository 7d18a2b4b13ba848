//! Slack adapter: Block Kit prompts with buttons in the owner's DM with the bot, answers by
//! button press or `/approve` text over Socket Mode (no public URL needed). Built on the
//! Web API over reqwest and a tokio-tungstenite WebSocket, so acks, reconnects and rate
//! limits are ours to see and test. Bulletins are mrkdwn-escaped text in the DM
//! (`chat.postMessage`, edited with `chat.update`). Each Socket Mode connect checks the bot
//! token (`auth.test`) and opens with the app token: a token Slack refuses
//! (`invalid_auth`, `token_revoked`, `account_inactive`...) sets the channel's reach down,
//! the next `hello` sets it up.
//!
//! - [`codec`]: button `action_id`/`value`, one form per approval kind.
//! - [`render`]: Block Kit prompts, escaped and cut within Slack's limits.
//! - [`api`]: Web API calls, throttle (governor), `Retry-After`, error classes.
//! - [`adopt`]: a prompt Slack stored but the bridge never heard of is adopted, not repeated.
//! - [`receive`]: envelopes → `Answer`s.
//! - [`socket`]: the Socket Mode connection: hello, acks, disconnects, reconnects.
//! - [`signature`]: request signatures for the optional HTTP interactivity endpoint.

pub mod adopt;
pub mod api;
pub mod codec;
pub mod config;
pub mod receive;
pub mod render;
pub mod signature;
pub mod socket;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bridge::approval::{Approval, ApprovalId, Outcome, now_ms};
use bridge::bulletin::Bulletin;
use bridge::channel::{
    Answer, Channel, ChannelError, MessageRef, Notice, Reach, Refresh, ReplyTo, Target,
};
use bridge::retry::CallPolicy;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use api::{Api, Body, Token};
pub use config::{ConfigError, SlackConfig, UserId};
pub use receive::Reply;

use crate::common::reach::ReachCell;
use crate::common::section;

/// The channel's name, also `Target::channel` and `Responder::channel`.
pub const NAME: &str = "slack";

/// Tunables with production defaults; tests shorten them.
#[derive(Debug, Clone)]
pub struct Options {
    /// First pause after a failed Socket Mode connection; doubles up to `max_backoff`
    /// (jittered to 50–100 %).
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Ping interval on the Socket Mode connection; a connection silent for three
    /// intervals is dropped and reopened.
    pub ping_interval: Duration,
    /// How hard each Web API call is tried before its error goes back to the engine.
    pub retry: CallPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            ping_interval: Duration::from_secs(30),
            retry: CallPolicy::default(),
        }
    }
}

/// The Slack channel.
pub struct Slack {
    api: Arc<Api>,
    allow_from: HashSet<String>,
    targets: Vec<Target>,
    options: Options,
    /// IM channel id → the user whose DM it is, learned from `conversations.open`.
    dm_owner: Mutex<HashMap<String, String>>,
    /// User → IM channel id.
    dm_of: Mutex<HashMap<String, String>>,
    /// IM channels whose history was read for prompts to adopt since start.
    looked: Mutex<HashSet<String>>,
    /// Whether Slack takes the tokens, as the Socket Mode loop last saw.
    reach: ReachCell,
}

impl Slack {
    /// `chat.update` of a prompt: the approval rendered again with `footer`.
    async fn rewrite(
        &self,
        prompt: &MessageRef,
        approval: &Approval,
        footer: render::Footer<'_>,
    ) -> Result<(), ChannelError> {
        let (channel, ts) = receive::split_message_id(&prompt.message).ok_or_else(|| {
            ChannelError::MessageGone(format!("{:?} is not a Slack message id", prompt.message))
        })?;
        let r = render::render(approval, footer);
        let body = json!({"channel": channel, "ts": ts, "text": r.text, "blocks": r.blocks});
        self.api
            .call("chat.update", Token::Bot, None, Body::Json(body))
            .await
            .map(|_| ())
            .map_err(api::ApiError::classify)
    }

    /// Builds the adapter from its config and the resolved tokens (the config holds only
    /// the secrets' references). No I/O: call `health` to check the bot token.
    pub fn new(
        config: &SlackConfig,
        bot_token: &str,
        app_token: &str,
    ) -> Result<Slack, ConfigError> {
        Self::with_options(config, bot_token, app_token, Options::default())
    }

    pub fn with_options(
        config: &SlackConfig,
        bot_token: &str,
        app_token: &str,
        options: Options,
    ) -> Result<Slack, ConfigError> {
        config.validate()?;
        config::check_token("bot_token", bot_token, "xoxb-")?;
        config::check_token("app_token", app_token, "xapp-")?;
        let base = config::parse_api_url(&config.api_url)?;
        Ok(Slack {
            api: Arc::new(Api::new(base.as_str(), bot_token, app_token, options.retry)),
            allow_from: config.allow_from.iter().map(|u| u.0.clone()).collect(),
            targets: section::targets(NAME, &config.effective_targets()),
            options,
            dm_owner: Mutex::new(HashMap::new()),
            dm_of: Mutex::new(HashMap::new()),
            looked: Mutex::new(HashSet::new()),
            reach: ReachCell::new(NAME),
        })
    }

    /// The IM channel between the bot and `user` (`conversations.open`; cached).
    async fn open_dm(&self, user: &str) -> Result<String, ChannelError> {
        if let Some(c) = self
            .dm_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
        {
            return Ok(c.clone());
        }
        let v = self
            .api
            .call(
                "conversations.open",
                Token::Bot,
                None,
                Body::Form(vec![("users", user.to_owned())]),
            )
            .await
            .map_err(api::ApiError::classify)?;
        let channel = v["channel"]["id"]
            .as_str()
            .ok_or_else(|| {
                ChannelError::Permanent("conversations.open answered without a channel id".into())
            })?
            .to_owned();
        self.dm_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.to_owned(), channel.clone());
        self.dm_owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.clone(), user.to_owned());
        Ok(channel)
    }

    /// A prompt for approval `id` already in the IM `channel` (see [`adopt`]), as
    /// `chat.postMessage` would have answered.
    async fn adoptable(&self, channel: &str, id: &ApprovalId) -> Option<serde_json::Value> {
        let page = self
            .api
            .call(
                "conversations.history",
                Token::Bot,
                None,
                Body::Form(vec![
                    ("channel", channel.to_owned()),
                    ("limit", adopt::HISTORY.to_string()),
                ]),
            )
            .await;
        let messages = match page {
            Ok(v) => v["messages"].as_array().cloned().unwrap_or_default(),
            Err(e) => {
                tracing::warn!(channel, error = %e, "cannot read the DM's history; a prompt Slack stored unseen may be repeated");
                return None;
            }
        };
        let ts = adopt::find(&messages, id)?;
        tracing::info!(channel, approval = %id, ts, "adopted a prompt Slack stored without the bridge hearing of it");
        Some(json!({"channel": channel, "ts": ts}))
    }

    /// Opens (or re-learns) every target's DM, so presses on prompts sent before a restart
    /// map back to their target.
    async fn learn_target_dms(&self) {
        for t in &self.targets {
            if let Err(e) = self.open_dm(&t.chat).await {
                tracing::warn!(user = %t.chat, error = %e, "cannot open the DM with a target");
            }
        }
    }

    fn target_of(&self, channel: &str) -> Option<String> {
        self.dm_owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .cloned()
    }

    /// Decodes one envelope's payload into answers.
    async fn decode(&self, envelope: &serde_json::Value) -> Vec<Answer> {
        let payload = &envelope["payload"];
        match envelope["type"].as_str() {
            Some("interactive") if payload["type"].as_str() == Some("block_actions") => {
                let channel = payload["container"]["channel_id"]
                    .as_str()
                    .or_else(|| payload["channel"]["id"].as_str())
                    .unwrap_or_default();
                if channel.starts_with('D') && self.target_of(channel).is_none() {
                    self.learn_target_dms().await;
                }
                receive::block_actions(payload, |c| self.target_of(c))
            }
            Some("events_api") => receive::message_event(&payload["event"])
                .into_iter()
                .collect(),
            Some(other) => {
                tracing::debug!(envelope_type = other, "ignored Socket Mode envelope");
                Vec::new()
            }
            None => Vec::new(),
        }
    }
}

#[async_trait]
impl Channel for Slack {
    fn name(&self) -> &str {
        NAME
    }

    fn targets(&self) -> Vec<Target> {
        self.targets.clone()
    }

    fn allows(&self, user_id: &str) -> bool {
        UserId::is_valid(user_id) && self.allow_from.contains(user_id)
    }

    async fn health(&self) -> Result<String, ChannelError> {
        let v = self
            .api
            .call("auth.test", Token::Bot, None, Body::Form(Vec::new()))
            .await
            .map_err(|e| match e {
                api::ApiError::Slack(code)
                    if matches!(
                        code.as_str(),
                        "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked"
                    ) =>
                {
                    ChannelError::Permanent(format!(
                        "Slack rejected the bot token (auth.test: {code}); check slack.bot_token"
                    ))
                }
                e => e.classify(),
            })?;
        let s = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
        Ok(format!(
            "@{} ({}) in {} ({})",
            s("user"),
            s("user_id"),
            s("team"),
            s("team_id")
        ))
    }

    #[tracing::instrument(skip_all, fields(target = %target, approval = %approval.id))]
    async fn deliver(
        &self,
        target: &Target,
        approval: &Approval,
    ) -> Result<MessageRef, ChannelError> {
        if !UserId::is_valid(&target.chat) {
            return Err(ChannelError::Permanent(format!(
                "{:?} is not a Slack user id",
                target.chat
            )));
        }
        let channel = self.open_dm(&target.chat).await?;
        let first_since_start = self
            .looked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.clone());
        let adopted = match first_since_start {
            // A kill between a post and its record left the prompt unrecorded.
            true => self.adoptable(&channel, &approval.id).await,
            false => None,
        };
        let v = match adopted {
            Some(v) => v,
            None => {
                let r = render::render(approval, render::Footer::Pending { now_ms: now_ms() });
                let body = json!({"channel": channel, "text": r.text, "blocks": r.blocks, "unfurl_links": false, "unfurl_media": false});
                self.api
                    .call_or_recover(
                        "chat.postMessage",
                        Token::Bot,
                        Some(&channel),
                        Body::Json(body),
                        || self.adoptable(&channel, &approval.id),
                    )
                    .await
                    .map_err(api::ApiError::classify)?
            }
        };
        posted_ref(target, &v, &channel)
    }

    #[tracing::instrument(skip_all, fields(message = %prompt.message, approval = %approval.id))]
    async fn finish(
        &self,
        prompt: &MessageRef,
        approval: &Approval,
        outcome: &Outcome,
    ) -> Result<(), ChannelError> {
        self.rewrite(prompt, approval, render::Footer::Finished(outcome))
            .await
    }

    #[tracing::instrument(skip_all, fields(target = %target))]
    async fn post(&self, target: &Target, bulletin: &Bulletin) -> Result<MessageRef, ChannelError> {
        if !UserId::is_valid(&target.chat) {
            return Err(ChannelError::Permanent(format!(
                "{:?} is not a Slack user id",
                target.chat
            )));
        }
        let channel = self.open_dm(&target.chat).await?;
        let plain = bulletin.text();
        let text = render::escape_capped(&plain, render::MAX_TEXT_CHARS);
        let mut body =
            json!({"channel": channel, "text": text, "unfurl_links": false, "unfurl_media": false});
        // Slack has no silent send: a quiet bulletin notifies like any other message.
        if let Some(blocks) = render::with_revoke_buttons(&plain, bulletin.revokes()) {
            body["blocks"] = blocks;
        }
        let v = self
            .api
            .call(
                "chat.postMessage",
                Token::Bot,
                Some(&channel),
                Body::Json(body),
            )
            .await
            .map_err(api::ApiError::classify)?;
        posted_ref(target, &v, &channel)
    }

    #[tracing::instrument(skip_all, fields(message = %post.message))]
    async fn edit_post(&self, post: &MessageRef, bulletin: &Bulletin) -> Result<(), ChannelError> {
        let (channel, ts) = receive::split_message_id(&post.message).ok_or_else(|| {
            ChannelError::MessageGone(format!("{:?} is not a Slack message id", post.message))
        })?;
        let text = render::escape_capped(&bulletin.text(), render::MAX_TEXT_CHARS);
        let body = json!({"channel": channel, "ts": ts, "text": text});
        self.api
            .call("chat.update", Token::Bot, None, Body::Json(body))
            .await
            .map(|_| ())
            .map_err(api::ApiError::classify)
    }

    fn refresh(&self) -> Option<&dyn Refresh> {
        Some(self)
    }

    fn reach(&self) -> Option<watch::Receiver<Reach>> {
        Some(self.reach.subscribe())
    }

    async fn notify(&self, to: &ReplyTo, notice: &Notice) -> Result<(), ChannelError> {
        let plain = notice.text();
        let text = render::escape(&plain);
        let reply = to
            .handle::<Reply>()
            .ok_or_else(|| ChannelError::Permanent(format!("not a Slack reply handle: {to:?}")))?;
        let blocks = render::with_revoke_buttons(&plain, notice.revokes());
        let (method, channel, mut body) = match reply {
            Reply::Ephemeral { channel, user, .. } => (
                "chat.postEphemeral",
                channel,
                json!({"channel": channel, "user": user, "text": text}),
            ),
            Reply::Message { channel, .. } => (
                "chat.postMessage",
                channel,
                json!({"channel": channel, "text": text, "unfurl_links": false, "unfurl_media": false}),
            ),
        };
        if let Some(blocks) = blocks {
            body["blocks"] = blocks;
        }
        self.api
            .call(method, Token::Bot, Some(channel), Body::Json(body))
            .await
            .map(|_| ())
            .map_err(api::ApiError::classify)
    }

    #[tracing::instrument(skip_all, fields(channel = NAME))]
    async fn run(&self, answers: mpsc::Sender<Answer>, shutdown: broadcast::Receiver<()>) {
        socket::run(self, answers, shutdown).await
    }
}

/// The message `chat.postMessage` answered with, as an editable ref.
fn posted_ref(
    target: &Target,
    answer: &serde_json::Value,
    channel: &str,
) -> Result<MessageRef, ChannelError> {
    let ts = answer["ts"]
        .as_str()
        .ok_or_else(|| ChannelError::Permanent("chat.postMessage answered without ts".into()))?;
    let ch = answer["channel"].as_str().unwrap_or(channel);
    Ok(MessageRef {
        target: target.clone(),
        message: receive::message_id(ch, ts),
    })
}

#[async_trait]
impl Refresh for Slack {
    /// The prompt again with its time left as of now, same buttons (an edit: no notification).
    async fn refresh(&self, prompt: &MessageRef, approval: &Approval) -> Result<(), ChannelError> {
        self.rewrite(
            prompt,
            approval,
            render::Footer::Pending { now_ms: now_ms() },
        )
        .await
    }
}
