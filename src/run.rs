//! The daemon: builds the store, channels and gateway link from the config, checks every
//! channel's health, starts the engine and waits for SIGINT/SIGTERM to shut down cleanly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bridge::channel::Channel;
use bridge::config::{LogConfig, LogFormat};
use bridge::engine::{AlertPolicy, Input, ReminderPolicy, Runner, TrustPolicy};
use bridge::gateway::{Client, GatewayOptions};
use bridge::retry::{Backoff, CallPolicy, Verdict};
use bridge::store::SqliteStore;
use bridge::telemetry::Metrics;
use tokio::sync::{broadcast, mpsc};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::http::{self, ChannelHealth, Health};

/// How long shutdown waits for the engine to finish what is in flight (prompts to store,
/// resolves to hear back from, edits).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// How long shutdown then waits for the gateway link and the channels to close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A channel's health check at start: transient failures are retried 5 times, 1–2 s
/// doubling to 16–32 s.
const HEALTH_RETRY: CallPolicy = CallPolicy {
    transient_attempts: 5,
    backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(32)),
    max_retry_after: Duration::ZERO,
};

/// Libraries that log raw wire bytes at trace level: tungstenite prints every WebSocket
/// frame, among them the gateway `connect` (gateway token, device signature) and Discord's
/// IDENTIFY (bot token). Capped at debug whatever the filter asks: secrets are never logged.
const WIRE_LOGGERS: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// The log filter from `RUST_LOG` (if set) or `log.level`, with [`WIRE_LOGGERS`] capped.
pub fn log_filter(spec: Option<&str>, cfg: &LogConfig) -> anyhow::Result<EnvFilter> {
    let mut filter = match spec {
        Some(f) if !f.is_empty() => EnvFilter::try_new(f).context("RUST_LOG")?,
        _ => EnvFilter::try_new(cfg.level.as_deref().unwrap_or("info")).context("log.level")?,
    };
    for target in WIRE_LOGGERS {
        filter = filter.add_directive(format!("{target}=debug").parse()?);
    }
    Ok(filter)
}

pub fn init_logging(cfg: &LogConfig) -> anyhow::Result<()> {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref(), cfg)?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Creates the state directory, readable by the bridge's user only.
pub fn state_dir(cfg: &Config) -> anyhow::Result<std::path::PathBuf> {
    let dir = cfg.state.dir.clone();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("state.dir: cannot create {}", dir.display()))?;
    // Every answer is recorded before it is acted on: with a state directory it cannot write,
    // the bridge could only refuse answers, so it does not start.
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "state.dir: {} is not writable (the bridge records every answer before acting on it); \
                 make it writable by the bridge's user or point state.dir elsewhere",
                dir.display()
            )
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("state.dir: cannot restrict {} to 0700", dir.display()))?;
    }
    Ok(dir)
}

pub fn gateway_options(
    cfg: &Config,
    state_dir: &std::path::Path,
) -> anyhow::Result<GatewayOptions> {
    let token = cfg.gateway.token.resolve("gateway.token")?;
    let mut opts = GatewayOptions::new(cfg.gateway.url.clone(), Some(token), state_dir);
    opts.tls_pin = cfg.gateway.fingerprint()?;
    Ok(opts)
}

/// Every channel in the config, built (secrets read) but not yet checked.
#[cfg_attr(not(feature = "telegram"), allow(unused_variables))]
pub fn build_channels(cfg: &Config) -> anyhow::Result<Vec<Arc<dyn Channel>>> {
    #[allow(unused_mut)]
    let mut out: Vec<Arc<dyn Channel>> = Vec::new();
    #[cfg(feature = "telegram")]
    if let Some(t) = &cfg.telegram {
        let token = t.bot_token.resolve("telegram.bot_token")?;
        out.push(Arc::new(channels::telegram::Telegram::new(t, &token)?));
    }
    #[cfg(feature = "discord")]
    if let Some(d) = &cfg.discord {
        let token = d.bot_token.resolve("discord.bot_token")?;
        out.push(Arc::new(channels::discord::Discord::new(d, &token)?));
    }
    #[cfg(feature = "matrix")]
    if let Some(m) = &cfg.matrix {
        let secret = match (&m.password, &m.access_token) {
            (Some(p), _) => p.resolve("matrix.password")?,
            (None, Some(t)) => t.resolve("matrix.access_token")?,
            (None, None) => anyhow::bail!("matrix.password: set password or access_token"),
        };
        out.push(Arc::new(channels::matrix::Matrix::new(
            m,
            &secret,
            &cfg.state.dir,
        )?));
    }
    #[cfg(feature = "slack")]
    if let Some(s) = &cfg.slack {
        let bot = s.bot_token.resolve("slack.bot_token")?;
        let app = s.app_token.resolve("slack.app_token")?;
        out.push(Arc::new(channels::slack::Slack::new(s, &bot, &app)?));
    }
    Ok(out)
}

/// Checks each channel's credentials at start. A permanent failure (bad token) stops the
/// bridge; a transient one is retried for a while, then reported on /healthz.
/// `[alerts]`'s reminders, with every escalation chat on a configured channel whose
/// `allow_from` lets it decide.
pub fn reminder_policy(
    cfg: &Config,
    channels: &[Arc<dyn Channel>],
) -> anyhow::Result<ReminderPolicy> {
    let policy = cfg.alerts.reminders()?;
    for t in &policy.escalate_to {
        let Some(c) = channels.iter().find(|c| c.name() == t.channel) else {
            anyhow::bail!(
                "alerts.escalate_to: `{t}` names no configured channel: add a [{}] section or fix the name",
                t.channel
            );
        };
        if !c.allows(&t.chat) {
            anyhow::bail!(
                "alerts.escalate_to: `{t}` may not decide: add {} to {}.allow_from, or escalation would \
                 prompt someone who cannot answer",
                t.chat,
                t.channel
            );
        }
    }
    Ok(policy)
}

