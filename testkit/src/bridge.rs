//! The approval-bridge binary as a child process, configured like a user would: a TOML
//! file, secrets in the environment, a state directory that survives restarts. Tests and
//! the benchmark use it to kill -9, restart and SIGTERM the real daemon.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// What the bridge is pointed at.
#[derive(Debug, Clone)]
pub struct BridgeSetup {
    pub gateway_url: String,
    pub gateway_token: String,
    /// The fake Bot API; empty for a bridge without a `[telegram]` section.
    pub telegram_api_url: String,
    pub bot_token: String,
    pub allow_from: Vec<i64>,
    pub targets: Option<Vec<i64>>,
    /// Extra TOML appended to the generated config (other channels' sections).
    pub extra_toml: String,
    /// Extra environment for the bridge process (other channels' secrets).
    pub env: Vec<(String, String)>,
}

impl BridgeSetup {
    /// A bridge serving `gw` with one Telegram owner who decides and receives prompts.
    pub fn telegram_owner(
        gw: &crate::openclaw::Gateway,
        tg: &crate::fake_telegram::FakeTelegram,
        owner: i64,
    ) -> BridgeSetup {
        BridgeSetup {
            gateway_url: gw.url(),
            gateway_token: gw.token().to_owned(),
            telegram_api_url: tg.url(),
            bot_token: tg.token().to_owned(),
            allow_from: vec![owner],
            targets: None,
            extra_toml: String::new(),
            env: Vec::new(),
        }
    }
}

/// A running bridge. Dropping it kills the process.
pub struct BridgeProcess {
    exe: PathBuf,
    setup: BridgeSetup,
    dir: tempfile::TempDir,
    http_port: u16,
    child: Option<Child>,
    runs: u32,
}

impl BridgeProcess {
    /// Writes the config into a fresh state directory and starts the bridge.
    pub async fn start(exe: &Path, setup: BridgeSetup) -> Result<BridgeProcess> {
        let mut b = Self::configure(exe, setup)?;
        b.spawn()?;
        Ok(b)
    }

    /// Writes the config into a fresh state directory without starting anything.
    pub fn configure(exe: &Path, setup: BridgeSetup) -> Result<BridgeProcess> {
        let dir = tempfile::Builder::new()
            .prefix("approval-bridge-")
            .tempdir()?;
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let b = BridgeProcess {
            exe: exe.to_owned(),
            setup,
            dir,
            http_port,
            child: None,
            runs: 0,
        };
        b.write_config()?;
        Ok(b)
    }

    /// Runs `approval-bridge check` on this config: exit success, and stdout + stderr.
    pub async fn check(&self) -> Result<(bool, String)> {
        let out = self.command("check").output().await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    fn command(&self, sub: &str) -> Command {
        let mut c = Command::new(&self.exe);
        c.args([sub, "--config"])
            .arg(self.config_path())
            .env("AB_TEST_GATEWAY_TOKEN", &self.setup.gateway_token)
            .env("AB_TEST_BOT_TOKEN", &self.setup.bot_token)
            .envs(self.setup.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Starts the bridge and waits until `/healthz` says ok.
    pub async fn start_healthy(exe: &Path, setup: BridgeSetup) -> Result<BridgeProcess> {
        let mut b = Self::start(exe, setup).await?;
        b.wait_healthy(Duration::from_secs(60)).await?;
        Ok(b)
    }

    fn write_config(&self) -> Result<()> {
        let s = &self.setup;
        let list = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        let targets = s
            .targets
            .as_ref()
            .map(|t| format!("targets = [{}]\n", list(t)))
            .unwrap_or_default();
        let telegram = if s.telegram_api_url.is_empty() {
            String::new()
        } else {
            format!(
                "[telegram]\nbot_token = \"env:AB_TEST_BOT_TOKEN\"\napi_url = \"{}\"\nallow_from = [{}]\n{}\n",
                s.telegram_api_url,
                list(&s.allow_from),
                targets
            )
        };
        let toml = format!(
            "[gateway]\nurl = \"{}\"\ntoken = \"env:AB_TEST_GATEWAY_TOKEN\"\n\n\
             [state]\ndir = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n[log]\nlevel = \"info,bridge=debug,channels=debug\"\n\n\
             {}{}\n",
            s.gateway_url,
            self.state_dir().display(),
            self.http_port,
            telegram,
            s.extra_toml,
        );
        std::fs::write(self.config_path(), toml)?;
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        self.runs += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("bridge-{}.log", self.runs)))?;
        let child = self
            .command("run")
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The running bridge's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("bridge.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Everything the bridge logged, all runs.
    pub fn log(&self) -> String {
        (1..=self.runs)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("bridge-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Waits until the bridge's log holds `needle`.
    pub async fn wait_log(&self, limit: Duration, needle: &str) -> Result<()> {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            if Instant::now() > deadline {
                bail!(
                    "no {needle:?} in the bridge's log within {limit:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// `GET /healthz`: status code and body.
    pub async fn healthz(&self) -> Result<(u16, serde_json::Value)> {
        let r = reqwest::get(format!("{}/healthz", self.http_url())).await?;
        let code = r.status().as_u16();
        Ok((code, r.json().await?))
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.http_url()))
            .await?
            .text()
            .await?)
    }

    /// Waits until `/healthz` says ok (connected, replayed, channels healthy).
    pub async fn wait_healthy(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok((200, _)) = self.healthz().await {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "bridge exited with {status} before it was healthy:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "bridge not healthy within {limit:?}; last /healthz: {:?}\n{}",
                    self.healthz().await.ok(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully in time.
    pub async fn terminate(&mut self, limit: Duration) -> Result<bool> {
        let Some(mut c) = self.child.take() else {
            return Ok(false);
        };
        let pid = c.id().context("bridge already reaped")?;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        match tokio::time::timeout(limit, c.wait()).await {
            Ok(status) => Ok(status?.success()),
            Err(_) => {
                c.kill().await?;
                Ok(false)
            }
        }
    }

    /// Starts the bridge again on the same config and state directory.
    pub async fn restart(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                bail!("bridge still running");
            }
            self.child = None;
        }
        self.spawn()
    }
}
