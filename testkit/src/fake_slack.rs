//! A fake Slack on 127.0.0.1, speaking the real wire shapes:
//!
//! - Web API: `POST /api/<method>` with `Authorization: Bearer <token>` and a JSON or
//!   form body, answered `{"ok": true, ...}` or `{"ok": false, "error": "<code>"}` with
//!   HTTP 200 (429 with `Retry-After` when rate limiting). Methods: `auth.test`,
//!   `apps.connections.open` (app token only), `conversations.open`, `chat.postMessage`,
//!   `chat.update`, `chat.postEphemeral`; anything else is `unknown_method`.
//! - Socket Mode on its own WebSocket listener: a single-use URL from
//!   `apps.connections.open`, `hello` on connect, envelopes `{envelope_id, type,
//!   payload, accepts_response_payload}`, acks `{envelope_id}` (the time to each ack is
//!   recorded), redelivery of unacked envelopes after 3 s with `retry_attempt`, and
//!   `disconnect` messages on demand.
//!
//! Every call is recorded with its arrival time. Messages keep their current state
//! across `chat.update`. Like Slack, it refuses Block Kit over its limits (50 blocks,
//! 3000 characters per section text, 2000 per context element, 255 per `action_id`,
//! duplicate `action_id`s). [`Message::text`] is the message as a Slack client shows it:
//! `mrkdwn` interpreted (entities decoded, code fences and zero-width spaces invisible,
//! `<@U…>`/`<!channel>`/`<url|label>` turned into what they display), and
//! [`Message::markup`] lists every such live token, which request text must never create.
//!
//! The call log, `wait_for` and the injected faults are [`crate::fake_service`]'s.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::fake_service::{self, Api, Fake, Service, local_addr, loopback};
use crate::service_faults::Countdown;
use crate::service_faults::html_status;

pub const TEAM_ID: &str = "T0FAKETEAM";
pub const BOT_USER: &str = "U0BOTUSER";
pub const BOT_ID: &str = "B0BOTID";

/// How long Slack waits for an ack before redelivering an envelope.
pub const ACK_DEADLINE: Duration = Duration::from_secs(3);

/// One recorded Web API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub method: String,
    /// The bearer token the call carried (empty if none).
    pub token: String,
    /// Parameters from the body (JSON values; form strings holding JSON are parsed).
    pub params: Value,
    /// HTTP status the fake answered with.
    pub status: u16,
    /// Slack's `error` code when `ok` was false.
    pub error: Option<String>,
}

impl Call {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.params.get(key)?.as_str()
    }
}

/// A button as Slack shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub label: String,
    pub action_id: String,
    pub value: String,
    pub style: Option<String>,
}

/// A message as it currently stands (after any updates).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub channel: String,
    pub ts: String,
    /// Who posted it: [`BOT_USER`] for the bot.
    pub user: String,
    /// The `text` field as sent (notification fallback).
    pub fallback: String,
    pub blocks: Value,
    /// The visible text: blocks (or `text` when there are none) as a client renders them.
    pub text: String,
    /// Live mentions and links in it (`<@U…>`, `<!channel>`, `<url|label>`), raw.
    pub markup: Vec<String>,
    pub edits: u32,
    pub deleted: bool,
}

impl Message {
    /// Every button in every actions block, in order.
    pub fn buttons(&self) -> Vec<Button> {
        let mut out = Vec::new();
        for b in self
            .blocks
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "actions")
        {
            for e in b["elements"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["type"] == "button")
            {
                out.push(Button {
                    label: e["text"]["text"].as_str().unwrap_or_default().to_owned(),
                    action_id: e["action_id"].as_str().unwrap_or_default().to_owned(),
                    value: e["value"].as_str().unwrap_or_default().to_owned(),
                    style: e["style"].as_str().map(str::to_owned),
                });
            }
        }
        out
    }

    pub fn by_bot(&self) -> bool {
        self.user == BOT_USER
    }
}

/// An ephemeral message (visible only to `user`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ephemeral {
    pub channel: String,
    pub user: String,
    pub text: String,
    pub at: Instant,
}

