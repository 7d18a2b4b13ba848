//! A fake Telegram Bot API server on 127.0.0.1, speaking the real wire shape:
//! `POST /bot<token>/<method>` with JSON, form or multipart bodies, answers
//! `{ok:true,result}` or `{ok:false,error_code,description,parameters}`.
//!
//! Method names match case-insensitively (OpenClaw's client says `sendMessage`, teloxide
//! `SendMessage`). Every call is recorded with its arrival time and parsed parameters;
//! messages keep their current state across edits; the test injects updates (button
//! presses, texts) that a real long poll (`getUpdates` with `offset`/`timeout`) returns.
//!
//! Like Telegram, it refuses HTML that does not parse, texts over 4096 UTF-16 units,
//! callback data over 64 bytes, edits of unknown messages, no-op edits ("message is not
//! modified") and second answers to one callback query. A `getUpdates` ends the one still
//! waiting with 409 ("terminated by other getUpdates request"), polls answer 409 while a
//! webhook is set (`setWebhook` / `deleteWebhook`), and a revoked token gets 401 on every call.
//!
//! The call log, `wait_for` and the injected faults are [`crate::fake_service`]'s.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};

use crate::fake_service::{self, Api, Fake, Service, loopback};
use crate::service_faults::Countdown;
use crate::service_faults::html_status;

/// Methods that put or change a message in a chat: these are rate limited.
const WRITE_METHODS: &[&str] = &[
    "sendmessage",
    "senddocument",
    "editmessagetext",
    "editmessagereplymarkup",
];

/// One recorded API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    /// The method name as the client spelled it.
    pub method: String,
    /// Parameters from the query string and body (JSON values; form/multipart strings
    /// that hold JSON are parsed; a file part is `{"file_name", "content"}`).
    pub params: Value,
    /// HTTP status the fake answered with.
    pub status: u16,
}

impl Call {
    /// One line for a failing test's output: when, status, method, params.
    pub fn line(&self) -> String {
        format!(
            "{:?} {} {} {}",
            self.at, self.status, self.method, self.params
        )
    }

    /// Case-insensitive method comparison.
    pub fn is(&self, method: &str) -> bool {
        self.method.eq_ignore_ascii_case(method)
    }

    pub fn chat_id(&self) -> Option<i64> {
        as_i64(self.params.get("chat_id")?)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.params.get(key)?.as_str()
    }
}

/// A message as it currently stands (after any edits).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub chat_id: i64,
    pub message_id: i64,
    /// The text as sent (HTML source when `parse_mode` is HTML).
    pub raw: String,
    /// The text as a Telegram client shows it (markup parsed, entities decoded).
    pub text: String,
    pub parse_mode: Option<String>,
    /// The inline keyboard, if any.
    pub reply_markup: Option<Value>,
    pub reply_to: Option<i64>,
    /// For documents: file name and content.
    pub document: Option<(String, String)>,
    pub caption: Option<String>,
    pub edits: u32,
    pub sent_by_bot: bool,
    /// Sent with `disable_notification`: the phone shows it without a sound.
    pub silent: bool,
}

impl Message {
    /// `(label, callback_data)` of every inline button, row by row.
    pub fn buttons(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for row in self
            .reply_markup
            .as_ref()
            .and_then(|m| m.get("inline_keyboard"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for b in row.as_array().into_iter().flatten() {
                out.push((
                    b.get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    b.get("callback_data")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                ));
            }
        }
        out
    }
}

/// A user the fake injects updates from.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub first_name: String,
    pub username: Option<String>,
}

impl User {
    pub fn new(id: i64) -> User {
        User {
            id,
            first_name: format!("User {id}"),
            username: Some(format!("user{id}")),
        }
    }

    fn json(&self) -> Value {
        let mut u = json!({"id": self.id, "is_bot": false, "first_name": self.first_name, "language_code": "en"});
        if let Some(n) = &self.username {
            u["username"] = json!(n);
        }
        u
    }
}

