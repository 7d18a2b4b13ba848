//! `[discord]` configuration.

use std::fmt;

use bridge::config::Secret;
use serde::{Deserialize, Deserializer, de};

use crate::config;
pub use crate::config::ConfigError;

/// This section's name in the config file and in its errors.
const SECTION: &str = "discord";

/// Default REST base; the gateway URL is discovered from it (`GET /gateway/bot`).
pub const DEFAULT_API_URL: &str = "https://discord.com/api";

/// The `[discord]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The bot token from the Developer Portal (Application → Bot → Reset Token), as a
    /// secret reference: `env:NAME` or `file:/path` (a literal token is refused).
    pub bot_token: Secret,
    /// REST base URL without the version (`/v10` is appended); the gateway's WebSocket URL
    /// is discovered from it. Set it only for a proxy or a test fake.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Discord user ids (snowflakes, as strings or integers) that may decide approvals.
    /// Usernames and mentions are refused: only the id is stable.
    pub allow_from: Vec<Snowflake>,
    /// Users whose DM with the bot receives every prompt. Defaults to `allow_from`.
    #[serde(default)]
    pub targets: Option<Vec<Snowflake>>,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

impl DiscordConfig {
    /// The users who receive prompts.
    pub fn effective_targets(&self) -> Vec<Snowflake> {
        config::effective_targets(&self.allow_from, &self.targets)
    }

    /// Checks what parsing cannot, without I/O. Errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::check_people(
            SECTION,
            &self.allow_from,
            &self.targets,
            "your Discord user id (Developer Mode → right-click yourself → Copy User ID)",
        )?;
        parse_api_url(&self.api_url)?;
        Ok(())
    }
}

pub(crate) fn parse_api_url(s: &str) -> Result<url::Url, ConfigError> {
    config::parse_base_url(SECTION, "api_url", s)
}

/// A Discord snowflake id (user, channel, message): a positive 64-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Snowflake(pub u64);

impl fmt::Display for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Snowflake {
    /// Parses a user id: digits only (`discord:` prefix allowed), with precise errors for
    /// the usual mistakes (a username, a mention).
    pub fn parse(s: &str) -> Result<Snowflake, String> {
        let t = s.trim();
        let t = t.strip_prefix("discord:").unwrap_or(t);
        if t.starts_with("<@") {
            return Err(format!(
                "{s:?} is a mention; write the bare user id (the digits)"
            ));
        }
        if !t.is_empty() && !t.bytes().all(|b| b.is_ascii_digit()) {
            if t.starts_with('@') || t.chars().any(|c| c.is_alphabetic()) {
                return Err(format!(
                    "{s:?} looks like a username; allow_from and targets must be user ids (usernames can be renamed). \
                     Enable Developer Mode, right-click the user, Copy User ID"
                ));
            }
            return Err(format!(
                "{s:?} is not a Discord user id (expected digits, e.g. \"123456789012345678\")"
            ));
        }
        let n: u64 = t.parse().map_err(|_| {
            format!("{s:?} is not a Discord user id (expected digits, e.g. \"123456789012345678\")")
        })?;
        if n == 0 {
            return Err(format!("{s:?} is not a Discord user id"));
        }
        Ok(Snowflake(n))
    }
}

struct SnowflakeVisitor;

impl de::Visitor<'_> for SnowflakeVisitor {
    type Value = Snowflake;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Discord user id: a string of digits (\"123456789012345678\") or an integer")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Snowflake, E> {
        if v <= 0 {
            return Err(E::custom(format!(
                "{v} is not a Discord user id: ids are positive"
            )));
        }
        Ok(Snowflake(v as u64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Snowflake, E> {
        Snowflake::parse(&v.to_string()).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Snowflake, E> {
        Snowflake::parse(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Snowflake {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SnowflakeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<DiscordConfig, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn ids_are_strings_or_integers_and_targets_default_to_allow_from() {
        let c = parse(serde_json::json!({
            "bot_token": "env:DISCORD_BOT_TOKEN",
            "allow_from": ["123456789012345678", 234567890123456789u64, "discord:345678901234567890"],
        }))
        .unwrap();
        assert_eq!(
            c.allow_from,
            vec![
                Snowflake(123456789012345678),
                Snowflake(234567890123456789),
                Snowflake(345678901234567890)
            ]
        );
        assert_eq!(c.api_url, DEFAULT_API_URL);
        assert_eq!(c.effective_targets(), c.allow_from);
        c.validate().unwrap();
    }

    #[test]
    fn everything_but_an_id_is_refused_precisely() {
        let cases = [
            (serde_json::json!("@alice"), "looks like a username"),
            (serde_json::json!("alice#1234"), "looks like a username"),
            (serde_json::json!("<@123456789012345678>"), "is a mention"),
            (serde_json::json!("12 34"), "is not a Discord user id"),
            (
                serde_json::json!("99999999999999999999999"),
                "is not a Discord user id",
            ),
            (serde_json::json!(0), "is not a Discord user id"),
            (serde_json::json!(-5), "ids are positive"),
            (serde_json::json!(""), "is not a Discord user id"),
            (
                serde_json::json!(true),
                "a Discord user id: a string of digits",
            ),
        ];
        for (v, want) in cases {
            let err = parse(serde_json::json!({"bot_token": "env:X", "allow_from": [v.clone()]}))
                .unwrap_err();
            assert!(err.contains(want), "{v}: {err}");
        }
    }

    #[test]
    fn literal_tokens_unknown_keys_bad_urls_and_empty_lists_are_errors() {
        let err = parse(serde_json::json!({"bot_token": "MTIz.abc.def", "allow_from": ["1"]}))
            .unwrap_err();
        assert!(
            err.contains("secrets are not written in the config"),
            "{err}"
        );
        let err = parse(
            serde_json::json!({"bot_token": "env:X", "allow_from": ["1"], "allowFrom": ["2"]}),
        )
        .unwrap_err();
        assert!(err.contains("unknown field `allowFrom`"), "{err}");
        let c = parse(
            serde_json::json!({"bot_token": "env:X", "allow_from": ["1"], "api_url": "ws://x"}),
        )
        .unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "discord.api_url \"ws://x\" must be http:// or https://"
        );
        let c = parse(serde_json::json!({"bot_token": "env:X", "allow_from": []})).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("discord.allow_from is empty")
        );
        let c =
            parse(serde_json::json!({"bot_token": "env:X", "allow_from": ["1"], "targets": []}))
                .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("discord.targets is empty")
        );
    }
}