/// An envelope sent over Socket Mode.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub kind: String,
    pub payload: Value,
    /// When it was first sent (None: queued, no socket yet).
    pub sent_at: Option<Instant>,
    /// Time from the first send to the ack.
    pub acked_after: Option<Duration>,
    pub attempts: u32,
}

/// What the fake Slack holds: messages, ephemerals, envelopes, sockets, limits.
#[derive(Default)]
pub struct SlackState {
    /// Keyed by (channel, ts); ts grows monotonically.
    messages: BTreeMap<(String, String), Message>,
    ephemerals: Vec<Ephemeral>,
    envelopes: Vec<Envelope>,
    /// Envelopes waiting for a socket.
    queue: VecDeque<String>,
    next_ts: u64,
    next_envelope: u64,
    /// Live Socket Mode connections.
    sockets: Vec<(u64, mpsc::UnboundedSender<WsMessage>)>,
    next_socket: u64,
    /// Tickets issued by apps.connections.open and not yet used.
    tickets: HashSet<String>,
    connections: u32,
    /// method ("" for any) → the next calls answer 429 with this `Retry-After`.
    rate_limits: HashMap<String, Countdown<u64>>,
    /// The bot token was revoked (the app uninstalled): its calls answer `token_revoked`.
    bot_token_revoked: bool,
    /// The app-level token was revoked: `apps.connections.open` answers `token_revoked`.
    app_token_revoked: bool,
}

/// The fake Slack's fixed side: the tokens it accepts, the Socket Mode URL it hands out.
pub struct Slack {
    bot_token: String,
    app_token: String,
    ws_url: String,
}

impl Api for Slack {
    const NAME: &'static str = "slack";
    type State = SlackState;
    type Call = Call;

    fn line(c: &Call) -> String {
        format!("{} {} {:?} {}", c.status, c.method, c.error, c.params)
    }

    fn called(c: &Call, method: &str) -> bool {
        c.method == method
    }
}

type Shared = Service<Slack>;

/// The running fake. Dropping it stops the servers.
pub type FakeSlack = Fake<Slack>;

/// A read-only view of the fake's state, for `wait_for` predicates.
pub type View<'a> = fake_service::View<'a, Slack>;

impl View<'_> {
    pub fn message(&self, channel: &str, ts: &str) -> Option<&Message> {
        self.state()
            .messages
            .get(&(channel.to_owned(), ts.to_owned()))
    }

    /// Messages the bot posted in `channel`, oldest first.
    pub fn bot_messages(&self, channel: &str) -> Vec<&Message> {
        self.state()
            .messages
            .values()
            .filter(|m| m.channel == channel && m.by_bot())
            .collect()
    }

    pub fn ephemerals(&self) -> &[Ephemeral] {
        &self.state().ephemerals
    }

    pub fn envelope(&self, id: &str) -> Option<&Envelope> {
        self.state().envelopes.iter().find(|e| e.id == id)
    }

    /// Live Socket Mode connections.
    pub fn live_sockets(&self) -> usize {
        self.state().sockets.len()
    }

    /// Socket Mode connections opened so far.
    pub fn connections(&self) -> u32 {
        self.state().connections
    }
}

/// The IM channel id between the bot and `user` (stable, like Slack's).
pub fn dm_channel(user: &str) -> String {
    format!("D{}", &user[1..])
}

impl FakeSlack {
    /// Starts a fake accepting `bot_token` (xoxb-) and `app_token` (xapp-).
    pub async fn start(bot_token: &str, app_token: &str) -> FakeSlack {
        let ws = loopback().await;
        let shared = Service::new(
            Slack {
                bot_token: bot_token.to_owned(),
                app_token: app_token.to_owned(),
                ws_url: format!("ws://{}/link/", local_addr(&ws)),
            },
            SlackState {
                next_ts: 1,
                next_envelope: 1,
                ..SlackState::default()
            },
        );
        let app = Router::new()
            .route("/api/{method}", post(handle))
            .with_state(shared.clone());
        Fake::serve(shared, loopback().await, app).with_sockets(ws, socket)
    }

