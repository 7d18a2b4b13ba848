//! The Socket Mode connection: `apps.connections.open` with the app token gives a
//! single-use WebSocket URL; Slack greets with `hello`, then sends envelopes
//! (`{envelope_id, type, payload}`) that must be acknowledged with `{envelope_id}` within
//! 3 seconds or Slack retries them. Each envelope is acked as soon as it is read, before
//! it is decoded or handed to the engine, so a slow engine never costs a retry. Slack
//! asks for reconnects with a `disconnect` message (e.g. `refresh_requested`); closed or
//! silent sockets are reopened too, with exponential backoff (bridge's [`Backoff`]) after
//! failures. Envelope
//! ids seen recently are remembered, so a retried envelope is not answered twice.
//!
//! Each connect first checks the bot token (`auth.test`): Socket Mode works with the app
//! token alone, so without it a revoked bot token would go unseen until a prompt fails. A
//! token Slack refuses sets the channel's reach down with the fix for that token; `hello`
//! on the new socket sets it up.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use bridge::channel::Answer;
use bridge::retry::Backoff;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::Message;

use super::Slack;
use super::api::{ApiError, Body, Token};

/// Slack's answers to a token it no longer takes.
const REFUSED_TOKEN: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
];

/// Why the channel is down when Slack refuses the bot token, and the fix.
const BOT_TOKEN_REFUSED: &str = "reinstall the Slack app to the workspace (api.slack.com/apps → your app → Install App) and put its Bot User OAuth Token (xoxb-) in slack.bot_token";
const APP_TOKEN_REFUSED: &str = "create an app-level token with connections:write (api.slack.com/apps → your app → Basic Information → App-Level Tokens) and put it (xapp-) in slack.app_token";

/// The refused token's Slack error code, if `e` is one.
fn refused(e: &ApiError) -> Option<&str> {
    match e {
        ApiError::Slack(code) if REFUSED_TOKEN.contains(&code.as_str()) => Some(code),
        _ => None,
    }
}

/// How many envelope ids are remembered for deduplication.
const SEEN_CAPACITY: usize = 1024;

/// Why a session ended.
enum End {
    /// Slack asked for a reconnect, or closed the socket: reconnect at once.
    Reconnect(String),
    /// The receiver of answers is gone: the bridge is stopping.
    Stopped,
}

struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Seen {
    /// Records `id`; false if it was seen before.
    fn insert(&mut self, id: &str) -> bool {
        if !self.set.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > SEEN_CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

pub(super) async fn run(
    slack: &Slack,
    answers: mpsc::Sender<Answer>,
    mut shutdown: broadcast::Receiver<()>,
) {
    tokio::select! {
        _ = shutdown.recv() => return,
        _ = slack.learn_target_dms() => {}
    }
    let mut seen = Seen {
        order: VecDeque::new(),
        set: HashSet::new(),
    };
    let mut backoff = Backoff::new(slack.options.backoff, slack.options.max_backoff).attempts();
    loop {
        let result = tokio::select! {
            _ = shutdown.recv() => return,
            r = session(slack, &answers, &mut seen) => r,
        };
        let pause = match result {
            Ok(End::Stopped) => return,
            Ok(End::Reconnect(why)) => {
                tracing::info!(reason = %why, "slack socket mode: reconnecting");
                backoff.reset();
                Duration::ZERO
            }
            Err(e) => {
                let pause = backoff.next_pause();
                tracing::warn!(error = %e, backoff_ms = pause.as_millis() as u64, "slack socket mode connection failed; backing off");
                pause
            }
        };
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn session(
    slack: &Slack,
    answers: &mpsc::Sender<Answer>,
    seen: &mut Seen,
) -> Result<End, String> {
    if let Err(e) = slack
        .api
        .call("auth.test", Token::Bot, None, Body::Form(Vec::new()))
        .await
    {
        if let Some(code) = refused(&e) {
            slack.reach.down(
                &format!("Slack refuses the bot token ({code})"),
                BOT_TOKEN_REFUSED,
            );
        }
        return Err(format!("auth.test: {e} (check slack.bot_token)"));
    }
    let v = slack
        .api
        .call(
            "apps.connections.open",
            Token::App,
            None,
            Body::Form(Vec::new()),
        )
        .await
        .map_err(|e| {
            if let Some(code) = refused(&e) {
                slack.reach.down(
                    &format!("Slack refuses the app token ({code})"),
                    APP_TOKEN_REFUSED,
                );
            }
            format!("apps.connections.open: {e} (check slack.app_token and that Socket Mode is on)")
        })?;
    let url = v["url"]
        .as_str()
        .ok_or("apps.connections.open answered without a url")?;
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("socket mode connect: {e}"))?;
    if let Ok(s) = match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => Ok(s),
        _ => Err(()),
    } {
        let _ = s.set_nodelay(true);
    }
    let (mut sink, mut stream) = ws.split();
    let ping = slack.options.ping_interval;
    let mut ticker = tokio::time::interval(ping);
    ticker.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let mut greeted = false;
    loop {
        let frame = tokio::select! {
            f = stream.next() => f,
            _ = ticker.tick() => {
                if last_heard.elapsed() > ping * 3 {
                    return Ok(End::Reconnect("socket silent".into()));
                }
                sink.send(Message::Ping(Vec::new().into())).await.map_err(|e| format!("socket mode ping: {e}"))?;
                continue;
            }
        };
        let frame = match frame {
            None if !greeted => return Err("socket closed before hello".into()),
            None => return Ok(End::Reconnect("socket closed".into())),
            Some(Err(e)) => return Err(format!("socket mode read: {e}")),
            Some(Ok(f)) => f,
        };
        last_heard = tokio::time::Instant::now();
        let text = match frame {
            Message::Text(t) => t,
            Message::Close(c) if !greeted => {
                return Err(format!("closed by server before hello: {c:?}"));
            }
            Message::Close(c) => return Ok(End::Reconnect(format!("closed by server: {c:?}"))),
            _ => continue,
        };
        let Ok(env) = serde_json::from_str::<Value>(text.as_str()) else {
            tracing::warn!("unreadable socket mode frame");
            continue;
        };
        match env["type"].as_str() {
            Some("hello") => {
                greeted = true;
                slack.reach.up();
                tracing::info!(
                    connections = env["num_connections"].as_u64(),
                    "slack socket mode connected"
                );
                continue;
            }
            Some("disconnect") => {
                return Ok(End::Reconnect(format!(
                    "disconnect: {}",
                    env["reason"].as_str().unwrap_or("?")
                )));
            }
            _ => {}
        }
        let Some(envelope_id) = env["envelope_id"].as_str() else {
            continue;
        };
        // Ack first: Slack's 3-second deadline must not depend on the engine.
        let ack = json!({"envelope_id": envelope_id}).to_string();
        sink.send(Message::Text(ack.into()))
            .await
            .map_err(|e| format!("socket mode ack: {e}"))?;
        if !seen.insert(envelope_id) {
            tracing::debug!(envelope_id, "retried envelope ignored");
            continue;
        }
        for a in slack.decode(&env).await {
            if answers.send(a).await.is_err() {
                return Ok(End::Stopped);
            }
        }
    }
}