/// The fake Telegram's fixed side: the bot's token and its `getMe` user.
pub struct Telegram {
    token: String,
    bot: Value,
}

/// What the fake Telegram holds: chats' messages, updates, callback queries, limits.
#[derive(Default)]
pub struct TelegramState {
    updates: Vec<Value>,
    next_update_id: i64,
    /// Updates below this id were confirmed by a `getUpdates` offset.
    confirmed: i64,
    messages: HashMap<(i64, i64), Message>,
    next_message_id: HashMap<i64, i64>,
    next_callback: u64,
    /// Open (unanswered) callback queries.
    open_callbacks: HashSet<String>,
    /// Answers given per callback query id, in order (a second one is refused, but kept).
    callback_answers: HashMap<String, Vec<Value>>,
    /// The next writes answer 429 with this `retry_after`.
    rate_limit_next: Countdown<u32>,
    min_chat_gap: Option<Duration>,
    last_write: HashMap<i64, Instant>,
    /// Counts `getUpdates` calls: a waiting poll whose number is no longer the last ends with 409.
    polls: u64,
    /// The webhook URL `setWebhook` set: `getUpdates` answers 409 while there is one.
    webhook: Option<String>,
    /// Every call answers 401 (the token was revoked with @BotFather).
    token_revoked: bool,
}

impl Api for Telegram {
    const NAME: &'static str = "telegram";
    type State = TelegramState;
    type Call = Call;

    fn line(c: &Call) -> String {
        format!("{} {} {}", c.status, c.method, c.params)
    }

    fn called(c: &Call, method: &str) -> bool {
        c.is(method)
    }
}

type Shared = Service<Telegram>;

/// The running fake. Dropping it stops the server.
pub type FakeTelegram = Fake<Telegram>;

/// A read-only view of the fake's state, for `wait_for` predicates.
pub type View<'a> = fake_service::View<'a, Telegram>;