    /// The Web API base, e.g. `http://127.0.0.1:41234/api` (the adapter's `api_url`).
    pub fn url(&self) -> String {
        format!("{}/api", self.url)
    }

    pub fn bot_token(&self) -> &str {
        &self.service.api.bot_token
    }

    pub fn app_token(&self) -> &str {
        &self.service.api.app_token
    }

    /// Revokes the bot token (`true`: its calls answer `token_revoked`, as after the app
    /// was uninstalled) or takes that back (`false`).
    pub fn revoke_bot_token(&self, revoked: bool) {
        self.service.lock().bot_token_revoked = revoked;
        self.service.bump();
    }

    /// Revokes the app-level token (`apps.connections.open` answers `token_revoked`) or
    /// takes that back.
    pub fn revoke_app_token(&self, revoked: bool) {
        self.service.lock().app_token_revoked = revoked;
        self.service.bump();
    }

    /// The next `n` calls to `method` (or to any method, with `""`) answer HTTP 429 with
    /// `Retry-After: secs`.
    pub fn rate_limit_next(&self, method: &str, n: u32, secs: u64) {
        self.service
            .lock()
            .rate_limits
            .entry(method.to_owned())
            .or_default()
            .arm(n, secs);
    }

    /// `user` presses a button: a `block_actions` envelope with `action_id`/`value`, on
    /// message `ts` in `channel`. Returns the envelope id.
    pub fn press(
        &self,
        user: &str,
        channel: &str,
        ts: &str,
        action_id: &str,
        value: &str,
    ) -> String {
        let now = unix_ts();
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user, "username": format!("user_{}", user.to_ascii_lowercase()), "name": format!("user_{}", user.to_ascii_lowercase()), "team_id": TEAM_ID},
            "api_app_id": "A0FAKEAPP",
            "token": "verification-token-unused",
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
            "trigger_id": format!("{now}.{}", rand_suffix()),
            "team": {"id": TEAM_ID, "domain": "fake"},
            "channel": {"id": channel, "name": "directmessage"},
            "message": {"type": "message", "ts": ts, "user": BOT_USER, "bot_id": BOT_ID},
            "response_url": "http://127.0.0.1:9/response-url-not-served",
            "actions": [{
                "type": "button", "action_id": action_id, "block_id": "approval_actions", "value": value,
                "text": {"type": "plain_text", "text": "?"}, "action_ts": format!("{now}.{:06}", rand_suffix()),
            }],
        });
        self.inject("interactive", payload)
    }

    /// `user` posts `text` in `channel` (an IM with the bot when it starts with `D`).
    /// Returns the message's ts.
    pub fn send_text(&self, user: &str, channel: &str, text: &str) -> String {
        let ts = {
            let mut inner = self.service.lock();
            let ts = next_ts(&mut inner);
            let (visible, markup) = mrkdwn(text);
            inner.messages.insert(
                (channel.to_owned(), ts.clone()),
                Message {
                    channel: channel.to_owned(),
                    ts: ts.clone(),
                    user: user.to_owned(),
                    fallback: text.to_owned(),
                    blocks: Value::Null,
                    text: visible,
                    markup,
                    edits: 0,
                    deleted: false,
                },
            );
            ts
        };
        let channel_type = if channel.starts_with('D') {
            "im"
        } else {
            "channel"
        };
        let payload = json!({
            "token": "unused", "team_id": TEAM_ID, "api_app_id": "A0FAKEAPP", "type": "event_callback",
            "event_id": format!("Ev{}", rand_suffix()), "event_time": unix_ts(),
            "event": {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts, "event_ts": ts, "channel_type": channel_type, "team": TEAM_ID},
        });
        self.inject("events_api", payload);
        ts
    }

    /// Sends an envelope (or queues it until a socket connects). Returns its id.
    pub fn inject(&self, kind: &str, payload: Value) -> String {
        let mut inner = self.service.lock();
        let id = format!("env-{:04}-{}", inner.next_envelope, rand_suffix());
        inner.next_envelope += 1;
        inner.envelopes.push(Envelope {
            id: id.clone(),
            kind: kind.to_owned(),
            payload,
            sent_at: None,
            acked_after: None,
            attempts: 0,
        });
        inner.queue.push_back(id.clone());
        flush_queue(&self.service, &mut inner);
        drop(inner);
        self.service.bump();
        id
    }

    /// Sends `{"type":"disconnect","reason":…}` on every live socket, as Slack does before
    /// it rotates a connection.
    pub fn disconnect(&self, reason: &str) {
        let inner = self.service.lock();
        for (_, tx) in &inner.sockets {
            let _ = tx.send(WsMessage::Text(
                json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}})
                    .to_string()
                    .into(),
            ));
        }
    }

    /// Closes every live socket abruptly.
    pub fn drop_sockets(&self) {
        let mut inner = self.service.lock();
        for (_, tx) in inner.sockets.drain(..) {
            let _ = tx.send(WsMessage::Close(None));
        }
    }

    /// Socket Mode connections opened so far.
    pub fn connections(&self) -> u32 {
        self.service.lock().connections
    }

    /// Live Socket Mode connections.
    pub fn live_sockets(&self) -> usize {
        self.service.lock().sockets.len()
    }

    /// Deletes a message on the service side.
    pub fn delete_message(&self, channel: &str, ts: &str) {
        if let Some(m) = self
            .service
            .lock()
            .messages
            .get_mut(&(channel.to_owned(), ts.to_owned()))
        {
            m.deleted = true;
        }
        self.service.bump();
    }

    pub fn message(&self, channel: &str, ts: &str) -> Option<Message> {
        self.service.read(|v| v.message(channel, ts).cloned())
    }

    pub fn bot_messages(&self, channel: &str) -> Vec<Message> {
        self.service
            .read(|v| v.bot_messages(channel).into_iter().cloned().collect())
    }

    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        self.service.read(|v| v.ephemerals().to_vec())
    }

    pub fn envelope(&self, id: &str) -> Option<Envelope> {
        self.service.read(|v| v.envelope(id).cloned())
    }

    pub fn envelopes(&self) -> Vec<Envelope> {
        self.service.lock().envelopes.clone()
    }

    /// Waits for the ack of envelope `id`; returns the time from send to ack.
    pub async fn wait_ack(&self, id: &str, timeout: Duration) -> Duration {
        self.wait_for(timeout, &format!("ack of envelope {id}"), |v| {
            v.envelope(id).and_then(|e| e.acked_after)
        })
        .await
    }

    /// Waits for an ephemeral message to `user` in `channel` containing `needle`.
    pub async fn wait_ephemeral(
        &self,
        channel: &str,
        user: &str,
        needle: &str,
        timeout: Duration,
    ) -> Ephemeral {
        self.wait_for(
            timeout,
            &format!("ephemeral to {user} containing {needle:?}"),
            |v| {
                v.ephemerals()
                    .iter()
                    .find(|e| e.channel == channel && e.user == user && e.text.contains(needle))
                    .cloned()
            },
        )
        .await
    }

    /// Waits for a message's state to satisfy `f`.
    pub async fn wait_message(
        &self,
        channel: &str,
        ts: &str,
        timeout: Duration,
        what: &str,
        f: impl Fn(&Message) -> bool,
    ) -> Message {
        self.wait_for(timeout, what, |v| {
            v.message(channel, ts).filter(|m| f(m)).cloned()
        })
        .await
    }
}

