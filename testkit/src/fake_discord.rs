//! A fake Discord on 127.0.0.1, speaking the real wire shapes: the REST API under
//! `/api/v10` (axum) and the gateway WebSocket (its own listener).
//!
//! REST: `GET /gateway` and `/gateway/bot` (pointing at the fake's WebSocket),
//! `GET /users/@me`, `POST /users/@me/channels`, `POST /channels/{id}/messages`,
//! `PATCH /channels/{id}/messages/{id}`, `POST /interactions/{id}/{token}/callback`,
//! `POST /webhooks/{app}/{token}`. Anything else answers 404 like Discord. Every call is
//! recorded with its arrival time, parsed body and answer status; `Authorization` must be
//! `Bot <token>` (else 401). Like Discord it refuses `custom_id` over 100 characters,
//! content over 2000, embeds over their limits (400, code 50035), edits of unknown messages
//! (404, code 10008), interaction callbacks after 3 s or twice (10062 / 40060), and
//! follow-ups before the callback (10015). The next writes can be made to answer 429.
//!
//! Gateway: HELLO (op 10) → IDENTIFY (op 2, token checked, else close 4004) → READY (op 0)
//! with user, session_id, resume_gateway_url and application; heartbeat (op 1) → ACK
//! (op 11); RESUME (op 6) → RESUMED, or INVALID_SESSION for an unknown session. Tests
//! inject `INTERACTION_CREATE` (component presses, with every field serenity needs) and
//! `MESSAGE_CREATE`; events injected while no session is ready wait for the next READY.
//!
//! The call log, `wait_for` and the injected faults are [`crate::fake_service`]'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::fake_service::{self, Api, Fake, Service, local_addr, loopback};
use crate::service_faults::Countdown;
use crate::service_faults::html_status;

/// Discord's interaction response deadline.
pub const INTERACTION_DEADLINE: Duration = Duration::from_secs(3);

/// One recorded REST call.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub method: String,
    /// The path under `/api/v10` (e.g. `/channels/1/messages`); the full path otherwise.
    pub path: String,
    /// Whether the path began with `/api/v10`.
    pub versioned: bool,
    pub body: Value,
    pub status: u16,
}

impl Call {
    /// `"POST /channels/{id}/messages"`-style route with ids replaced by `{id}`.
    pub fn route(&self) -> String {
        let p: Vec<String> = self
            .path
            .split('/')
            .enumerate()
            .map(|(i, s)| {
                if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
                    || (i == 3
                        && (self.path.starts_with("/interactions/")
                            || self.path.starts_with("/webhooks/")))
                {
                    "{id}".to_owned()
                } else {
                    s.to_owned()
                }
            })
            .collect();
        format!("{} {}", self.method, p.join("/"))
    }
}

/// A message as it currently stands (after any edits).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub channel_id: String,
    pub author_id: String,
    pub by_bot: bool,
    pub content: String,
    pub embeds: Value,
    pub components: Value,
    pub allowed_mentions: Value,
    pub flags: u64,
    /// `message_reference.message_id`, when the message replies to one.
    pub reply_to: Option<String>,
    pub edits: u32,
}

impl Message {
    /// What the bot posts with `body`: its content, embeds, components, allowed mentions
    /// and flags.
    fn posted(id: String, channel_id: String, bot: &Value, body: &Value) -> Message {
        Message {
            id,
            channel_id,
            author_id: bot["id"].as_str().unwrap_or_default().to_owned(),
            by_bot: true,
            content: body["content"].as_str().unwrap_or_default().to_owned(),
            embeds: body.get("embeds").cloned().unwrap_or(json!([])),
            components: body.get("components").cloned().unwrap_or(json!([])),
            allowed_mentions: body.get("allowed_mentions").cloned().unwrap_or(Value::Null),
            flags: body["flags"].as_u64().unwrap_or(0),
            reply_to: None,
            edits: 0,
        }
    }

    /// `(label, custom_id, style)` of every enabled button, row by row.
    pub fn buttons(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for row in self.components.as_array().into_iter().flatten() {
            for b in row
                .get("components")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if b.get("type").and_then(Value::as_u64) == Some(2)
                    && b.get("disabled").and_then(Value::as_bool) != Some(true)
                {
                    out.push((
                        b.get("label")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        b.get("custom_id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        b.get("style").and_then(Value::as_u64).unwrap_or_default(),
                    ));
                }
            }
        }
        out
    }

