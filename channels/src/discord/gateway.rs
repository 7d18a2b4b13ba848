//! The gateway connection: a lean WebSocket client of Discord's gateway (v10, JSON).
//!
//! Ours rather than serenity's shard runner: serenity falls back to
//! `wss://gateway.discord.gg` when the gateway URL cannot be fetched (with a custom
//! `api_url` that would send our token to the real Discord), deserializes every event
//! into its strict models (an interaction missing a field it expects is dropped), and
//! waits 5 s between IDENTIFYs. Here: `GET /gateway/bot` gives the URL; HELLO (op 10) →
//! IDENTIFY (op 2) or RESUME (op 6) → READY/RESUMED; heartbeats (op 1) at the announced
//! interval, a missing ACK (op 11) counts as a dead link; RECONNECT (op 7) and INVALID
//! SESSION (op 9) are obeyed; every drop reconnects with exponential backoff (bridge's
//! [`Backoff`]) and resumes the session when it can (at `resume_gateway_url`). A rejected
//! token (close 4004, or 401 on `GET /gateway/bot`) sets the channel's reach down; READY or
//! RESUMED sets it up.

use std::time::Duration;

use bridge::channel::Answer;
use bridge::retry::Backoff;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Discord, receive};

/// Why the channel is down when Discord rejects the token, and the fix.
const TOKEN_REJECTED: (&str, &str) = (
    "Discord rejects the bot token",
    "reset the token in the Discord Developer Portal (your application → Bot → Reset Token) and update discord.bot_token",
);

/// Gateway close code: authentication failed.
const AUTHENTICATION_FAILED: u16 = 4004;

/// `DIRECT_MESSAGES` (1 << 12). Discord delivers the content of DMs to the bot without
/// the privileged `MESSAGE_CONTENT` intent, so it is not requested: a bot whose portal
/// setting is off would otherwise be refused (close 4014) and see no button press either.
pub const INTENTS: u64 = 1 << 12;

/// A resumable session.
#[derive(Debug, Clone)]
struct Session {
    id: String,
    resume_url: String,
    seq: Option<u64>,
}

/// Why one connection ended.
enum End {
    Shutdown,
    /// Reconnect; keep the session when `resume` is set.
    Reconnect {
        resume: bool,
        why: String,
    },
    /// Configuration problem Discord will not forgive (bad token, intents): log loudly,
    /// retry slowly.
    Fatal {
        why: String,
        token_rejected: bool,
    },
}