fn rand_suffix() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32 % 1_000_000
}

fn unix_ts() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
}

fn next_ts(inner: &mut SlackState) -> String {
    let n = inner.next_ts;
    inner.next_ts += 1;
    format!("{}.{:06}", 1_700_000_000 + n / 1_000_000, n % 1_000_000)
}

/// Sends queued envelopes on the newest live socket.
fn flush_queue(shared: &Arc<Shared>, inner: &mut SlackState) {
    let Some((_, tx)) = inner.sockets.last().cloned() else {
        return;
    };
    while let Some(id) = inner.queue.pop_front() {
        let Some(e) = inner.envelopes.iter_mut().find(|e| e.id == id) else {
            continue;
        };
        let mut frame = json!({"envelope_id": e.id, "type": e.kind, "payload": e.payload, "accepts_response_payload": e.kind == "interactive"});
        if e.attempts > 0 {
            frame["retry_attempt"] = json!(e.attempts);
            frame["retry_reason"] = json!("timeout");
        }
        e.attempts += 1;
        if e.sent_at.is_none() {
            e.sent_at = Some(Instant::now());
        }
        if tx.send(WsMessage::Text(frame.to_string().into())).is_err() {
            inner.queue.push_front(id);
            return;
        }
        // Redeliver if not acked in time, like Slack (at most 3 retries).
        let (s, id) = (shared.clone(), id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(ACK_DEADLINE).await;
            let mut inner = s.lock();
            let retry = inner
                .envelopes
                .iter()
                .any(|e| e.id == id && e.acked_after.is_none() && e.attempts <= 3);
            if retry {
                inner.queue.push_back(id);
                flush_queue(&s, &mut inner);
            }
        });
    }
}