    /// The text as a Discord client shows it: content, then each embed's title,
    /// description, fields (`name: value`) and footer, markdown interpreted (code blocks
    /// verbatim, escapes resolved, bold markers dropped, zero-width spaces invisible).
    pub fn text(&self) -> String {
        let mut parts = Vec::new();
        if !self.content.is_empty() {
            parts.push(visible(&self.content));
        }
        for e in self.embeds.as_array().into_iter().flatten() {
            let s = |k: &str| e.get(k).and_then(Value::as_str).map(visible);
            parts.extend(s("title"));
            parts.extend(s("description"));
            for f in e
                .get("fields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                parts.push(format!(
                    "{}: {}",
                    visible(f.get("name").and_then(Value::as_str).unwrap_or_default()),
                    visible(f.get("value").and_then(Value::as_str).unwrap_or_default())
                ));
            }
            // Footers are plain text: no markdown.
            if let Some(t) = e.pointer("/footer/text").and_then(Value::as_str) {
                parts.push(t.to_owned());
            }
        }
        parts.join("\n")
    }

    /// Whether this message could ping anyone: Discord parses mentions from content
    /// unless `allowed_mentions.parse` is an empty list (embeds never ping).
    pub fn can_ping(&self) -> bool {
        let parse_none = self
            .allowed_mentions
            .get("parse")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
            && self
                .allowed_mentions
                .get("users")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            && self
                .allowed_mentions
                .get("roles")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        !parse_none && (self.content.contains('@') || self.content.contains("<@"))
    }
}

/// Markdown as a reader sees it (the subset Discord bots produce).
pub fn visible(md: &str) -> String {
    let mut out = String::new();
    let mut rest = md;
    while let Some(i) = rest.find("```") {
        out.push_str(&unescape(&rest[..i]));
        let after = &rest[i + 3..];
        match after.find("```") {
            Some(j) => {
                let body = &after[..j];
                let body = body.strip_prefix('\n').unwrap_or(body);
                let body = body.strip_suffix('\n').unwrap_or(body);
                out.push_str(&body.replace('\u{200B}', ""));
                rest = &after[j + 3..];
            }
            None => {
                out.push_str(&unescape(&rest[i..]));
                rest = "";
            }
        }
    }
    out.push_str(&unescape(rest));
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' if it.peek().is_some_and(|n| n.is_ascii_punctuation()) => {
                out.push(it.next().unwrap_or('\\'))
            }
            '*' if it.peek() == Some(&'*') => {
                it.next();
            }
            '\u{200B}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A user the fake injects events from.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
    pub global_name: Option<String>,
}

impl User {
    pub fn new(id: impl Into<String>) -> User {
        let id = id.into();
        User {
            username: format!("user{id}"),
            global_name: Some(format!("User {id}")),
            id,
        }
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id, "username": self.username, "global_name": self.global_name,
            "discriminator": "0", "avatar": null, "public_flags": 0,
        })
    }
}

/// A component press as the fake dispatched it, and how the bot answered it.
#[derive(Debug, Clone)]
pub struct Interaction {
    pub id: String,
    pub token: String,
    pub user_id: String,
    pub dispatched_at: Option<Instant>,
    /// Arrival time and body of the interaction callback.
    pub callback: Option<(Instant, Value)>,
    /// Follow-up messages (`POST /webhooks/{app}/{token}`), in order.
    pub followups: Vec<Message>,
}

impl Interaction {
    /// Dispatch → callback.
    pub fn ack_latency(&self) -> Option<Duration> {
        Some(
            self.callback
                .as_ref()?
                .0
                .duration_since(self.dispatched_at?),
        )
    }
}

