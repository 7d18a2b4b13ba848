//! Telegram adapter (teloxide): prompts with inline buttons in the owner's DM, answers
//! by button press or `/approve` text, long polling for updates. Bulletins go out as plain
//! text (no parse mode, nothing in them is markup) and are edited in place; the poll loop
//! reports the channel down on a revoked token (401) or a conflict over the bot's updates
//! (409: another poller, a webhook), up again after a poll that works.
//!
//! - [`codec`]: callback data, one form per approval kind, ≤ 64 bytes.
//! - [`render`]: HTML prompts, escaped and cut within Telegram's limits.
//! - [`digest`]: one message with a row per approval once several queue for a chat.
//! - [`send`]: throttle (governor), retry-after, backoff, error classes.
//! - [`orphans`]: prompts a lost answer left behind, found by Telegram's message order.
//! - [`receive`]: updates → `Answer`s.

pub mod codec;
pub mod config;
pub mod digest;
pub mod orphans;
pub mod receive;
pub mod render;
pub mod send;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bridge::approval::{Approval, Choice, Outcome, now_ms};
use bridge::bulletin::Bulletin;
use bridge::channel::{
    Answer, Channel, ChannelError, DigestRow, Digests, MessageRef, Notice, Reach, Refresh, ReplyTo,
    RestartSweep, SendSlot, Target,
};
use bridge::grant::GrantId;
use bridge::retry::{Backoff, CallPolicy};
use teloxide::payloads::{
    AnswerCallbackQuerySetters, EditMessageTextSetters, GetUpdatesSetters, SendDocumentSetters,
    SendMessageSetters,
};
use teloxide::requests::{Request as _, Requester};
use teloxide::types::{
    AllowedUpdate, CallbackQueryId, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile,
    LinkPreviewOptions, MessageId, ParseMode, ReplyParameters, UpdateKind,
};
use teloxide::{ApiError, Bot, RequestError};
use tokio::sync::{broadcast, mpsc, watch};

pub use config::{ConfigError, TelegramConfig};
pub use receive::Reply;
use send::Dest;

use crate::common::reach::ReachCell;
use crate::common::{render::revoke_buttons, section};

/// The channel's name, also `Target::channel` and `Responder::channel`.
pub const NAME: &str = "telegram";

/// First pause after a failed poll (jittered, doubling up to `Options::max_poll_backoff`).
const MIN_POLL_BACKOFF: Duration = Duration::from_millis(500);

/// Telegram's limit on a callback answer's text.
const MAX_CALLBACK_ANSWER_CHARS: usize = 200;

/// Why the channel is down, and the fix, for each cause the poll loop tells apart.
const TOKEN_REVOKED: (&str, &str) = (
    "Telegram rejects the bot token (401 Unauthorized)",
    "create a new token with @BotFather and update telegram.bot_token",
);
const OTHER_POLLER: (&str, &str) = (
    "another program polls this bot's updates",
    "OpenClaw's own Telegram channel? Give the bridge its own bot (or remove the webhook)",
);
const WEBHOOK_SET: (&str, &str) = (
    "a webhook takes this bot's updates",
    "OpenClaw's own Telegram channel? Give the bridge its own bot (or remove the webhook)",
);

/// Tunables with production defaults; tests shorten them.
#[derive(Debug, Clone)]
pub struct Options {
    /// `getUpdates` long-poll timeout (the HTTP client's own timeout is 17 s).
    pub poll_timeout: Duration,
    /// Longest pause between failed polls (before jitter; a successful poll starts over
    /// from half a second).
    pub max_poll_backoff: Duration,
    /// How hard each Bot API call is tried before its error goes back to the engine.
    pub retry: CallPolicy,
    /// After a 409 (another poller), how long polls must work without one before the
    /// channel counts as up again: a poller that backs off lets some of ours through.
    pub conflict_quiet: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            poll_timeout: Duration::from_secs(10),
            max_poll_backoff: Duration::from_secs(30),
            retry: CallPolicy::default(),
            conflict_quiet: Duration::from_secs(90),
        }
    }
}

/// The Telegram channel.
pub struct Telegram {
    bot: Bot,
    allow_from: HashSet<u64>,
    targets: Vec<Target>,
    throttle: Arc<send::Throttle>,
    orphans: Arc<orphans::Orphans>,
    options: Options,
    /// The bot's username (for `/approve@<bot>`), learned from `getMe`.
    username: OnceLock<String>,
    /// Whether the poll loop gets the bot's updates.
    reach: ReachCell,
}