impl View<'_> {
    pub fn message(&self, chat_id: i64, message_id: i64) -> Option<&Message> {
        self.state().messages.get(&(chat_id, message_id))
    }

    /// Messages the bot sent to `chat_id`, oldest first.
    pub fn bot_messages(&self, chat_id: i64) -> Vec<&Message> {
        let mut v: Vec<&Message> = self
            .state()
            .messages
            .values()
            .filter(|m| m.chat_id == chat_id && m.sent_by_bot)
            .collect();
        v.sort_by_key(|m| m.message_id);
        v
    }

    pub fn callback_answers(&self, query_id: &str) -> &[Value] {
        self.state()
            .callback_answers
            .get(query_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// The bot's user id: the numeric part of the token, as with real tokens.
fn bot_id(token: &str) -> i64 {
    token
        .split(':')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7_000_000_001)
}

impl FakeTelegram {
    /// Starts a fake for `token` (real tokens look like `<bot id>:<secret>`).
    pub async fn start(token: &str) -> FakeTelegram {
        let bot = json!({
            "id": bot_id(token), "is_bot": true, "first_name": "Approval Bridge Test",
            "username": "approval_test_bot", "can_join_groups": true,
            "can_read_all_group_messages": false, "supports_inline_queries": false,
            "can_connect_to_business": false, "has_main_web_app": false,
        });
        let shared = Service::new(
            Telegram {
                token: token.to_owned(),
                bot,
            },
            TelegramState {
                next_update_id: 100_000,
                ..TelegramState::default()
            },
        );
        let app = Router::new()
            .route("/{bot}/{method}", any(handle))
            .with_state(shared.clone());
        Fake::serve(shared, loopback().await, app)
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (the Bot API's `api_url`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn token(&self) -> &str {
        &self.service.api.token
    }

    /// The bot's `getMe` user object.
    pub fn bot_user(&self) -> Value {
        self.service.api.bot.clone()
    }

    fn push_update(&self, inner: &mut TelegramState, kind: &str, body: Value) -> i64 {
        let id = inner.next_update_id;
        inner.next_update_id += 1;
        inner.updates.push(json!({"update_id": id, kind: body}));
        id
    }

    fn chat_json(chat_id: i64, user: &User) -> Value {
        if chat_id > 0 {
            let mut c = json!({"id": chat_id, "type": "private", "first_name": user.first_name});
            if let Some(n) = &user.username {
                c["username"] = json!(n);
            }
            c
        } else {
            json!({"id": chat_id, "type": "supergroup", "title": "Test group"})
        }
    }

    /// A press on an inline button of message `message_id` in `chat_id` by `user_id`
    /// (a private chat when `chat_id == user_id`, a group when negative). Returns the
    /// callback query id.
    pub fn press(&self, user_id: i64, chat_id: i64, message_id: i64, data: &str) -> String {
        self.press_as(&User::new(user_id), chat_id, message_id, data)
    }

    pub fn press_as(&self, user: &User, chat_id: i64, message_id: i64, data: &str) -> String {
        let mut inner = self.service.lock();
        inner.next_callback += 1;
        let qid = format!(
            "{}{:04}",
            4_000_000_000_000_000u64 + inner.next_callback,
            inner.next_callback
        );
        let chat = Self::chat_json(chat_id, user);
        let message = match inner.messages.get(&(chat_id, message_id)) {
            Some(m) => message_json(m, &self.service.api.bot, chat),
            None => {
                json!({"message_id": message_id, "date": unix_now(), "chat": chat, "text": "(unknown message)"})
            }
        };
        let body = json!({
            "id": qid, "from": user.json(), "message": message,
            "chat_instance": format!("ci{chat_id}"), "data": data,
        });
        inner.open_callbacks.insert(qid.clone());
        self.push_update(&mut inner, "callback_query", body);
        drop(inner);
        self.service.bump();
        qid
    }

    /// A text message from `user_id` in `chat_id`. Returns its message id.
    pub fn send_text(&self, user_id: i64, chat_id: i64, text: &str) -> i64 {
        self.send_text_as(&User::new(user_id), chat_id, text)
    }

    pub fn send_text_as(&self, user: &User, chat_id: i64, text: &str) -> i64 {
        let mut inner = self.service.lock();
        let mid = next_message_id(&mut inner, chat_id);
        let mut msg = json!({
            "message_id": mid, "from": user.json(), "chat": Self::chat_json(chat_id, user),
            "date": unix_now(), "text": text,
        });
        if text.starts_with('/') {
            let len = text
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .encode_utf16()
                .count();
            msg["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
        }
        inner.messages.insert(
            (chat_id, mid),
            Message {
                chat_id,
                message_id: mid,
                raw: text.to_owned(),
                text: text.to_owned(),
                parse_mode: None,
                reply_markup: None,
                reply_to: None,
                document: None,
                caption: None,
                edits: 0,
                sent_by_bot: false,
                silent: false,
            },
        );
        self.push_update(&mut inner, "message", msg);
        drop(inner);
        self.service.bump();
        mid
    }

    /// Deletes a message (as if the user deleted it): later edits find nothing.
    pub fn delete_message(&self, chat_id: i64, message_id: i64) {
        self.service.lock().messages.remove(&(chat_id, message_id));
        self.service.bump();
    }

    /// The next `n` message-writing calls (send/edit) answer 429 with `retry_after`.
    pub fn rate_limit_next(&self, n: u32, retry_after_secs: u32) {
        self.service.lock().rate_limit_next.arm(n, retry_after_secs);
    }

    /// Revokes the bot's token (`true`: every call answers 401 Unauthorized, as after
    /// @BotFather's /revoke) or takes it back (`false`).
    pub fn revoke_token(&self, revoked: bool) {
        self.service.lock().token_revoked = revoked;
        self.service.bump();
    }

    /// Sets (or, with `None`, deletes) the bot's webhook, as `setWebhook` / `deleteWebhook` do.
    pub fn set_webhook(&self, url: Option<&str>) {
        self.service.lock().webhook = url.map(str::to_owned);
        self.service.bump();
    }

    /// Enforce Telegram's per-chat limit: a write to a chat less than `gap` after the
    /// previous accepted write to it answers 429 (retry_after 1). `None` turns it off.
    pub fn enforce_chat_gap(&self, gap: Option<Duration>) {
        self.service.lock().min_chat_gap = gap;
    }

    pub fn message(&self, chat_id: i64, message_id: i64) -> Option<Message> {
        self.service
            .read(|v| v.message(chat_id, message_id).cloned())
    }

    pub fn bot_messages(&self, chat_id: i64) -> Vec<Message> {
        self.service
            .read(|v| v.bot_messages(chat_id).into_iter().cloned().collect())
    }

    pub fn callback_answers(&self, query_id: &str) -> Vec<Value> {
        self.service.read(|v| v.callback_answers(query_id).to_vec())
    }

    /// The `n`th (0-based) message the bot sent to `chat_id`, waiting for it.
    pub async fn wait_bot_message(&self, chat_id: i64, n: usize, timeout: Duration) -> Message {
        self.wait_for(
            timeout,
            &format!("bot message #{n} in chat {chat_id}"),
            |v| v.bot_messages(chat_id).get(n).map(|m| (*m).clone()),
        )
        .await
    }

    /// The first answer to callback query `query_id`, waiting for it.
    pub async fn wait_callback_answer(&self, query_id: &str, timeout: Duration) -> Value {
        self.wait_for(
            timeout,
            &format!("answer to callback query {query_id}"),
            |v| v.callback_answers(query_id).first().cloned(),
        )
        .await
    }

    /// Waits for a message's state to satisfy `f`.
    pub async fn wait_message(
        &self,
        chat_id: i64,
        message_id: i64,
        timeout: Duration,
        what: &str,
        f: impl Fn(&Message) -> bool,
    ) -> Message {
        self.wait_for(timeout, what, |v| {
            v.message(chat_id, message_id).filter(|m| f(m)).cloned()
        })
        .await
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(1)
}

fn next_message_id(inner: &mut TelegramState, chat_id: i64) -> i64 {
    let n = inner.next_message_id.entry(chat_id).or_insert(0);
    *n += 1;
    *n
}

fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.trim().parse().ok())
}

fn message_json(m: &Message, bot: &Value, chat: Value) -> Value {
    let from = if m.sent_by_bot {
        let mut b = bot.clone();
        if let Some(o) = b.as_object_mut() {
            o.retain(|k, _| ["id", "is_bot", "first_name", "username"].contains(&k.as_str()));
        }
        b
    } else {
        json!({"id": m.chat_id, "is_bot": false, "first_name": "User"})
    };
    let mut v = json!({"message_id": m.message_id, "from": from, "chat": chat, "date": unix_now()});
    if let Some((name, content)) = &m.document {
        v["document"] = json!({
            "file_name": name, "mime_type": "text/plain", "file_size": content.len(),
            "file_id": format!("doc-{}-{}", m.chat_id, m.message_id),
            "file_unique_id": format!("u{}{}", m.chat_id, m.message_id),
        });
        if let Some(c) = &m.caption {
            v["caption"] = json!(c);
        }
    } else {
        v["text"] = json!(m.text);
    }
    if m.edits > 0 {
        v["edit_date"] = json!(unix_now());
    }
    if let Some(k) = &m.reply_markup {
        v["reply_markup"] = k.clone();
    }
    v
}

fn bot_chat(chat_id: i64) -> Value {
    if chat_id > 0 {
        json!({"id": chat_id, "type": "private", "first_name": "Owner"})
    } else {
        json!({"id": chat_id, "type": "supergroup", "title": "Test group"})
    }
}

type ApiResult = Result<Value, ApiError>;

struct ApiError {
    code: u16,
    description: String,
    retry_after: Option<u32>,
}

fn bad(description: impl Into<String>) -> ApiError {
    ApiError {
        code: 400,
        description: format!("Bad Request: {}", description.into()),
        retry_after: None,
    }
}

fn reply(res: ApiResult) -> (u16, Response) {
    match res {
        Ok(result) => (
            200,
            (
                StatusCode::OK,
                axum::Json(json!({"ok": true, "result": result})),
            )
                .into_response(),
        ),
        Err(e) => {
            let mut body = json!({"ok": false, "error_code": e.code, "description": e.description});
            if let Some(r) = e.retry_after {
                body["parameters"] = json!({"retry_after": r});
            }
            let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::BAD_REQUEST);
            (e.code, (status, axum::Json(body)).into_response())
        }
    }
}

async fn handle(
    State(s): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    req: Request,
) -> Response {
    let at = Instant::now();
    let revoked = s.lock().token_revoked;
    if bot != format!("bot{}", s.api.token) || revoked {
        let (status, r) = reply(Err(ApiError {
            code: 401,
            description: "Unauthorized".into(),
            retry_after: None,
        }));
        if revoked {
            s.record(Call {
                at,
                method,
                params: Value::Object(Map::new()),
                status,
            });
        }
        return r;
    }
    let params = match parse_params(req).await {
        Ok(p) => p,
        Err(e) => return reply(Err(bad(e))).1,
    };
    let lower = method.to_ascii_lowercase();
    let write = WRITE_METHODS.contains(&lower.as_str());
    let (status, resp) = s
        .serve(write, at, storm_reply, || async {
            let res = if lower == "getupdates" {
                get_updates(&s, &params).await
            } else {
                let mut inner = s.lock();
                dispatch(&s, &mut inner, &lower, &params, at)
            };
            reply(res)
        })
        .await;
    s.record(Call {
        at,
        method,
        params,
        status,
    });
    resp
}

async fn parse_params(req: Request) -> Result<Value, String> {
    let mut map = Map::new();
    if let Some(q) = req.uri().query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            map.insert(k.into_owned(), loose_json(v.into_owned()));
        }
    }
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.starts_with("multipart/form-data") {
        let mut mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| e.to_string())?;
        while let Some(field) = mp.next_field().await.map_err(|e| e.to_string())? {
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let data = field.bytes().await.map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&data).into_owned();
            let value = match file_name {
                Some(f) => json!({"file_name": f, "content": text}),
                None => loose_json(text),
            };
            map.insert(name, value);
        }
        // teloxide sends the file as `attach://<name>` plus a part named after it.
        let attached: Vec<(String, String)> = map
            .iter()
            .filter_map(|(k, v)| {
                Some((k.clone(), v.as_str()?.strip_prefix("attach://")?.to_owned()))
            })
            .collect();
        for (k, part) in attached {
            if let Some(file) = map.get(&part).cloned() {
                map.insert(k, file);
            }
        }
        return Ok(Value::Object(map));
    }
    let body: Bytes = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .map_err(|e| e.to_string())?;
    if body.is_empty() {
        return Ok(Value::Object(map));
    }
    if ctype.starts_with("application/x-www-form-urlencoded") {
        for (k, v) in form_urlencoded::parse(&body) {
            map.insert(k.into_owned(), loose_json(v.into_owned()));
        }
    } else {
        match serde_json::from_slice::<Value>(&body)
            .map_err(|e| format!("can't parse JSON body: {e}"))?
        {
            Value::Object(o) => map.extend(o),
            other => return Err(format!("JSON body must be an object, got {other}")),
        }
    }
    Ok(Value::Object(map))
}