// The handshake callback's error type is tungstenite's own `ErrorResponse`.
#[allow(clippy::result_large_err)]
async fn socket(shared: Arc<Shared>, tcp: tokio::net::TcpStream) {
    let mut path = String::new();
    let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
        path = req.uri().to_string();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
        return;
    };
    let ticket = path
        .split("ticket=")
        .nth(1)
        .unwrap_or_default()
        .split('&')
        .next()
        .unwrap_or_default()
        .to_owned();
    let (mut sink, mut stream) = ws.split();
    if !shared.lock().tickets.remove(&ticket) {
        let _ = sink.send(WsMessage::Close(None)).await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<WsMessage>();
    let hello = json!({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060}, "connection_info": {"app_id": "A0FAKEAPP"}});
    let _ = tx.send(WsMessage::Text(hello.to_string().into()));
    let id = {
        let mut inner = shared.lock();
        let id = inner.next_socket;
        inner.next_socket += 1;
        inner.connections += 1;
        inner.sockets.push((id, tx));
        flush_queue(&shared, &mut inner);
        id
    };
    shared.bump();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, WsMessage::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    });
    while let Some(Ok(frame)) = stream.next().await {
        let WsMessage::Text(t) = frame else { continue };
        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
            continue;
        };
        let Some(eid) = v["envelope_id"].as_str() else {
            continue;
        };
        let mut inner = shared.lock();
        if let Some(e) = inner.envelopes.iter_mut().find(|e| e.id == eid)
            && e.acked_after.is_none()
        {
            e.acked_after = e.sent_at.map(|t| t.elapsed());
        }
        drop(inner);
        shared.bump();
    }
    writer.abort();
    shared.lock().sockets.retain(|(i, _)| *i != id);
    shared.bump();
}