impl Telegram {
    /// Builds the adapter from its config and the resolved bot token (the config holds
    /// only the secret's reference). No I/O: call `health` to check the token.
    pub fn new(config: &TelegramConfig, bot_token: &str) -> Result<Telegram, ConfigError> {
        Self::with_options(config, bot_token, Options::default())
    }

    pub fn with_options(
        config: &TelegramConfig,
        bot_token: &str,
        options: Options,
    ) -> Result<Telegram, ConfigError> {
        config.validate()?;
        let mut api_url = config::parse_api_url(&config.api_url)?;
        // teloxide joins `bot<token>/<method>` onto the URL: keep a trailing slash.
        if !api_url.path().ends_with('/') {
            let path = format!("{}/", api_url.path());
            api_url.set_path(&path);
        }
        let bot = Bot::new(bot_token).set_api_url(api_url);
        Ok(Telegram {
            bot,
            allow_from: config.allow_from.iter().map(|u| u.0).collect(),
            targets: section::targets(NAME, &config.effective_targets()),
            throttle: Arc::new(send::Throttle::new(bot_token, options.retry)),
            orphans: Arc::default(),
            options,
            username: OnceLock::new(),
            reach: ReachCell::new(NAME),
        })
    }

    /// The inline keyboard: one button per offered decision in a fixed order, and the
    /// time-boxed allows in a row of their own below.
    pub fn keyboard(approval: &Approval) -> Result<InlineKeyboardMarkup, codec::CodecError> {
        let button = |c: Choice| {
            Ok(InlineKeyboardButton::callback(
                c.label(),
                codec::encode(approval.kind, &approval.id, c)?,
            ))
        };
        let (timed, plain): (Vec<Choice>, Vec<Choice>) = approval
            .choices()
            .into_iter()
            .partition(|c| c.window().is_some());
        let mut rows = vec![
            plain
                .into_iter()
                .map(button)
                .collect::<Result<Vec<_>, codec::CodecError>>()?,
        ];
        if !timed.is_empty() {
            rows.push(timed.into_iter().map(button).collect::<Result<_, _>>()?);
        }
        Ok(InlineKeyboardMarkup::new(rows))
    }

