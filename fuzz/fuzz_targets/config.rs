//! The TOML config file as `src/config.rs` composes it (core sections from `bridge::config`
//! plus one table per channel), then each `validate()`; accepted configs keep their promises.
#![no_main]

use bridge::config::{GatewayConfig, HttpConfig, LogConfig, Secret, StateConfig};
use channels::discord::DiscordConfig;
use channels::matrix::MatrixConfig;
use channels::slack::SlackConfig;
use channels::telegram::TelegramConfig;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// The binary's `Config`, field for field (that crate is not a library).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Config {
    gateway: GatewayConfig,
    state: StateConfig,
    #[serde(default)]
    http: Option<HttpConfig>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    telegram: Option<TelegramConfig>,
    #[serde(default)]
    discord: Option<DiscordConfig>,
    #[serde(default)]
    matrix: Option<MatrixConfig>,
    #[serde(default)]
    slack: Option<SlackConfig>,
}

/// A secret reference is never a literal secret.
fn reference(s: &Secret) {
    let shown = format!("{s:?}");
    assert!(
        shown.starts_with("env:") || shown.starts_with("file:"),
        "{shown}"
    );
}

fn telegram(t: &TelegramConfig) {
    reference(&t.bot_token);
    if t.validate().is_ok() {
        assert!(
            t.allow_from
                .iter()
                .all(|u| u.0 > 0 && u.0 <= i64::MAX as u64)
        );
        assert!(t.effective_targets().iter().all(|c| c.0 != 0));
        assert!(!t.effective_targets().is_empty());
    }
}

fn discord(d: &DiscordConfig) {
    reference(&d.bot_token);
    if d.validate().is_ok() {
        assert!(!d.allow_from.is_empty() && !d.effective_targets().is_empty());
    }
}

fn matrix(m: &MatrixConfig) {
    m.password.iter().chain(&m.access_token).for_each(reference);
    if m.validate().is_ok() {
        assert!(m.password.is_some() != m.access_token.is_some());
        assert!(!m.allow_from.contains(&m.user_id));
        let ok = |u: &channels::matrix::config::UserId| u.as_str().starts_with('@');
        assert!(m.allow_from.iter().chain(&m.effective_targets()).all(ok));
    }
}

fn slack(s: &SlackConfig) {
    reference(&s.bot_token);
    reference(&s.app_token);
    if s.validate().is_ok() {
        assert!(s.allow_from.iter().all(|u| u.0.starts_with(['U', 'W'])));
        assert!(!s.effective_targets().is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = toml::from_str::<Config>(text) {
        reference(&c.gateway.token);
        if c.gateway.validate().is_ok() {
            assert!(c.gateway.url.starts_with("ws://") || c.gateway.url.starts_with("wss://"));
            assert!(c.gateway.fingerprint().is_ok());
        }
        c.telegram.iter().for_each(telegram);
        c.discord.iter().for_each(discord);
        c.matrix.iter().for_each(matrix);
        c.slack.iter().for_each(slack);
    }
    // Each section alone, so the fuzzer reaches every validate() without a whole file.
    if let Ok(t) = toml::from_str::<TelegramConfig>(text) {
        telegram(&t);
    }
    if let Ok(d) = toml::from_str::<DiscordConfig>(text) {
        discord(&d);
    }
    if let Ok(m) = toml::from_str::<MatrixConfig>(text) {
        matrix(&m);
    }
    if let Ok(s) = toml::from_str::<SlackConfig>(text) {
        slack(&s);
    }
});