/// Form values are strings; those holding JSON objects/arrays/numbers/bools become JSON.
fn loose_json(v: String) -> Value {
    let t = v.trim();
    if (t.starts_with('{')
        || t.starts_with('[')
        || t == "true"
        || t == "false"
        || t.parse::<i64>().is_ok())
        && let Ok(j) = serde_json::from_str(t)
    {
        return j;
    }
    Value::String(v)
}

async fn get_updates(s: &Shared, params: &Value) -> ApiResult {
    let offset = params.get("offset").and_then(as_i64).unwrap_or(0);
    let timeout = params
        .get("timeout")
        .and_then(as_i64)
        .unwrap_or(0)
        .clamp(0, 50) as u64;
    let limit = params
        .get("limit")
        .and_then(as_i64)
        .unwrap_or(100)
        .clamp(1, 100) as usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let this_poll = {
        let mut inner = s.lock();
        if inner.webhook.is_some() {
            return Err(conflict(
                "can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
            ));
        }
        inner.polls += 1;
        inner.polls
    };
    // Wakes a poll still waiting: it is terminated by this one.
    s.bump();
    let ready = s.poll(deadline, |s| {
        let mut inner = s.lock();
        if inner.polls != this_poll {
            return Some(Err(conflict(
                "terminated by other getUpdates request; make sure that only one bot instance is running",
            )));
        }
        if offset > inner.confirmed {
            inner.confirmed = offset;
            inner
                .updates
                .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
        }
        let ready: Vec<Value> = inner
            .updates
            .iter()
            .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
            .take(limit)
            .cloned()
            .collect();
        (!ready.is_empty()).then_some(Ok(ready))
    });
    ready.await.unwrap_or(Ok(Vec::new())).map(Value::Array)
}