async fn check_channels(
    channels: &[Arc<dyn Channel>],
    health: &ChannelHealth,
) -> anyhow::Result<()> {
    for c in channels {
        let result = HEALTH_RETRY
            .run(
                || c.health(),
                |e| {
                    if e.is_transient() {
                        Verdict::Transient
                    } else {
                        Verdict::Final
                    }
                },
                |e, state, _| {
                    tracing::warn!(channel = c.name(), error = %e, attempt = state.transient, "channel health check failed; retrying");
                    std::future::ready(None)
                },
            )
            .await;
        match &result {
            Ok(desc) => tracing::info!(channel = c.name(), identity = %desc, "channel healthy"),
            Err(e) if !e.is_transient() => {
                anyhow::bail!(
                    "{} health check failed: {e} (check its token and api_url)",
                    c.name()
                )
            }
            Err(e) => {
                tracing::error!(channel = c.name(), error = %e, "channel unreachable; prompts will be retried")
            }
        }
        health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.name().to_owned(), result.map_err(|e| e.to_string()));
    }
    Ok(())
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let dir = state_dir(&cfg)?;
    let store = Arc::new(
        SqliteStore::open(&dir.join("bridge.sqlite"))
            .context("state.dir: cannot open the database")?,
    );
    let opts = gateway_options(&cfg, &dir)?;
    let channels = build_channels(&cfg)?;
    let channel_health: ChannelHealth = Arc::new(Mutex::new(BTreeMap::new()));
    check_channels(&channels, &channel_health).await?;

    let metrics = Arc::new(Metrics::default());
    // Shutdown comes in two steps: `intake` stops the channels' receiving, `link` (after the
    // engine drained, since an in-flight resolve needs it) the gateway link and /healthz.
    let (intake, _) = broadcast::channel::<()>(1);
    let (link_stop, _) = broadcast::channel::<()>(1);
    let (gw_tx, mut gw_rx) = mpsc::channel(1024);
    let (client, gw_task) = Client::spawn(opts, gw_tx, link_stop.subscribe())
        .context("state.dir: cannot load or create the device key")?;
    tracing::info!(device_id = %client.device_id(), url = %cfg.gateway.url, "gateway link starting");
    let alerts = AlertPolicy {
        after: cfg.alerts.after,
        device_id: client.device_id(),
        reminders: reminder_policy(&cfg, &channels)?,
        probe_every: cfg.alerts.probe_every,
    };
    let (engine, input, link) = Runner::new(
        channels.clone(),
        client,
        store.clone(),
        metrics.clone(),
        alerts,
        TrustPolicy {
            gateway: cfg.gateway.url.clone(),
            windows: cfg.trust.windows()?,
        },
    )?;

    let desk = engine.probe_desk();
    let paths = engine.problems();
    let forward = input.clone();
    tokio::spawn(async move {
        while let Some(ev) = gw_rx.recv().await {
            if forward.send(Input::Gateway(ev)).await.is_err() {
                break;
            }
        }
    });
    let (answer_tx, mut answer_rx) = mpsc::channel(1024);
    let mut channel_tasks = Vec::new();
    for c in &channels {
        let (c, tx, stop) = (c.clone(), answer_tx.clone(), intake.subscribe());
        channel_tasks.push(tokio::spawn(async move { c.run(tx, stop).await }));
    }
    drop(answer_tx);
    let forward = input.clone();
    tokio::spawn(async move {
        while let Some(a) = answer_rx.recv().await {
            if forward.send(Input::Answer(a)).await.is_err() {
                break;
            }
        }
    });
    if let Some(h) = &cfg.http {
        let health = Health {
            link,
            paths,
            store,
            channels: channel_health,
            metrics,
            desk,
            input: input.clone(),
        };
        let (addr, stop) = (h.listen, link_stop.subscribe());
        // Bind now so a taken port fails the start instead of a silent missing listener.
        let serve = http::serve(addr, health, stop);
        tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "http listener failed");
            }
        });
    }
    let engine_task = tokio::spawn(engine.run());

    wait_for_signal().await?;
    tracing::info!("shutting down: taking no new answers, finishing what is in flight");
    let _ = intake.send(());
    let _ = input.send(Input::Shutdown).await;
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, engine_task).await;
    let _ = link_stop.send(());
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = gw_task.await;
        for t in channel_tasks {
            let _ = t.await;
        }
    })
    .await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn trace_logging_never_prints_websocket_frames() {
        for spec in ["trace", "tungstenite=trace,trace"] {
            let buf = Buf::default();
            let writer = buf.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(log_filter(Some(spec), &LogConfig::default()).unwrap())
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::trace!(target: "tungstenite::protocol", "Sending frame: SECRET-token");
                tracing::trace!(target: "tokio_tungstenite", "SECRET-token");
                tracing::trace!(target: "bridge::engine", "a trace line of our own");
                tracing::debug!(target: "tungstenite::protocol", "Received close frame");
            });
            let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert!(!out.contains("SECRET"), "{spec}: {out}");
            assert!(out.contains("a trace line of our own"), "{spec}: {out}");
            assert!(out.contains("Received close frame"), "{spec}: {out}");
        }
    }
}