/// Interprets `mrkdwn` like a Slack client: the visible text and the live tokens.
/// A backtick right after a zero-width space is literal (it opens no code span: Slack
/// wants formatting characters at a word's edge, and the space is no edge).
pub fn mrkdwn(src: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut markup = Vec::new();
    let mut rest = src;
    // Inside a ``` block or an inline `code` span, formatting characters are literal.
    let (mut fenced, mut inline) = (false, false);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("\u{200B}`") {
            out.push('`');
            rest = r;
            continue;
        }
        if let Some(r) = rest.strip_prefix("```") {
            fenced = !fenced;
            rest = r;
            continue;
        }
        if !fenced && let Some(r) = rest.strip_prefix('`') {
            inline = !inline;
            rest = r;
            continue;
        }
        if !fenced
            && !inline
            && let Some(r) = rest.strip_prefix(['*', '~'])
        {
            rest = r;
            continue;
        }
        if let Some(r) = rest.strip_prefix('<')
            && let Some(end) = r.find('>')
        {
            let token = &r[..end];
            markup.push(format!("<{token}>"));
            let shown = match token.split_once('|') {
                Some((_, label)) => label.to_owned(),
                None if token.starts_with('@') || token.starts_with('#') => token.to_owned(),
                None if token.starts_with('!') => format!("@{}", &token[1..]),
                None => token.to_owned(),
            };
            out.push_str(&shown);
            rest = &r[end + 1..];
            continue;
        }
        let mut matched = false;
        for (ent, c) in [("&amp;", '&'), ("&lt;", '<'), ("&gt;", '>')] {
            if let Some(r) = rest.strip_prefix(ent) {
                out.push(c);
                rest = r;
                matched = true;
                break;
            }
        }
        if matched {
            continue;
        }
        let c = rest.chars().next().expect("non-empty");
        if c != '\u{200B}' {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    (out, markup)
}

/// The visible text and live tokens of a message's blocks.
fn render_blocks(blocks: &Value) -> (String, Vec<String>) {
    let mut texts: Vec<String> = Vec::new();
    for b in blocks.as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("section") | Some("header") => {
                if let Some(t) = b["text"]["text"].as_str() {
                    texts.push(t.to_owned());
                }
            }
            Some("context") => {
                let parts: Vec<String> = b["elements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["text"].as_str().map(str::to_owned))
                    .collect();
                texts.push(parts.join(" · "));
            }
            _ => {}
        }
    }
    let mut visible = Vec::new();
    let mut markup = Vec::new();
    for t in texts {
        let (v, m) = mrkdwn(&t);
        visible.push(v);
        markup.extend(m);
    }
    (visible.join("\n"), markup)
}

/// Checks Block Kit limits as Slack does; `Err` is the error code.
fn validate_blocks(blocks: &Value) -> Result<(), String> {
    let Some(list) = blocks.as_array() else {
        return Err("invalid_blocks_format".into());
    };
    if list.len() > 50 {
        return Err("invalid_blocks".into());
    }
    let mut ids = HashSet::new();
    for b in list {
        match b["type"].as_str() {
            Some("section") => {
                let t = b["text"]["text"].as_str().unwrap_or_default();
                if t.is_empty() || t.chars().count() > 3000 {
                    return Err("invalid_blocks".into());
                }
            }
            Some("context") => {
                let es = b["elements"].as_array().ok_or("invalid_blocks")?;
                if es.is_empty() || es.len() > 10 {
                    return Err("invalid_blocks".into());
                }
                for e in es {
                    if e["text"].as_str().unwrap_or_default().chars().count() > 2000 {
                        return Err("invalid_blocks".into());
                    }
                }
            }
            Some("actions") => {
                let es = b["elements"].as_array().ok_or("invalid_blocks")?;
                if es.is_empty() || es.len() > 25 {
                    return Err("invalid_blocks".into());
                }
                for e in es {
                    let id = e["action_id"].as_str().unwrap_or_default();
                    let value = e["value"].as_str().unwrap_or_default();
                    let label = e["text"]["text"].as_str().unwrap_or_default();
                    if id.chars().count() > 255
                        || value.chars().count() > 2000
                        || label.is_empty()
                        || label.chars().count() > 75
                    {
                        return Err("invalid_blocks".into());
                    }
                    if !id.is_empty() && !ids.insert(id.to_owned()) {
                        return Err("invalid_blocks".into());
                    }
                }
            }
            Some("header") | Some("divider") | Some("rich_text") => {}
            _ => return Err("invalid_blocks".into()),
        }
    }
    Ok(())
}

/// Calls that post or edit a message (what slow answers and drops hit).
const WRITE_METHODS: &[&str] = &["chat.postMessage", "chat.update", "chat.postEphemeral"];