fn conflict(description: &str) -> ApiError {
    ApiError {
        code: 409,
        description: format!("Conflict: {description}"),
        retry_after: None,
    }
}

fn dispatch(
    s: &Shared,
    inner: &mut TelegramState,
    method: &str,
    p: &Value,
    at: Instant,
) -> ApiResult {
    if WRITE_METHODS.contains(&method) {
        if let Some(secs) = inner.rate_limit_next.take() {
            return Err(too_many(secs));
        }
        if let (Some(gap), Some(chat)) = (inner.min_chat_gap, p.get("chat_id").and_then(as_i64))
            && inner
                .last_write
                .get(&chat)
                .is_some_and(|t| at.duration_since(*t) < gap)
        {
            return Err(too_many(1));
        }
    }
    let res = match method {
        "getme" => Ok(s.api.bot.clone()),
        "sendmessage" => send_message(s, inner, p),
        "senddocument" => send_document(s, inner, p),
        "editmessagetext" => edit(s, inner, p, true),
        "editmessagereplymarkup" => edit(s, inner, p, false),
        "answercallbackquery" => answer_callback(inner, p),
        "sendchataction" | "setmycommands" | "deletemycommands" => Ok(json!(true)),
        "setwebhook" => {
            inner.webhook = p.get("url").and_then(Value::as_str).map(str::to_owned);
            Ok(json!(true))
        }
        "deletewebhook" => {
            inner.webhook = None;
            Ok(json!(true))
        }
        "getwebhookinfo" => Ok(
            json!({"url": inner.webhook.clone().unwrap_or_default(), "has_custom_certificate": false, "pending_update_count": 0}),
        ),
        _ => Err(ApiError {
            code: 404,
            description: "Not Found: method not found".into(),
            retry_after: None,
        }),
    };
    if res.is_ok()
        && WRITE_METHODS.contains(&method)
        && let Some(chat) = p.get("chat_id").and_then(as_i64)
    {
        inner.last_write.insert(chat, at);
    }
    res
}