enum Ctl {
    Dispatch(&'static str, Value),
    Close(u16),
}

struct Session {
    ready: bool,
    tx: mpsc::UnboundedSender<Ctl>,
}

/// What the fake Discord holds: messages, DMs, interactions, gateway sessions, limits.
#[derive(Default)]
pub struct DiscordState {
    messages: HashMap<String, Message>,
    /// Message ids in creation order.
    order: Vec<String>,
    dms: HashMap<String, String>,
    interactions: HashMap<String, Interaction>,
    next_id: u64,
    /// The next writes answer 429 with `(retry_after seconds, global)`.
    rate_limit: Countdown<(f64, bool)>,
    sessions: HashMap<String, Session>,
    /// Known session ids (for RESUME), with their last sequence number.
    known_sessions: HashMap<String, u64>,
    pending: Vec<(&'static str, Value)>,
    /// `(channel, nonce)` → message id, for `enforce_nonce`.
    nonces: HashMap<(String, String), String>,
    identifies: Vec<(Instant, Value)>,
    resumes: u32,
    connections: u32,
    /// The bot's token was reset in the developer portal: REST answers 401, IDENTIFY and
    /// RESUME close with 4004.
    token_revoked: bool,
}

/// The guild the bot shares with users, for presses from a guild channel.
pub const GUILD_ID: &str = "1600000000000000001";
/// A text channel in [`GUILD_ID`].
pub const GUILD_CHANNEL: &str = "1500000000000000001";

/// The fake Discord's fixed side: the bot's token and user, the gateway it points at.
pub struct Discord {
    token: String,
    bot: Value,
    app_id: String,
    ws_url: String,
    heartbeat_ms: u64,
}

impl Api for Discord {
    const NAME: &'static str = "discord";
    type State = DiscordState;
    type Call = Call;

    fn line(c: &Call) -> String {
        format!("{} {} {} {}", c.status, c.method, c.path, c.body)
    }

    fn called(c: &Call, route: &str) -> bool {
        c.route() == route
    }

    /// Closes every gateway connection (1001: going away).
    fn stop(state: &mut DiscordState) {
        for s in state.sessions.values() {
            let _ = s.tx.send(Ctl::Close(1001));
        }
    }
}

type Shared = Service<Discord>;

/// The running fake. Dropping it stops both servers.
pub type FakeDiscord = Fake<Discord>;

impl DiscordState {
    fn snowflake(&mut self) -> String {
        self.next_id += 1;
        // Plausible 2026 snowflakes, strictly increasing.
        (1_440_000_000_000_000_000u64 + self.next_id * 4096).to_string()
    }

    fn dm_of(&mut self, user: &str) -> String {
        if let Some(c) = self.dms.get(user) {
            return c.clone();
        }
        let c = self.snowflake();
        self.dms.insert(user.to_owned(), c.clone());
        c
    }

    /// Sends to every ready session, or keeps it for the next READY.
    fn dispatch(&mut self, t: &'static str, d: Value) {
        if t == "INTERACTION_CREATE"
            && let Some(id) = d.get("id").and_then(Value::as_str)
            && let Some(ix) = self.interactions.get_mut(id)
        {
            ix.dispatched_at = Some(Instant::now());
        }
        let ready: Vec<_> = self
            .sessions
            .values()
            .filter(|s| s.ready)
            .map(|s| s.tx.clone())
            .collect();
        if ready.is_empty() {
            self.pending.push((t, d));
        } else {
            for tx in ready {
                let _ = tx.send(Ctl::Dispatch(t, d.clone()));
            }
        }
    }
}

/// A read-only view of the fake's state, for `wait_for` predicates.
pub type View<'a> = fake_service::View<'a, Discord>;

impl View<'_> {
    pub fn message(&self, id: &str) -> Option<&Message> {
        self.state().messages.get(id)
    }

    /// Messages the bot sent in `user`'s DM, oldest first.
    pub fn bot_dms(&self, user: &str) -> Vec<&Message> {
        let state = self.state();
        let Some(c) = state.dms.get(user) else {
            return Vec::new();
        };
        state
            .order
            .iter()
            .filter_map(|id| state.messages.get(id))
            .filter(|m| &m.channel_id == c && m.by_bot)
            .collect()
    }

    pub fn interaction(&self, id: &str) -> Option<&Interaction> {
        self.state().interactions.get(id)
    }

    /// The interaction whose token is `token`.
    pub fn interaction_by_token(&self, token: &str) -> Option<&Interaction> {
        self.state()
            .interactions
            .values()
            .find(|i| i.token == token)
    }

    pub fn ready_sessions(&self) -> usize {
        self.state().sessions.values().filter(|s| s.ready).count()
    }
}

impl FakeDiscord {
    /// Starts a fake for bot `token`, with the default 41.25 s heartbeat interval.
    pub async fn start(token: &str) -> FakeDiscord {
        Self::start_with(token, 41_250).await
    }