    /// A Revoke button a row for `grants`, or no keyboard when there are none.
    fn revoke_keyboard<'a>(
        grants: impl IntoIterator<Item = &'a GrantId>,
    ) -> Option<InlineKeyboardMarkup> {
        let rows: Vec<Vec<InlineKeyboardButton>> = revoke_buttons(grants)
            .into_iter()
            .map(|(label, data)| vec![InlineKeyboardButton::callback(label, data)])
            .collect();
        (!rows.is_empty()).then(|| InlineKeyboardMarkup::new(rows))
    }

    /// The digest's text as of `now_ms` (its pending rows' time left) and its buttons.
    fn digest(
        rows: &[DigestRow],
        now_ms: i64,
    ) -> Result<(String, InlineKeyboardMarkup), ChannelError> {
        let keyboard = digest::keyboard(rows)
            .map_err(|e| ChannelError::Permanent(format!("cannot build buttons: {e}")))?;
        Ok((digest::render(rows, now_ms), keyboard))
    }

    fn chat_id(target_chat: &str) -> Result<i64, ChannelError> {
        target_chat.parse::<i64>().map_err(|_| {
            ChannelError::Permanent(format!("{target_chat:?} is not a Telegram chat id"))
        })
    }

    fn message_id(prompt: &MessageRef) -> Result<(i64, MessageId), ChannelError> {
        let chat = Self::chat_id(&prompt.target.chat)?;
        let id = prompt.message.parse::<i32>().map_err(|_| {
            ChannelError::MessageGone(format!("{:?} is not a Telegram message id", prompt.message))
        })?;
        Ok((chat, MessageId(id)))
    }

    async fn get_me(&self) -> Result<teloxide::types::Me, ChannelError> {
        let me = self
            .throttle
            .call(Dest::Nothing, "getMe", || self.bot.get_me().send())
            .await
            .map_err(|e| match e {
                RequestError::Api(ApiError::InvalidToken) => ChannelError::Permanent(
                    "Telegram rejected the bot token (getMe: Unauthorized); check telegram.bot_token".into(),
                ),
                e => self.throttle.classify(e),
            })?;
        if let Some(u) = &me.user.username {
            let _ = self.username.set(u.clone());
        }
        Ok(me)
    }

    /// `editMessageText` of a prompt: `html`, with `keyboard` (none: the buttons go).
    /// The same text again is no error.
    async fn rewrite(
        &self,
        prompt: &MessageRef,
        html: &str,
        keyboard: Option<InlineKeyboardMarkup>,
    ) -> Result<(), ChannelError> {
        let (chat, message) = Self::message_id(prompt)?;
        let res = self
            .throttle
            .call(Dest::Chat(chat), "editMessageText", || {
                let edit = self
                    .bot
                    .edit_message_text(ChatId(chat), message, html.to_owned())
                    .parse_mode(ParseMode::Html)
                    .link_preview_options(Self::link_preview_off());
                match keyboard.clone() {
                    Some(k) => edit.reply_markup(k).send(),
                    None => edit.send(),
                }
            })
            .await;
        match res {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(self.throttle.classify(e)),
        }
    }

    /// Sends a prompt (or digest) ahead of other messages for the chat. A failed attempt
    /// Telegram may have handled marks the chat; the first prompt sent after that has
    /// the buttons of whatever orphans lie before it removed (see [`orphans`]).
    async fn send_prompt(
        &self,
        chat: i64,
        html: &str,
        keyboard: &InlineKeyboardMarkup,
    ) -> Result<MessageId, ChannelError> {
        let msg = self
            .throttle
            .call(Dest::Prompt(chat), "sendMessage", || {
                let sent = self
                    .bot
                    .send_message(ChatId(chat), html.to_owned())
                    .parse_mode(ParseMode::Html)
                    .link_preview_options(Self::link_preview_off())
                    .reply_markup(keyboard.clone())
                    .send();
                async move {
                    let res = sent.await;
                    if let Err(e) = &res
                        && send::maybe_handled(e)
                    {
                        self.orphans.send_failed(chat);
                    }
                    res
                }
            })
            .await
            .map_err(|e| self.throttle.classify(e))?;
        self.sweep(chat, self.orphans.prompt_sent(chat, msg.id.0));
        Ok(msg.id)
    }

    /// Removes the buttons of `suspects` in `chat` in the background (see [`orphans`]).
    fn sweep(&self, chat: i64, suspects: Vec<i32>) {
        if !suspects.is_empty() {
            tokio::spawn(remove_buttons(
                self.bot.clone(),
                self.throttle.clone(),
                chat,
                suspects,
            ));
        }
    }

    fn link_preview_off() -> LinkPreviewOptions {
        LinkPreviewOptions {
            is_disabled: true,
            url: None,
            prefer_small_media: false,
            prefer_large_media: false,
            show_above_text: false,
        }
    }
}

/// Background send of the full command as `command.txt`, replying to the prompt.
async fn send_full_command(
    bot: Bot,
    throttle: Arc<send::Throttle>,
    orphans: Arc<orphans::Orphans>,
    chat: i64,
    prompt: MessageId,
    approval: Approval,
) {
    let caption = format!("Full command of approval {}", approval.id);
    let res = throttle
        .call(Dest::Chat(chat), "sendDocument", || {
            bot.send_document(
                ChatId(chat),
                InputFile::memory(approval.command.clone().into_bytes()).file_name("command.txt"),
            )
            .caption(caption.clone())
            .reply_parameters(ReplyParameters::new(prompt).allow_sending_without_reply())
            .send()
        })
        .await;
    match res {
        Ok(m) => orphans.saw(chat, m.id.0),
        Err(e) => {
            tracing::warn!(chat, approval = %approval.id, error = %throttle.redact(&e), "could not send the full command as a file")
        }
    }
}

/// Background removal of the buttons of messages that may be orphaned prompts, ahead of
/// other edits: live buttons on an approval the bridge does not track are worse than a late
/// outcome.
async fn remove_buttons(bot: Bot, throttle: Arc<send::Throttle>, chat: i64, ids: Vec<i32>) {
    for id in ids {
        let res = throttle
            .call(Dest::Prompt(chat), "editMessageReplyMarkup", || {
                bot.edit_message_reply_markup(ChatId(chat), MessageId(id))
                    .send()
            })
            .await;
        match res {
            Ok(_) => tracing::info!(
                chat,
                message = id,
                "removed the buttons of a prompt whose send looked failed"
            ),
            // A user's message, a message without buttons, or none at all.
            Err(e) => {
                tracing::debug!(chat, message = id, error = %throttle.redact(&e), "no orphan prompt")
            }
        }
    }
}