/// A 5xx answer (a storm hits long polls too): Telegram's own JSON error for 500, a
/// proxy's HTML page otherwise.
fn storm_reply(status: u16) -> Response {
    if status == 500 {
        let body = json!({"ok": false, "error_code": 500, "description": "Internal Server Error"});
        (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
    } else {
        html_status(status)
    }
}

fn too_many(secs: u32) -> ApiError {
    ApiError {
        code: 429,
        description: format!("Too Many Requests: retry after {secs}"),
        retry_after: Some(secs),
    }
}

fn chat_of(p: &Value) -> Result<i64, ApiError> {
    p.get("chat_id")
        .and_then(as_i64)
        .ok_or_else(|| bad("chat not found"))
}

fn markup_of(p: &Value) -> Result<Option<Value>, ApiError> {
    let Some(m) = p.get("reply_markup") else {
        return Ok(None);
    };
    let m = match m {
        Value::String(s) => serde_json::from_str(s)
            .map_err(|_| bad("can't parse reply keyboard markup JSON object"))?,
        v => v.clone(),
    };
    let rows = m.get("inline_keyboard").and_then(Value::as_array);
    for b in rows
        .into_iter()
        .flatten()
        .flat_map(|r| r.as_array().into_iter().flatten())
    {
        if let Some(d) = b.get("callback_data").and_then(Value::as_str)
            && (d.is_empty() || d.len() > 64)
        {
            return Err(bad("BUTTON_DATA_INVALID"));
        }
    }
    // An empty keyboard is no keyboard.
    if rows.is_some_and(|r| r.iter().all(|row| row.as_array().is_none_or(Vec::is_empty))) {
        return Ok(None);
    }
    Ok(Some(m))
}

fn text_of(p: &Value, key: &str) -> Result<(String, String, Option<String>), ApiError> {
    let raw = p
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mode = p
        .get("parse_mode")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let text = match mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("html") => parse_html(&raw).map_err(|e| bad(format!("can't parse entities: {e}")))?,
        _ => raw.clone(),
    };
    Ok((raw, text, mode))
}

