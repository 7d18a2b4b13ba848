//! The two subjects under test, each a real gateway plus the same fake Bot API: the
//! bridge (a child process) or the gateway's own Telegram channel.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bridge::approval::ApprovalId;
use serde_json::json;
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_telegram::{FakeTelegram, Message};
use testkit::openclaw::{Gateway, GatewayConfig, Operator};
use testkit::procfs;

pub const OWNER: i64 = 111_111_111;
const BOT_TOKEN: &str = "424242:BENCH-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A: approval-bridge.
    Bridge,
    /// B: OpenClaw's built-in Telegram exec approvals.
    Builtin,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Bridge => "A: approval-bridge",
            Kind::Builtin => "B: OpenClaw built-in Telegram",
        }
    }
}

pub struct Subject {
    pub kind: Kind,
    pub gw: Gateway,
    pub tg: FakeTelegram,
    pub op: Operator,
    pub bridge: Option<BridgeProcess>,
    pub startup_ms: f64,
}

impl Subject {
    pub async fn start(kind: Kind, bridge_exe: &Path) -> Result<Subject> {
        let tg = FakeTelegram::start(BOT_TOKEN).await;
        // Telegram's documented per-chat rate, enforced with 429s as the real service does.
        tg.enforce_chat_gap(Some(Duration::from_secs(1)));
        let mut config = GatewayConfig::default();
        if kind == Kind::Builtin {
            config.extra_config = Some(json!({"channels": {"telegram": {
                "enabled": true, "botToken": BOT_TOKEN, "apiRoot": tg.url(),
                "dmPolicy": "allowlist", "allowFrom": [OWNER.to_string()],
                "execApprovals": {"enabled": true, "approvers": [OWNER.to_string()], "target": "dm"},
            }}}));
        }
        let t0 = Instant::now();
        let gw = Gateway::start(config)
            .await
            .context("start the OpenClaw gateway")?;
        let (bridge, startup_ms) = match kind {
            Kind::Bridge => {
                let t = Instant::now();
                let setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
                let b = BridgeProcess::start_healthy(bridge_exe, setup).await?;
                (Some(b), t.elapsed().as_secs_f64() * 1000.0)
            }
            Kind::Builtin => {
                // Ready once its Telegram channel polls for updates.
                let deadline = Instant::now() + Duration::from_secs(120);
                while tg.calls_to("getUpdates").is_empty() {
                    if Instant::now() > deadline {
                        bail!("the built-in Telegram channel never polled the fake Bot API");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (None, t0.elapsed().as_secs_f64() * 1000.0)
            }
        };
        let op = Operator::connect(&gw, "bench-requester").await?;
        Ok(Subject {
            kind,
            gw,
            tg,
            op,
            bridge,
            startup_ms,
        })
    }

    /// Resident memory of the subject: the bridge process, or the whole gateway process
    /// group that hosts the built-in channel.
    pub fn rss_mb(&self) -> f64 {
        let usage = match (&self.bridge, self.gw.pid()) {
            (Some(b), _) => b.pid().and_then(procfs::process).unwrap_or_default(),
            (None, Some(pgid)) => procfs::group(pgid),
            (None, None) => Default::default(),
        };
        usage.rss_bytes as f64 / (1024.0 * 1024.0)
    }

    /// The owner's actionable prompt (a message with buttons) that mentions `marker`.
    pub fn actionable(v: &testkit::fake_telegram::View<'_>, marker: &str) -> Option<Message> {
        v.bot_messages(OWNER)
            .into_iter()
            .find(|m| m.raw.contains(marker) && !m.buttons().is_empty())
            .cloned()
    }

    /// The callback data of approval `id`'s Allow once button: in a digest, the button
    /// naming `id`; in a prompt for one approval, its only Allow once button.
    pub fn allow_once(m: &Message, id: &ApprovalId) -> Option<String> {
        let once: Vec<String> = m
            .buttons()
            .into_iter()
            .filter(|(label, data)| {
                label.to_lowercase().contains("once") || data.contains("allow-once")
            })
            .map(|(_, d)| d)
            .collect();
        match once.iter().find(|d| d.contains(id.as_str())) {
            Some(d) => Some(d.clone()),
            None if once.len() == 1 => once.into_iter().next(),
            None => None,
        }
    }

    /// When the prompt for `message_id` first became actionable, per the fake's call log.
    pub fn actionable_at(&self, message_id: i64, marker: &str) -> Option<Instant> {
        self.tg
            .calls()
            .into_iter()
            .filter(|c| c.status == 200 && c.params.get("reply_markup").is_some())
            .find(|c| {
                c.str("text").is_some_and(|t| t.contains(marker))
                    || c.params.get("message_id").and_then(|m| m.as_i64()) == Some(message_id)
            })
            .map(|c| c.at)
    }
}