enum Answer {
    Ok(Value),
    Err(&'static str),
    RateLimited(u64),
}

async fn handle(
    State(s): State<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let write = WRITE_METHODS.contains(&method.as_str());
    let mut error = None;
    let (status, resp) = s
        .serve(write, at, html_status, || async {
            let params = parse_body(&ctype, &body);
            let answer = {
                let mut inner = s.lock();
                let limited = ["", method.as_str()]
                    .into_iter()
                    .find_map(|k| inner.rate_limits.get_mut(k)?.take());
                match (limited, params) {
                    (Some(secs), _) => Answer::RateLimited(secs),
                    (None, Err(e)) => {
                        tracing::warn!(error = %e, "fake slack: bad body");
                        Answer::Err("invalid_form_data")
                    }
                    (None, Ok(ref p)) => dispatch(&s, &mut inner, &method, &token, p),
                }
            };
            let (status, err, resp) = match answer {
                Answer::Ok(mut v) => {
                    v["ok"] = json!(true);
                    (200, None, (StatusCode::OK, axum::Json(v)).into_response())
                }
                Answer::Err(code) => (
                    200,
                    Some(code.to_owned()),
                    (
                        StatusCode::OK,
                        axum::Json(json!({"ok": false, "error": code})),
                    )
                        .into_response(),
                ),
                Answer::RateLimited(secs) => (
                    429,
                    Some("ratelimited".to_owned()),
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, secs.to_string())],
                        axum::Json(json!({"ok": false, "error": "ratelimited"})),
                    )
                        .into_response(),
                ),
            };
            error = err;
            (status, resp)
        })
        .await;
    let params = parse_body(&ctype, &body).unwrap_or(Value::Null);
    s.record(Call {
        at,
        method,
        token,
        params,
        status,
        error,
    });
    resp
}

fn parse_body(ctype: &str, body: &[u8]) -> Result<Value, String> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    if ctype.starts_with("application/json") {
        return match serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())? {
            v @ Value::Object(_) => Ok(v),
            _ => Err("JSON body must be an object".into()),
        };
    }
    let mut map = Map::new();
    for (k, v) in form_urlencoded::parse(body) {
        let (k, v) = (k.into_owned(), v.into_owned());
        let v = if k == "blocks" {
            serde_json::from_str(&v).unwrap_or(Value::String(v))
        } else {
            Value::String(v)
        };
        map.insert(k, v);
    }
    Ok(Value::Object(map))
}