fn send_message(s: &Shared, inner: &mut TelegramState, p: &Value) -> ApiResult {
    let chat = chat_of(p)?;
    let (raw, text, parse_mode) = text_of(p, "text")?;
    if text.trim().is_empty() {
        return Err(bad("message text is empty"));
    }
    if text.encode_utf16().count() > 4096 {
        return Err(bad("message is too long"));
    }
    let reply_markup = markup_of(p)?;
    let mid = next_message_id(inner, chat);
    let m = Message {
        chat_id: chat,
        message_id: mid,
        raw,
        text,
        parse_mode,
        reply_markup,
        reply_to: reply_to(p),
        document: None,
        caption: None,
        edits: 0,
        sent_by_bot: true,
        silent: p["disable_notification"].as_bool().unwrap_or(false),
    };
    let out = message_json(&m, &s.api.bot, bot_chat(chat));
    inner.messages.insert((chat, mid), m);
    Ok(out)
}

fn reply_to(p: &Value) -> Option<i64> {
    p.get("reply_parameters")
        .and_then(|r| r.get("message_id"))
        .and_then(as_i64)
        .or_else(|| p.get("reply_to_message_id").and_then(as_i64))
}

fn send_document(s: &Shared, inner: &mut TelegramState, p: &Value) -> ApiResult {
    let chat = chat_of(p)?;
    let doc = p
        .get("document")
        .ok_or_else(|| bad("there is no document in the request"))?;
    let (name, content) = match doc {
        Value::Object(o) => (
            o.get("file_name")
                .and_then(Value::as_str)
                .unwrap_or("file")
                .to_owned(),
            o.get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ),
        Value::String(url_or_id) => ("file".to_owned(), url_or_id.clone()),
        _ => return Err(bad("wrong type of the web page content")),
    };
    let (caption_raw, caption, mode) = text_of(p, "caption")?;
    let mid = next_message_id(inner, chat);
    let m = Message {
        chat_id: chat,
        message_id: mid,
        raw: caption_raw,
        text: String::new(),
        parse_mode: mode,
        reply_markup: markup_of(p)?,
        reply_to: reply_to(p),
        document: Some((name, content)),
        caption: (!caption.is_empty()).then_some(caption),
        edits: 0,
        sent_by_bot: true,
        silent: p["disable_notification"].as_bool().unwrap_or(false),
    };
    let out = message_json(&m, &s.api.bot, bot_chat(chat));
    inner.messages.insert((chat, mid), m);
    Ok(out)
}