    pub async fn start_with(token: &str, heartbeat_ms: u64) -> FakeDiscord {
        let bot_id = "1200000000000000042";
        let bot = json!({
            "id": bot_id, "username": "approval-bridge-test", "global_name": null, "discriminator": "0",
            "avatar": null, "bot": true, "verified": true, "flags": 0, "mfa_enabled": false,
        });
        let ws = loopback().await;
        let shared = Service::new(
            Discord {
                token: token.to_owned(),
                bot,
                app_id: bot_id.to_owned(),
                ws_url: format!("ws://{}", local_addr(&ws)),
                heartbeat_ms,
            },
            DiscordState::default(),
        );
        let app = Router::new().fallback(handle).with_state(shared.clone());
        Fake::serve(shared, loopback().await, app).with_sockets(ws, gateway_session)
    }

    /// The `api_url` to configure: `http://127.0.0.1:P/api`.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.url)
    }

    /// The gateway's WebSocket URL.
    pub fn ws_url(&self) -> String {
        self.service.api.ws_url.clone()
    }

    pub fn token(&self) -> &str {
        &self.service.api.token
    }

    pub fn bot_id(&self) -> String {
        self.service.api.bot["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `user`'s DM channel with the bot (opened if needed).
    pub fn dm_channel(&self, user: &str) -> String {
        self.service.lock().dm_of(user)
    }

    /// `user` presses the button with `custom_id` on message `message_id` (in whatever
    /// channel it is; a DM). Returns the interaction id.
    pub fn press(&self, user: &User, message_id: &str, custom_id: &str) -> String {
        self.press_where(user, message_id, custom_id, false)
    }

    /// `user` presses the button with `custom_id` on a copy of message `message_id` in a
    /// text channel of a guild the bot is in ([`GUILD_ID`], [`GUILD_CHANNEL`]): the
    /// interaction carries `guild_id` and `member.user` instead of `user`, as Discord sends.
    pub fn press_in_guild(&self, user: &User, message_id: &str, custom_id: &str) -> String {
        self.press_where(user, message_id, custom_id, true)
    }

    fn press_where(&self, user: &User, message_id: &str, custom_id: &str, guild: bool) -> String {
        let mut inner = self.service.lock();
        let id = inner.snowflake();
        let token = format!("aW50ZXJhY3Rpb246{id}:{}", uuid::Uuid::new_v4().simple());
        let (channel_id, mut message) = match inner.messages.get(message_id) {
            Some(m) => (m.channel_id.clone(), message_json(m, &self.service.api.bot)),
            None => {
                let c = inner.dm_of(&user.id);
                (
                    c.clone(),
                    json!({"id": message_id, "channel_id": c, "content": "", "type": 0}),
                )
            }
        };
        inner.interactions.insert(
            id.clone(),
            Interaction {
                id: id.clone(),
                token: token.clone(),
                user_id: user.id.clone(),
                dispatched_at: None,
                callback: None,
                followups: Vec::new(),
            },
        );
        drop(inner);
        let mut d = json!({
            "id": id, "application_id": self.service.api.app_id, "type": 3, "token": token, "version": 1,
            "channel_id": channel_id,
            "channel": {"id": channel_id, "type": 1, "flags": 0, "last_message_id": message_id, "recipients": [user.json()]},
            "user": user.json(),
            "data": {"custom_id": custom_id, "component_type": 2},
            "message": message,
            "locale": "en-US", "app_permissions": "562949953601536",
            "entitlements": [], "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"1": user.id},
            "context": 1, "attachment_size_limit": 10_485_760,
        });
        if guild {
            message["channel_id"] = json!(GUILD_CHANNEL);
            let o = d.as_object_mut().expect("object");
            o.remove("user");
            o.insert("guild_id".into(), json!(GUILD_ID));
            o.insert("channel_id".into(), json!(GUILD_CHANNEL));
            o.insert(
                "channel".into(),
                json!({"id": GUILD_CHANNEL, "type": 0, "guild_id": GUILD_ID, "name": "general", "flags": 0}),
            );
            o.insert(
                "member".into(),
                json!({"user": user.json(), "roles": [], "permissions": "2248473465835073", "joined_at": "2026-11-01T00:00:00.000000+00:00", "deaf": false, "mute": false, "flags": 0}),
            );
            o.insert("message".into(), message);
            o.insert(
                "authorizing_integration_owners".into(),
                json!({"0": GUILD_ID}),
            );
            o.insert("context".into(), json!(0));
            o.insert("guild_locale".into(), json!("en-US"));
        }
        self.service.lock().dispatch("INTERACTION_CREATE", d);
        self.service.bump();
        id
    }

    /// `user` types `text` in their DM with the bot. Returns the message id.
    pub fn send_dm(&self, user: &User, text: &str) -> String {
        let mut inner = self.service.lock();
        let channel_id = inner.dm_of(&user.id);
        let id = inner.snowflake();
        let m = Message {
            id: id.clone(),
            channel_id: channel_id.clone(),
            author_id: user.id.clone(),
            by_bot: false,
            content: text.to_owned(),
            embeds: json!([]),
            components: json!([]),
            allowed_mentions: Value::Null,
            flags: 0,
            reply_to: None,
            edits: 0,
        };
        inner.messages.insert(id.clone(), m);
        inner.order.push(id.clone());
        drop(inner);
        let d = json!({
            "id": id, "channel_id": channel_id, "author": user.json(), "content": text, "type": 0,
            "timestamp": "2026-11-22T00:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
            "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
            "pinned": false, "flags": 0, "components": [],
        });
        self.service.lock().dispatch("MESSAGE_CREATE", d);
        self.service.bump();
        id
    }

    /// Deletes a message (as if the user deleted it): later edits find nothing.
    pub fn delete_message(&self, id: &str) {
        self.service.lock().messages.remove(id);
        self.service.bump();
    }

    /// The next `n` message writes (create/edit) answer 429 with `retry_after` seconds;
    /// `global` marks it as the bot-wide limit.
    pub fn rate_limit_next(&self, n: u32, retry_after: f64, global: bool) {
        self.service.lock().rate_limit.arm(n, (retry_after, global));
    }

    /// Resets the bot's token (`true`: REST answers 401 and the gateway closes with 4004,
    /// as after "Reset Token" in the developer portal) or takes that back (`false`).
    pub fn revoke_token(&self, revoked: bool) {
        self.service.lock().token_revoked = revoked;
        self.service.bump();
    }

    /// Closes every gateway connection with `code` (4000: resumable "unknown error").
    pub fn disconnect_all(&self, code: u16) {
        let mut inner = self.service.lock();
        for (_, s) in inner.sessions.drain() {
            let _ = s.tx.send(Ctl::Close(code));
        }
    }

    pub fn message(&self, id: &str) -> Option<Message> {
        self.service.read(|v| v.message(id).cloned())
    }

    pub fn bot_dms(&self, user: &str) -> Vec<Message> {
        self.service
            .read(|v| v.bot_dms(user).into_iter().cloned().collect())
    }

    pub fn interaction(&self, id: &str) -> Option<Interaction> {
        self.service.read(|v| v.interaction(id).cloned())
    }

    /// IDENTIFY payloads received, with their arrival times.
    pub fn identifies(&self) -> Vec<(Instant, Value)> {
        self.service.lock().identifies.clone()
    }

    pub fn resumes(&self) -> u32 {
        self.service.lock().resumes
    }

    pub fn connections(&self) -> u32 {
        self.service.lock().connections
    }

    /// Waits for a READY gateway session.
    pub async fn wait_ready(&self, timeout: Duration) {
        self.wait_for(timeout, "a READY gateway session", |v| {
            (v.ready_sessions() > 0).then_some(())
        })
        .await
    }

    /// The follow-ups to interaction `id`, waiting for at least one.
    pub async fn wait_followup(&self, id: &str, timeout: Duration) -> Message {
        self.wait_for(timeout, &format!("a follow-up to interaction {id}"), |v| {
            v.interaction(id)?.followups.first().cloned()
        })
        .await
    }

    /// The `n`th (0-based) bot message in `user`'s DM, waiting for it.
    pub async fn wait_bot_dm(&self, user: &str, n: usize, timeout: Duration) -> Message {
        self.wait_for(timeout, &format!("bot message #{n} in {user}'s DM"), |v| {
            v.bot_dms(user).get(n).map(|m| (*m).clone())
        })
        .await
    }

    /// Waits for message `id` to satisfy `f`.
    pub async fn wait_message(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        f: impl Fn(&Message) -> bool,
    ) -> Message {
        self.wait_for(timeout, what, |v| v.message(id).filter(|m| f(m)).cloned())
            .await
    }
}

fn message_json(m: &Message, bot: &Value) -> Value {
    let mut v = json!({
        "id": m.id, "channel_id": m.channel_id, "content": m.content, "embeds": m.embeds,
        "components": m.components, "type": 0, "flags": m.flags, "tts": false, "pinned": false,
        "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
        "timestamp": "2026-11-22T00:00:00.000000+00:00", "edited_timestamp": null,
    });
    v["author"] = if m.by_bot {
        bot.clone()
    } else {
        json!({"id": m.author_id, "username": format!("user{}", m.author_id)})
    };
    v
}

fn error(status: u16, code: i64, message: &str) -> (u16, Value) {
    (status, json!({"message": message, "code": code}))
}

/// Discord's 400 for a body that breaks a limit.
fn invalid_form(why: String) -> (u16, Value) {
    (
        400,
        json!({"message": "Invalid Form Body", "code": 50035, "errors": {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH", "message": why}]}}),
    )
}

/// Checks a message body against Discord's limits.
fn validate(body: &Value) -> Result<(), String> {
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    if len(&body["content"]) > 2000 {
        return Err(format!(
            "content is {} characters, over 2000",
            len(&body["content"])
        ));
    }
    for e in body
        .get("embeds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut total = len(&e["title"]) + len(&e["description"]) + len(&e["footer"]["text"]);
        if len(&e["title"]) > 256 || len(&e["description"]) > 4096 {
            return Err("embed title over 256 or description over 4096".into());
        }
        for f in e
            .get("fields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if len(&f["value"]) > 1024 || len(&f["name"]) > 256 || len(&f["value"]) == 0 {
                return Err(format!(
                    "embed field {} value is {} characters (1..=1024)",
                    f["name"],
                    len(&f["value"])
                ));
            }
            total += len(&f["value"]) + len(&f["name"]);
        }
        if total > 6000 {
            return Err(format!("embed is {total} characters, over 6000"));
        }
    }
    for row in body
        .get("components")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for b in row
            .get("components")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if len(&b["custom_id"]) > 100 || len(&b["custom_id"]) == 0 {
                return Err(format!(
                    "custom_id is {} characters (1..=100)",
                    len(&b["custom_id"])
                ));
            }
            if len(&b["label"]) > 80 {
                return Err("button label over 80".into());
            }
        }
    }
    Ok(())
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let full = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), 1 << 22)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (versioned, path) = match full.strip_prefix("/api/v10") {
        Some(p) => (true, p.to_owned()),
        None => (false, full.clone()),
    };
    let at = Instant::now();
    let (status, resp) = shared
        .serve(is_write(&method, &path), at, storm_reply, || async {
            let mut extra = HeaderMap::new();
            let (status, answer) = if !versioned {
                error(404, 0, "404: Not Found")
            } else if path.starts_with("/webhooks/")
                || path.starts_with("/interactions/")
                || (auth == format!("Bot {}", shared.api.token) && !shared.lock().token_revoked)
            {
                route(&shared, &method, &path, &body, &mut extra)
            } else {
                error(401, 0, "401: Unauthorized")
            };
            let mut resp = if status == 204 {
                StatusCode::NO_CONTENT.into_response()
            } else {
                (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    axum::Json(answer),
                )
                    .into_response()
            };
            resp.headers_mut().extend(extra);
            (status, resp)
        })
        .await;
    shared.record(Call {
        at,
        method: method.to_string(),
        path,
        versioned,
        body,
        status,
    });
    resp
}