fn dispatch(
    s: &Arc<Shared>,
    inner: &mut SlackState,
    method: &str,
    token: &str,
    p: &Value,
) -> Answer {
    let str_param = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
    if method == "apps.connections.open" {
        if token.is_empty() {
            return Answer::Err("not_authed");
        }
        if token != s.api.app_token {
            return Answer::Err(if token.starts_with("xoxb-") {
                "not_allowed_token_type"
            } else {
                "invalid_auth"
            });
        }
        if inner.app_token_revoked {
            return Answer::Err("token_revoked");
        }
        let ticket = uuid::Uuid::new_v4().simple().to_string();
        inner.tickets.insert(ticket.clone());
        return Answer::Ok(
            json!({"url": format!("{}?ticket={ticket}&app_id=A0FAKEAPP", s.api.ws_url)}),
        );
    }
    if token.is_empty() {
        return Answer::Err("not_authed");
    }
    if token != s.api.bot_token {
        return Answer::Err(if token.starts_with("xapp-") {
            "not_allowed_token_type"
        } else {
            "invalid_auth"
        });
    }
    if inner.bot_token_revoked {
        return Answer::Err("token_revoked");
    }
    match method {
        "auth.test" => Answer::Ok(json!({
            "url": "https://fake.slack.com/", "team": "Fake Team", "user": "approval_bot",
            "team_id": TEAM_ID, "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": false,
        })),
        "conversations.open" => {
            let Some(users) = str_param("users") else {
                return Answer::Err("users_list_not_supplied");
            };
            if users.contains(',') {
                return Answer::Err("not_enough_users");
            }
            if !(users.starts_with('U') || users.starts_with('W')) {
                return Answer::Err("user_not_found");
            }
            Answer::Ok(json!({"channel": {"id": dm_channel(&users)}, "already_open": true}))
        }
        "conversations.history" => {
            let Some(channel) = str_param("channel") else {
                return Answer::Err("channel_not_found");
            };
            let limit = str_param("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(100)
                .clamp(1, 999);
            let mut v: Vec<&Message> = inner
                .messages
                .values()
                .filter(|m| m.channel == channel && !m.deleted)
                .collect();
            // Fixed-width "seconds.micros": text order is time order. Newest first.
            v.sort_by(|a, b| b.ts.cmp(&a.ts));
            let messages: Vec<Value> = v
                .iter()
                .take(limit)
                .map(|m| {
                    let mut j =
                        json!({"type": "message", "user": m.user, "text": m.fallback, "ts": m.ts});
                    if !m.blocks.is_null() {
                        j["blocks"] = m.blocks.clone();
                    }
                    if m.by_bot() {
                        j["bot_id"] = json!(BOT_ID);
                    }
                    j
                })
                .collect();
            Answer::Ok(json!({"messages": messages, "has_more": v.len() > limit}))
        }
        "chat.postMessage" => {
            let Some(channel) = str_param("channel") else {
                return Answer::Err("channel_not_found");
            };
            let text = str_param("text").unwrap_or_default();
            let blocks = p.get("blocks").cloned().unwrap_or(Value::Null);
            if text.is_empty() && blocks.is_null() {
                return Answer::Err("no_text");
            }
            if !blocks.is_null()
                && let Err(_e) = validate_blocks(&blocks)
            {
                return Answer::Err("invalid_blocks");
            }
            if text.chars().count() > 40_000 {
                return Answer::Err("msg_too_long");
            }
            let ts = next_ts(inner);
            let (visible, markup) = if blocks.is_null() {
                mrkdwn(&text)
            } else {
                render_blocks(&blocks)
            };
            let m = Message {
                channel: channel.clone(),
                ts: ts.clone(),
                user: BOT_USER.into(),
                fallback: text.clone(),
                blocks: blocks.clone(),
                text: visible,
                markup,
                edits: 0,
                deleted: false,
            };
            inner.messages.insert((channel.clone(), ts.clone()), m);
            Answer::Ok(
                json!({"channel": channel, "ts": ts, "message": {"type": "message", "text": text, "user": BOT_USER, "bot_id": BOT_ID, "ts": ts, "blocks": blocks}}),
            )
        }
        "chat.update" => {
            let (Some(channel), Some(ts)) = (str_param("channel"), str_param("ts")) else {
                return Answer::Err("message_not_found");
            };
            let blocks = p.get("blocks").cloned();
            if let Some(b) = &blocks
                && validate_blocks(b).is_err()
            {
                return Answer::Err("invalid_blocks");
            }
            let Some(m) = inner
                .messages
                .get_mut(&(channel.clone(), ts.clone()))
                .filter(|m| !m.deleted)
            else {
                return Answer::Err("message_not_found");
            };
            if !m.by_bot() {
                return Answer::Err("cant_update_message");
            }
            if let Some(t) = str_param("text") {
                m.fallback = t;
            }
            if let Some(b) = blocks {
                m.blocks = b;
            }
            let (visible, markup) = if m.blocks.is_null() {
                mrkdwn(&m.fallback)
            } else {
                render_blocks(&m.blocks)
            };
            m.text = visible;
            m.markup = markup;
            m.edits += 1;
            Answer::Ok(json!({"channel": channel, "ts": ts, "text": m.fallback}))
        }
        "chat.postEphemeral" => {
            let (Some(channel), Some(user)) = (str_param("channel"), str_param("user")) else {
                return Answer::Err("user_not_in_channel");
            };
            let text = str_param("text").unwrap_or_default();
            if text.is_empty() && p.get("blocks").is_none() {
                return Answer::Err("no_text");
            }
            let (visible, _) = mrkdwn(&text);
            inner.ephemerals.push(Ephemeral {
                channel,
                user,
                text: visible,
                at: Instant::now(),
            });
            let ts = next_ts(inner);
            Answer::Ok(json!({"message_ts": ts}))
        }
        _ => Answer::Err("unknown_method"),
    }
}