#[async_trait]
impl Channel for Telegram {
    fn name(&self) -> &str {
        NAME
    }

    fn targets(&self) -> Vec<Target> {
        self.targets.clone()
    }

    fn allows(&self, user_id: &str) -> bool {
        section::allows_decimal(&self.allow_from, user_id)
    }

    fn digests(&self) -> Option<&dyn Digests> {
        Some(self)
    }

    fn send_slot(&self) -> Option<&dyn SendSlot> {
        Some(self)
    }

    fn restart_sweep(&self) -> Option<&dyn RestartSweep> {
        Some(self)
    }

    fn refresh(&self) -> Option<&dyn Refresh> {
        Some(self)
    }

    async fn health(&self) -> Result<String, ChannelError> {
        let me = self.get_me().await?;
        Ok(format!(
            "@{} (id {})",
            me.user.username.as_deref().unwrap_or("?"),
            me.user.id.0
        ))
    }

    #[tracing::instrument(skip_all, fields(target = %target, approval = %approval.id))]
    async fn deliver(
        &self,
        target: &Target,
        approval: &Approval,
    ) -> Result<MessageRef, ChannelError> {
        let chat = Self::chat_id(&target.chat)?;
        let keyboard = Self::keyboard(approval)
            .map_err(|e| ChannelError::Permanent(format!("cannot build buttons: {e}")))?;
        let footer = render::Footer::Pending { now_ms: now_ms() };
        let rendered = render::render(approval, footer);
        let id = self.send_prompt(chat, &rendered.html, &keyboard).await?;
        if rendered.cut {
            // After the prompt, without holding up `deliver` for the chat's next slot.
            tokio::spawn(send_full_command(
                self.bot.clone(),
                self.throttle.clone(),
                self.orphans.clone(),
                chat,
                id,
                approval.clone(),
            ));
        }
        Ok(MessageRef {
            target: target.clone(),
            message: id.0.to_string(),
        })
    }

    #[tracing::instrument(skip_all, fields(chat = %prompt.target.chat, message = %prompt.message, approval = %approval.id))]
    async fn finish(
        &self,
        prompt: &MessageRef,
        approval: &Approval,
        outcome: &Outcome,
    ) -> Result<(), ChannelError> {
        let rendered = render::render(approval, render::Footer::Finished(outcome));
        // No reply_markup: Telegram drops the inline keyboard with the edit.
        self.rewrite(prompt, &rendered.html, None).await
    }

    async fn notify(&self, to: &ReplyTo, notice: &Notice) -> Result<(), ChannelError> {
        let text = notice.text();
        let reply = to.handle::<Reply>().ok_or_else(|| {
            ChannelError::Permanent(format!("not a Telegram reply handle: {to:?}"))
        })?;
        if let Reply::Callback(query) = reply {
            let alert = matches!(notice, Notice::Refused(_) | Notice::AlreadyFinished { .. });
            let short: String = if text.chars().count() > MAX_CALLBACK_ANSWER_CHARS {
                text.chars()
                    .take(MAX_CALLBACK_ANSWER_CHARS - 1)
                    .chain(['…'])
                    .collect()
            } else {
                text
            };
            let query = CallbackQueryId(query.clone());
            return self
                .throttle
                .call(Dest::Nothing, "answerCallbackQuery", || {
                    self.bot
                        .answer_callback_query(query.clone())
                        .text(short.clone())
                        .show_alert(alert)
                        .send()
                })
                .await
                .map(|_| ())
                .map_err(|e| self.throttle.classify(e));
        }
        if let Reply::Chat { chat, reply_to } = *reply {
            let reply_to = reply_to.map(MessageId);
            let keyboard = Self::revoke_keyboard(notice.revokes());
            // Plain text (no parse mode): nothing in it can be read as markup.
            return self
                .throttle
                .call(Dest::Chat(chat), "sendMessage", || {
                    let mut req = self
                        .bot
                        .send_message(ChatId(chat), text.clone())
                        .link_preview_options(Self::link_preview_off());
                    if let Some(k) = &keyboard {
                        req = req.reply_markup(k.clone());
                    }
                    if let Some(m) = reply_to {
                        req = req.reply_parameters(
                            ReplyParameters::new(m).allow_sending_without_reply(),
                        );
                    }
                    req.send()
                })
                .await
                .map(|m| self.orphans.saw(chat, m.id.0))
                .map_err(|e| self.throttle.classify(e));
        }
        unreachable!("a Telegram reply is a callback or a chat")
    }

