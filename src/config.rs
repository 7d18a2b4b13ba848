//! The whole configuration file: core sections from `bridge::config` plus one section per
//! channel compiled in. Unknown keys are errors; every error names its field.

use std::path::Path;

use anyhow::Context;
use bridge::config::{
    AlertsConfig, ConfigError, GatewayConfig, HttpConfig, LogConfig, StateConfig, TrustConfig,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[gateway]`: the OpenClaw gateway to serve.
    pub gateway: GatewayConfig,
    /// `[state]`: device key, device token and database.
    pub state: StateConfig,
    /// `[http]`: optional `/healthz` and `/metrics` listener.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// `[log]`: log format and level.
    #[serde(default)]
    pub log: LogConfig,
    /// `[alerts]`: when the owners hear that approvals cannot reach them.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// `[trust]`: the time-boxed allows the prompts offer.
    #[serde(default)]
    pub trust: TrustConfig,
    /// `[telegram]`: owner DMs on Telegram.
    #[cfg(feature = "telegram")]
    #[serde(default)]
    pub telegram: Option<channels::telegram::TelegramConfig>,
    /// `[discord]`: owner DMs on Discord (buttons, answers over the gateway WebSocket).
    #[cfg(feature = "discord")]
    #[serde(default)]
    pub discord: Option<channels::discord::DiscordConfig>,
    /// `[matrix]`: owner DMs on Matrix (encrypted direct rooms, answers by reaction).
    #[cfg(feature = "matrix")]
    #[serde(default)]
    pub matrix: Option<channels::matrix::MatrixConfig>,
    /// `[slack]`: owner DMs on Slack (Block Kit buttons, answers over Socket Mode).
    #[cfg(feature = "slack")]
    #[serde(default)]
    pub slack: Option<channels::slack::SlackConfig>,
}

impl Config {
    /// Reads, parses and validates `path` (no network, no secrets read yet).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg =
            Config::parse(&text).with_context(|| format!("invalid config {}", path.display()))?;
        Ok(cfg)
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.gateway.validate()?;
        #[cfg(feature = "telegram")]
        if let Some(t) = &self.telegram {
            t.validate()?;
        }
        #[cfg(feature = "discord")]
        if let Some(d) = &self.discord {
            d.validate()?;
        }
        #[cfg(feature = "matrix")]
        if let Some(m) = &self.matrix {
            m.validate()?;
        }
        #[cfg(feature = "slack")]
        if let Some(s) = &self.slack {
            s.validate()?;
        }
        self.alerts.reminders()?;
        self.trust.windows()?;
        if self.channel_count() == 0 {
            return Err(ConfigError::new(
                "telegram",
                "no channel is configured: add a [telegram], [matrix], [discord] or [slack] section (see config.example.toml), or approvals reach nobody",
            ));
        }
        Ok(())
    }

    fn channel_count(&self) -> usize {
        #[allow(unused_mut)]
        let mut n = 0;
        #[cfg(feature = "telegram")]
        {
            n += usize::from(self.telegram.is_some());
        }
        #[cfg(feature = "discord")]
        {
            n += usize::from(self.discord.is_some());
        }
        #[cfg(feature = "matrix")]
        {
            n += usize::from(self.matrix.is_some());
        }
        #[cfg(feature = "slack")]
        {
            n += usize::from(self.slack.is_some());
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [gateway]
        url = "ws://127.0.0.1:18789"
        token = "env:OPENCLAW_GATEWAY_TOKEN"
        [state]
        dir = "/tmp/x"
        [telegram]
        bot_token = "env:TELEGRAM_BOT_TOKEN"
        allow_from = [111111111]
    "#;

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../config.example.toml");
        let cfg = Config::parse(text).unwrap();
        assert!(cfg.telegram.is_some());
        assert!(cfg.http.is_some());
    }

    #[test]
    fn minimal_config_parses() {
        let cfg = Config::parse(MINIMAL).unwrap();
        assert_eq!(cfg.gateway.url, "ws://127.0.0.1:18789");
        assert!(cfg.http.is_none());
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = err(&MINIMAL.replace("[state]", "[state]\ndirr = \"x\""));
        assert!(e.contains("dirr"), "{e}");
    }

    #[test]
    fn literal_token_is_refused() {
        let e = err(&MINIMAL.replace("env:OPENCLAW_GATEWAY_TOKEN", "abc123"));
        assert!(e.contains("env:NAME") && e.contains("token"), "{e}");
    }

    #[test]
    fn bad_url_names_the_field() {
        let e = err(&MINIMAL.replace("ws://127.0.0.1:18789", "http://x"));
        assert!(e.starts_with("gateway.url:"), "{e}");
    }

    #[test]
    fn username_in_allow_from_is_refused() {
        let e = err(&MINIMAL.replace("[111111111]", "[\"@owner\"]"));
        assert!(e.contains("allow_from"), "{e}");
    }

    #[test]
    fn no_channel_is_an_error() {
        let text = MINIMAL.split("[telegram]").next().unwrap();
        assert!(err(text).contains("no channel is configured"));
    }
}