fn edit(s: &Shared, inner: &mut TelegramState, p: &Value, with_text: bool) -> ApiResult {
    let chat = chat_of(p)?;
    let mid = p
        .get("message_id")
        .and_then(as_i64)
        .ok_or_else(|| bad("message identifier is not specified"))?;
    let markup = markup_of(p)?;
    let new_text = if with_text {
        Some(text_of(p, "text")?)
    } else {
        None
    };
    let Some(m) = inner.messages.get_mut(&(chat, mid)) else {
        return Err(bad("message to edit not found"));
    };
    if !m.sent_by_bot {
        return Err(bad("message can't be edited"));
    }
    if let Some((_, text, _)) = &new_text {
        if text.trim().is_empty() {
            return Err(bad("message text is empty"));
        }
        if text.encode_utf16().count() > 4096 {
            return Err(bad("MESSAGE_TOO_LONG"));
        }
    }
    let same_text = new_text.as_ref().is_none_or(|(_, t, _)| *t == m.text);
    if same_text && markup == m.reply_markup {
        return Err(bad(
            "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
        ));
    }
    if let Some((raw, text, mode)) = new_text {
        m.raw = raw;
        m.text = text;
        m.parse_mode = mode;
    }
    m.reply_markup = markup;
    m.edits += 1;
    Ok(message_json(m, &s.api.bot, bot_chat(chat)))
}

fn answer_callback(inner: &mut TelegramState, p: &Value) -> ApiResult {
    let qid = p.get("callback_query_id").and_then(|v| {
        v.as_str()
            .map(str::to_owned)
            .or_else(|| Some(v.to_string()))
    });
    let qid = qid.ok_or_else(|| {
        bad("query is too old and response timeout expired or query id is invalid")
    })?;
    inner
        .callback_answers
        .entry(qid.clone())
        .or_default()
        .push(p.clone());
    if !inner.open_callbacks.remove(&qid) {
        return Err(bad(
            "query is too old and response timeout expired or query id is invalid",
        ));
    }
    Ok(json!(true))
}

/// Parses Telegram-flavoured HTML into the text a client shows, refusing what Telegram
/// refuses: unknown tags, unbalanced tags, stray `<`/`&`, unknown named entities.
pub fn parse_html(src: &str) -> Result<String, String> {
    const TAGS: &[&str] = &[
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    ];
    let mut out = String::new();
    let mut stack: Vec<String> = Vec::new();
    let mut i = 0;
    let bytes = src.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'<' => {
                let end = src[i..]
                    .find('>')
                    .ok_or_else(|| format!("unclosed start tag at byte offset {i}"))?
                    + i;
                let inner = &src[i + 1..end];
                if let Some(name) = inner.strip_prefix('/') {
                    let name = name.trim().to_ascii_lowercase();
                    match stack.pop() {
                        Some(open) if open == name => {}
                        Some(open) => {
                            return Err(format!(
                                "Can't find end tag corresponding to start tag \"{open}\" (found \"{name}\" at byte offset {i})"
                            ));
                        }
                        None => return Err(format!("Unexpected end tag at byte offset {i}")),
                    }
                } else {
                    let name = inner
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    if !TAGS.contains(&name.as_str()) {
                        return Err(format!(
                            "Unsupported start tag \"{name}\" at byte offset {i}"
                        ));
                    }
                    stack.push(name);
                }
                i = end + 1;
            }
            b'>' => return Err(format!("stray '>' at byte offset {i}")),
            b'&' => {
                let end = src[i..]
                    .find(';')
                    .filter(|e| *e <= 10)
                    .ok_or_else(|| format!("unterminated entity at byte offset {i}"))?
                    + i;
                let name = &src[i + 1..end];
                let c = match name {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "quot" => '"',
                    n if n.starts_with("#x") => u32::from_str_radix(&n[2..], 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or("bad entity")?,
                    n if n.starts_with('#') => n[1..]
                        .parse()
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or("bad entity")?,
                    n => {
                        return Err(format!(
                            "Unsupported HTML entity \"&{n};\" at byte offset {i}"
                        ));
                    }
                };
                out.push(c);
                i = end + 1;
            }
            _ => {
                let next = src[i..].find(['<', '>', '&']).map_or(src.len(), |n| n + i);
                out.push_str(&src[i..next]);
                i = next;
            }
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{open}\""
        ));
    }
    Ok(out)
}