    #[tracing::instrument(skip_all, fields(target = %target))]
    async fn post(&self, target: &Target, bulletin: &Bulletin) -> Result<MessageRef, ChannelError> {
        let chat = Self::chat_id(&target.chat)?;
        let text = bulletin.text();
        let keyboard = Self::revoke_keyboard(bulletin.revokes());
        // Plain text (no parse mode): nothing in it can be read as markup.
        let msg = self
            .throttle
            .call(Dest::Chat(chat), "sendMessage", || {
                let mut req = self
                    .bot
                    .send_message(ChatId(chat), text.clone())
                    .link_preview_options(Self::link_preview_off())
                    .disable_notification(bulletin.quiet());
                if let Some(k) = &keyboard {
                    req = req.reply_markup(k.clone());
                }
                req.send()
            })
            .await
            .map_err(|e| self.throttle.classify(e))?;
        self.orphans.saw(chat, msg.id.0);
        Ok(MessageRef {
            target: target.clone(),
            message: msg.id.0.to_string(),
        })
    }

    #[tracing::instrument(skip_all, fields(chat = %post.target.chat, message = %post.message))]
    async fn edit_post(&self, post: &MessageRef, bulletin: &Bulletin) -> Result<(), ChannelError> {
        let (chat, message) = Self::message_id(post)?;
        let text = bulletin.text();
        let res = self
            .throttle
            .call(Dest::Chat(chat), "editMessageText", || {
                self.bot
                    .edit_message_text(ChatId(chat), message, text.clone())
                    .link_preview_options(Self::link_preview_off())
                    .send()
            })
            .await;
        match res {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(self.throttle.classify(e)),
        }
    }

    fn reach(&self) -> Option<watch::Receiver<Reach>> {
        Some(self.reach.subscribe())
    }