/// A call that sends or edits a message (what slow answers and drops hit).
fn is_write(method: &Method, path: &str) -> bool {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(
        (method.as_str(), seg.as_slice()),
        ("POST", ["channels", _, "messages"]) | ("PATCH", ["channels", _, "messages", _])
    )
}

/// A 5xx answer: Discord's JSON error for 500, Cloudflare's HTML page otherwise (slow
/// answers and drops hit message sends and edits).
fn storm_reply(status: u16) -> Response {
    if status == 500 {
        let (_, body) = error(500, 0, "500: Internal Server Error");
        (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
    } else {
        html_status(status)
    }
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    body: &Value,
    extra: &mut HeaderMap,
) -> (u16, Value) {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut inner = shared.lock();
    if is_write(method, path)
        && let Some((after, global)) = inner.rate_limit.take()
    {
        extra.insert(
            "retry-after",
            HeaderValue::from_str(&format!("{}", after.ceil() as u64)).expect("header"),
        );
        extra.insert(
            "x-ratelimit-scope",
            HeaderValue::from_static(if global { "global" } else { "user" }),
        );
        if global {
            extra.insert("x-ratelimit-global", HeaderValue::from_static("true"));
        }
        return (
            429,
            json!({"message": "You are being rate limited.", "retry_after": after, "global": global}),
        );
    }
    match (method.as_str(), seg.as_slice()) {
        ("GET", ["gateway"]) => (200, json!({"url": shared.api.ws_url.clone()})),
        ("GET", ["gateway", "bot"]) => (
            200,
            json!({"url": shared.api.ws_url.clone(), "shards": 1,
                   "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}),
        ),
        ("GET", ["users", "@me"]) => (200, shared.api.bot.clone()),
        ("POST", ["users", "@me", "channels"]) => {
            let Some(user) = body.get("recipient_id").and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            }) else {
                return invalid_form("recipient_id is required".into());
            };
            let c = inner.dm_of(&user);
            (
                200,
                json!({"id": c, "type": 1, "last_message_id": null, "flags": 0, "recipients": [{"id": user, "username": format!("user{user}")}]}),
            )
        }
        ("POST", ["channels", channel, "messages"]) => {
            if !inner.dms.values().any(|c| c == channel) {
                return error(404, 10003, "Unknown Channel");
            }
            if let Err(why) = validate(body) {
                return invalid_form(why);
            }
            let nonce = body.get("nonce").and_then(|n| {
                n.as_str()
                    .map(str::to_owned)
                    .or_else(|| n.as_i64().map(|i| i.to_string()))
            });
            if nonce.as_ref().is_some_and(|n| n.chars().count() > 25) {
                return invalid_form("nonce over 25 characters".into());
            }
            if body.get("enforce_nonce").and_then(Value::as_bool) == Some(true)
                && let Some(n) = &nonce
                && let Some(existing) = inner
                    .nonces
                    .get(&((*channel).to_owned(), n.clone()))
                    .and_then(|id| inner.messages.get(id))
            {
                // Discord: "that message will be returned and no new message will be created".
                return (200, message_json(existing, &shared.api.bot));
            }
            let id = inner.snowflake();
            if let Some(n) = nonce {
                inner.nonces.insert(((*channel).to_owned(), n), id.clone());
            }
            let m = Message {
                reply_to: body
                    .pointer("/message_reference/message_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                ..Message::posted(id.clone(), (*channel).to_owned(), &shared.api.bot, body)
            };
            let json = message_json(&m, &shared.api.bot);
            inner.messages.insert(id.clone(), m);
            inner.order.push(id);
            (200, json)
        }
        ("PATCH", ["channels", channel, "messages", id]) => {
            if let Err(why) = validate(body) {
                return invalid_form(why);
            }
            let Some(m) = inner
                .messages
                .get_mut(*id)
                .filter(|m| m.channel_id == *channel)
            else {
                return error(404, 10008, "Unknown Message");
            };
            if !m.by_bot {
                return error(403, 50005, "Cannot edit a message authored by another user");
            }
            if let Some(c) = body.get("content") {
                m.content = c.as_str().unwrap_or_default().to_owned();
            }
            if let Some(e) = body.get("embeds") {
                m.embeds = e.clone();
            }
            if let Some(c) = body.get("components") {
                m.components = c.clone();
            }
            if let Some(a) = body.get("allowed_mentions") {
                m.allowed_mentions = a.clone();
            }
            m.edits += 1;
            (200, message_json(m, &shared.api.bot))
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            let Some(ix) = inner
                .interactions
                .get_mut(*id)
                .filter(|ix| ix.token == *token)
            else {
                return error(404, 10062, "Unknown interaction");
            };
            if ix.callback.is_some() {
                return error(400, 40060, "Interaction has already been acknowledged.");
            }
            if ix
                .dispatched_at
                .is_none_or(|t| t.elapsed() > INTERACTION_DEADLINE)
            {
                return error(404, 10062, "Unknown interaction");
            }
            ix.callback = Some((Instant::now(), body.clone()));
            (204, Value::Null)
        }
        ("POST", ["webhooks", app, token]) => {
            if *app != shared.api.app_id {
                return error(404, 10015, "Unknown Webhook");
            }
            if let Err(why) = validate(body) {
                return invalid_form(why);
            }
            let id = inner.snowflake();
            let Some(ix) = inner
                .interactions
                .values_mut()
                .find(|ix| ix.token == *token && ix.callback.is_some())
            else {
                return error(404, 10015, "Unknown Webhook");
            };
            let m = Message::posted(id, String::new(), &shared.api.bot, body);
            let json = message_json(&m, &shared.api.bot);
            ix.followups.push(m);
            (200, json)
        }
        _ => error(404, 0, "404: Not Found"),
    }
}

async fn gateway_session(shared: Arc<Shared>, tcp: tokio::net::TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    shared.lock().connections += 1;
    let hello = json!({"op": 10, "d": {"heartbeat_interval": shared.api.heartbeat_ms}, "s": null, "t": null});
    if ws.send(WsMessage::text(hello.to_string())).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Ctl>();
    let mut session_id: Option<String> = None;
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            ctl = rx.recv() => match ctl {
                Some(Ctl::Dispatch(t, d)) => {
                    seq += 1;
                    if let Some(id) = &session_id {
                        shared.lock().known_sessions.insert(id.clone(), seq);
                    }
                    let frame = json!({"op": 0, "t": t, "s": seq, "d": d});
                    if ws.send(WsMessage::text(frame.to_string())).await.is_err() {
                        break;
                    }
                }
                other => {
                    let code = match other { Some(Ctl::Close(c)) => c, _ => 1001 };
                    let _ = ws.close(Some(CloseFrame { code: CloseCode::from(code), reason: "fake closes".into() })).await;
                    break;
                }
            },
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                match v["op"].as_u64() {
                    Some(1) => {
                        let ack = json!({"op": 11, "d": null, "s": null, "t": null});
                        if ws.send(WsMessage::text(ack.to_string())).await.is_err() {
                            break;
                        }
                    }
                    Some(2) => {
                        let token = v["d"]["token"].as_str().unwrap_or_default();
                        let token = token.strip_prefix("Bot ").unwrap_or(token);
                        shared.lock().identifies.push((Instant::now(), v["d"].clone()));
                        if token != shared.api.token || shared.lock().token_revoked {
                            let _ = ws.close(Some(CloseFrame { code: CloseCode::from(4004), reason: "Authentication failed.".into() })).await;
                            break;
                        }
                        let id = uuid::Uuid::new_v4().simple().to_string();
                        seq += 1;
                        let ready = json!({"op": 0, "t": "READY", "s": seq, "d": {
                            "v": 10, "user": shared.api.bot, "guilds": [], "session_id": id, "session_type": "normal",
                            "resume_gateway_url": shared.api.ws_url.clone(),
                            "application": {"id": shared.api.app_id, "flags": 0}, "private_channels": [],
                        }});
                        if ws.send(WsMessage::text(ready.to_string())).await.is_err() {
                            break;
                        }
                        session_id = Some(id.clone());
                        let pending = {
                            let mut inner = shared.lock();
                            inner.known_sessions.insert(id.clone(), seq);
                            inner.sessions.insert(id, Session { ready: true, tx: tx.clone() });
                            std::mem::take(&mut inner.pending)
                        };
                        for (t, d) in pending {
                            let _ = tx.send(Ctl::Dispatch(t, d));
                        }
                        shared.bump();
                    }
                    Some(6) => {
                        let id = v["d"]["session_id"].as_str().unwrap_or_default().to_owned();
                        let known = shared.lock().known_sessions.get(&id).copied();
                        if shared.lock().token_revoked {
                            let _ = ws.close(Some(CloseFrame { code: CloseCode::from(4004), reason: "Authentication failed.".into() })).await;
                            break;
                        }
                        match known {
                            Some(last) if v["d"]["token"].as_str().map(|t| t.strip_prefix("Bot ").unwrap_or(t)) == Some(shared.api.token.as_str()) => {
                                seq = last + 1;
                                let resumed = json!({"op": 0, "t": "RESUMED", "s": seq, "d": {}});
                                if ws.send(WsMessage::text(resumed.to_string())).await.is_err() {
                                    break;
                                }
                                session_id = Some(id.clone());
                                let pending = {
                                    let mut inner = shared.lock();
                                    inner.resumes += 1;
                                    inner.sessions.insert(id, Session { ready: true, tx: tx.clone() });
                                    std::mem::take(&mut inner.pending)
                                };
                                for (t, d) in pending {
                                    let _ = tx.send(Ctl::Dispatch(t, d));
                                }
                                shared.bump();
                            }
                            _ => {
                                if ws.send(WsMessage::text(json!({"op": 9, "d": false, "s": null, "t": null}).to_string())).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if let Some(id) = session_id {
        shared.lock().sessions.remove(&id);
        shared.bump();
    }
}