pub(super) async fn run(
    d: &Discord,
    answers: mpsc::Sender<Answer>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut session: Option<Session> = None;
    let mut backoff = Backoff::new(d.options.min_backoff, d.options.max_backoff).attempts();
    loop {
        let url = match &session {
            Some(s) => s.resume_url.clone(),
            None => match d
                .rest
                .call(Method::GET, "/gateway/bot", "GET /gateway/bot", None, None)
                .await
            {
                Ok(v) => match v.get("url").and_then(Value::as_str) {
                    Some(u) => u.to_owned(),
                    None => {
                        tracing::warn!("GET /gateway/bot answered without a url");
                        String::new()
                    }
                },
                Err(e) => {
                    if e.status == Some(401) {
                        d.reach.down(TOKEN_REJECTED.0, TOKEN_REJECTED.1);
                    }
                    tracing::warn!(error = %e, "cannot fetch the gateway URL");
                    String::new()
                }
            },
        };
        let started = tokio::time::Instant::now();
        let end = if url.is_empty() {
            End::Reconnect {
                resume: false,
                why: "no gateway URL".into(),
            }
        } else {
            connection(d, &url, &mut session, &answers, &mut shutdown).await
        };
        let retry = backoff.next_pause();
        let pause = match end {
            End::Shutdown => return,
            End::Reconnect { resume, why } => {
                if !resume {
                    session = None;
                }
                tracing::info!(resume, reason = %why, "discord gateway connection ended; reconnecting");
                retry
            }
            End::Fatal {
                why,
                token_rejected,
            } => {
                session = None;
                if token_rejected {
                    d.reach.down(TOKEN_REJECTED.0, TOKEN_REJECTED.1);
                }
                tracing::error!(reason = %why, "discord gateway refused the bot");
                d.options.max_backoff
            }
        };
        d.ready.store(false, std::sync::atomic::Ordering::SeqCst);
        // A connection that lived a while resets the backoff.
        if started.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

fn with_query(url: &str) -> String {
    let base = url.trim_end_matches('/');
    format!("{base}/?v=10&encoding=json")
}

async fn connection(
    d: &Discord,
    url: &str,
    session: &mut Option<Session>,
    answers: &mpsc::Sender<Answer>,
    shutdown: &mut broadcast::Receiver<()>,
) -> End {
    let connect = tokio_tungstenite::connect_async_with_config(with_query(url), None, true);
    let mut ws = match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            return End::Reconnect {
                resume: session.is_some(),
                why: format!("connect: {e}"),
            };
        }
        Err(_) => {
            return End::Reconnect {
                resume: session.is_some(),
                why: "connect timed out".into(),
            };
        }
    };
    // HELLO first.
    let hello = match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => {
            serde_json::from_str::<Value>(t.as_str()).unwrap_or(Value::Null)
        }
        other => {
            return End::Reconnect {
                resume: session.is_some(),
                why: format!("no HELLO: {other:?}"),
            };
        }
    };
    let Some(interval) = hello
        .pointer("/d/heartbeat_interval")
        .and_then(Value::as_u64)
        .filter(|_| hello["op"] == 10)
    else {
        return End::Reconnect {
            resume: false,
            why: format!("expected HELLO, got {}", hello["op"]),
        };
    };
    let interval = Duration::from_millis(interval.max(100));
    let hello_frame = match session {
        Some(s) => json!({"op": 6, "d": {"token": d.token, "session_id": s.id, "seq": s.seq}}),
        None => json!({"op": 2, "d": {
            "token": d.token,
            "intents": INTENTS,
            "properties": {"os": std::env::consts::OS, "browser": "approval-bridge", "device": "approval-bridge"},
        }}),
    };
    if let Err(e) = ws.send(Message::text(hello_frame.to_string())).await {
        return End::Reconnect {
            resume: session.is_some(),
            why: format!("send identify: {e}"),
        };
    }
    // First beat after a random fraction of the interval, as Discord asks.
    let jitter = Duration::from_millis(
        u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * interval.as_millis() as u64 / 256,
    );
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + jitter, interval);
    let mut acked = true;
    let mut seq: Option<u64> = session.as_ref().and_then(|s| s.seq);
    loop {
        let frame = tokio::select! {
            _ = shutdown.recv() => {
                let _ = ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "shutdown".into() })).await;
                return End::Shutdown;
            }
            _ = beat.tick() => {
                if !acked {
                    let _ = ws.close(Some(CloseFrame { code: CloseCode::Library(4000), reason: "zombie".into() })).await;
                    return End::Reconnect { resume: true, why: "no heartbeat ACK".into() };
                }
                acked = false;
                if let Err(e) = ws.send(Message::text(json!({"op": 1, "d": seq}).to_string())).await {
                    return End::Reconnect { resume: true, why: format!("send heartbeat: {e}") };
                }
                continue;
            }
            f = ws.next() => f,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => {
                return closed(c.map(|c| (u16::from(c.code), c.reason.to_string())));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                return End::Reconnect {
                    resume: true,
                    why: format!("read: {e}"),
                };
            }
            None => {
                return End::Reconnect {
                    resume: true,
                    why: "stream ended".into(),
                };
            }
        };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        if let Some(s) = v.get("s").and_then(Value::as_u64) {
            seq = Some(s);
            if let Some(sess) = session.as_mut() {
                sess.seq = Some(s);
            }
        }
        match v.get("op").and_then(Value::as_u64) {
            Some(0) => {
                let data = &v["d"];
                match v.get("t").and_then(Value::as_str).unwrap_or_default() {
                    "READY" => {
                        let id = data
                            .pointer("/session_id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let resume_url = data
                            .pointer("/resume_gateway_url")
                            .and_then(Value::as_str)
                            .unwrap_or(url)
                            .to_owned();
                        *session = Some(Session {
                            id,
                            resume_url,
                            seq,
                        });
                        d.on_ready(data);
                    }
                    "RESUMED" => {
                        d.ready.store(true, std::sync::atomic::Ordering::SeqCst);
                        d.reach.up();
                        tracing::info!("discord gateway session resumed");
                    }
                    "INTERACTION_CREATE" => d.on_interaction(data, answers),
                    "MESSAGE_CREATE" => {
                        if let Some(a) = receive::message(data)
                            && answers.send(a).await.is_err()
                        {
                            return End::Shutdown;
                        }
                    }
                    _ => {}
                }
            }
            Some(1) => {
                if let Err(e) = ws
                    .send(Message::text(json!({"op": 1, "d": seq}).to_string()))
                    .await
                {
                    return End::Reconnect {
                        resume: true,
                        why: format!("send heartbeat: {e}"),
                    };
                }
            }
            Some(7) => {
                return End::Reconnect {
                    resume: true,
                    why: "RECONNECT requested".into(),
                };
            }
            Some(9) => {
                let resumable = v.get("d").and_then(Value::as_bool) == Some(true);
                // Discord asks for a 1–5 s pause before identifying again.
                tokio::time::sleep(Duration::from_millis(
                    1000 + u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 8,
                ))
                .await;
                return End::Reconnect {
                    resume: resumable,
                    why: "INVALID_SESSION".into(),
                };
            }
            Some(11) => acked = true,
            _ => {}
        }
    }
}

fn closed(frame: Option<(u16, String)>) -> End {
    let Some((code, reason)) = frame else {
        return End::Reconnect {
            resume: true,
            why: "closed".into(),
        };
    };
    let why = format!("closed {code} {reason}");
    match code {
        AUTHENTICATION_FAILED => End::Fatal {
            why: format!("{why}: the bot token was rejected; check discord.bot_token"),
            token_rejected: true,
        },
        4013 | 4014 => End::Fatal {
            why: format!("{why}: intents refused (the bridge asks only for DIRECT_MESSAGES)"),
            token_rejected: false,
        },
        4010..=4012 => End::Fatal {
            why,
            token_rejected: false,
        },
        // Session no longer valid: identify afresh.
        4007 | 4009 | 1000 | 1001 => End::Reconnect { resume: false, why },
        _ => End::Reconnect { resume: true, why },
    }
}