    #[tracing::instrument(skip_all, fields(channel = NAME))]
    async fn run(&self, answers: mpsc::Sender<Answer>, mut shutdown: broadcast::Receiver<()>) {
        if self.username.get().is_none()
            && let Err(e) = self.get_me().await
        {
            tracing::warn!(error = %e, "getMe failed; /approve@<bot> is accepted for any bot name");
        }
        let mut offset: i32 = 0;
        let mut backoff = Backoff::new(MIN_POLL_BACKOFF, self.options.max_poll_backoff).attempts();
        let timeout = self.options.poll_timeout.as_secs() as u32;
        // When the last 409 came: the channel is up again only after a quiet spell.
        let mut last_conflict: Option<tokio::time::Instant> = None;
        loop {
            let poll = self
                .bot
                .get_updates()
                .offset(offset)
                .timeout(timeout)
                .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
                .send();
            let res = tokio::select! {
                _ = shutdown.recv() => return,
                r = poll => r,
            };
            let pause = match res {
                Ok(updates) => {
                    backoff.reset();
                    if last_conflict.is_none_or(|t| t.elapsed() >= self.options.conflict_quiet) {
                        last_conflict = None;
                        self.reach.up();
                    }
                    for u in updates {
                        // `as_offset` is already `id + 1`.
                        offset = offset.max(u.id.as_offset());
                        let answer = match &u.kind {
                            UpdateKind::CallbackQuery(q) => Some(receive::callback(q)),
                            UpdateKind::Message(m) => {
                                self.orphans.saw(m.chat.id.0, m.id.0);
                                receive::message(m, self.username.get().map(String::as_str))
                            }
                            _ => None,
                        };
                        if let Some(a) = answer
                            && answers.send(a).await.is_err()
                        {
                            return;
                        }
                    }
                    continue;
                }
                Err(RequestError::RetryAfter(s)) => s.duration(),
                Err(e) => {
                    match poll_failure(&e) {
                        Some(cause) => {
                            if cause != TOKEN_REVOKED {
                                last_conflict = Some(tokio::time::Instant::now());
                            }
                            self.reach.down(cause.0, cause.1);
                        }
                        None => {
                            tracing::warn!(error = %self.throttle.redact(&e), "getUpdates failed; backing off")
                        }
                    }
                    backoff.next_pause()
                }
            };
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// The cause (reason, fix) of a failed poll that means the channel gets no updates until
/// someone acts; `None` for faults that pass (network, 5xx).
fn poll_failure(e: &RequestError) -> Option<(&'static str, &'static str)> {
    match e {
        RequestError::Api(ApiError::InvalidToken) => Some(TOKEN_REVOKED),
        RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => Some(OTHER_POLLER),
        RequestError::Api(ApiError::CantGetUpdates) => Some(WEBHOOK_SET),
        // Telegram's own text carries a "Conflict: " prefix teloxide does not match.
        RequestError::Api(ApiError::Unknown(text)) if text.contains("webhook is active") => {
            Some(WEBHOOK_SET)
        }
        RequestError::Api(ApiError::Unknown(text)) if text.contains("other getUpdates") => {
            Some(OTHER_POLLER)
        }
        _ => None,
    }
}

/// A burst for one chat goes out as one message (up to `digest::MAX_ROWS` rows).
#[async_trait]
impl Digests for Telegram {
    fn capacity(&self) -> usize {
        digest::MAX_ROWS
    }

    #[tracing::instrument(skip_all, fields(target = %target, approvals = approvals.len()))]
    async fn deliver_digest(
        &self,
        target: &Target,
        approvals: &[Approval],
    ) -> Result<(MessageRef, usize), ChannelError> {
        let now = now_ms();
        let n = digest::take(approvals, now);
        let Some(first) = approvals.first() else {
            return Err(ChannelError::Permanent("empty digest".into()));
        };
        if n < 2 {
            return Ok((self.deliver(target, first).await?, 1));
        }
        let chat = Self::chat_id(&target.chat)?;
        let rows: Vec<DigestRow> = approvals[..n]
            .iter()
            .map(|a| DigestRow {
                approval: a.clone(),
                outcome: None,
            })
            .collect();
        let (html, keyboard) = Self::digest(&rows, now)?;
        let id = self.send_prompt(chat, &html, &keyboard).await?;
        let prompt = MessageRef {
            target: target.clone(),
            message: id.0.to_string(),
        };
        Ok((prompt, n))
    }

    #[tracing::instrument(skip_all, fields(chat = %prompt.target.chat, message = %prompt.message))]
    async fn update_digest(
        &self,
        prompt: &MessageRef,
        rows: &[DigestRow],
    ) -> Result<(), ChannelError> {
        let (chat, message) = Self::message_id(prompt)?;
        let (html, keyboard) = Self::digest(rows, now_ms())?;
        // Without buttons left, no reply_markup: the edit drops the keyboard.
        let keyboard = (!keyboard.inline_keyboard.is_empty()).then_some(keyboard);
        let res = self
            .throttle
            .call(Dest::Chat(chat), "editMessageText", || {
                let mut req = self
                    .bot
                    .edit_message_text(ChatId(chat), message, html.clone())
                    .parse_mode(ParseMode::Html)
                    .link_preview_options(Self::link_preview_off());
                if let Some(k) = &keyboard {
                    req = req.reply_markup(k.clone());
                }
                req.send()
            })
            .await;
        match res {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(self.throttle.classify(e)),
        }
    }
}

#[async_trait]
impl Refresh for Telegram {
    /// The prompt again with its time left as of now, same buttons (an edit: no notification).
    async fn refresh(&self, prompt: &MessageRef, approval: &Approval) -> Result<(), ChannelError> {
        let keyboard = Self::keyboard(approval)
            .map_err(|e| ChannelError::Permanent(format!("cannot build buttons: {e}")))?;
        let rendered = render::render(approval, render::Footer::Pending { now_ms: now_ms() });
        self.rewrite(prompt, &rendered.html, Some(keyboard)).await
    }
}

/// A chat's next 1 s slot, kept for the prompt that follows (`send::Throttle::ready`).
#[async_trait]
impl SendSlot for Telegram {
    async fn ready(&self, target: &Target) {
        if let Ok(chat) = Self::chat_id(&target.chat) {
            self.throttle.ready(chat).await;
        }
    }
}

/// Message ids count up in a chat, so a kill between a send and its record leaves a gap
/// among (or an id above) the recorded prompts: those are swept.
impl RestartSweep for Telegram {
    fn resume(&self, recorded: &[MessageRef]) {
        for target in &self.targets {
            let Ok(chat) = Self::chat_id(&target.chat) else {
                continue;
            };
            let ids: Vec<i32> = recorded
                .iter()
                .filter(|m| m.target == *target)
                .filter_map(|m| Self::message_id(m).ok())
                .map(|(_, id)| id.0)
                .collect();
            self.sweep(chat, self.orphans.resume(chat, &ids));
        }
    }
}
