//! `[telegram]` configuration.

use std::fmt;

use bridge::config::Secret;
use serde::{Deserialize, Deserializer, de};

use crate::config;
pub use crate::config::ConfigError;

/// This section's name in the config file and in its errors.
const SECTION: &str = "telegram";

/// Default Bot API server.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// The `[telegram]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot token from @BotFather, as a secret reference: `env:NAME` or `file:/path`
    /// (a literal token is refused). `Telegram::new` takes the resolved value.
    pub bot_token: Secret,
    /// Bot API server base URL; set it for a self-hosted Bot API server (or a test fake).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Telegram user ids that may decide approvals: numbers, or strings `tg:<id>` /
    /// `telegram:<id>`. Usernames are refused: they can be renamed.
    pub allow_from: Vec<UserId>,
    /// Chats that receive every prompt (chat ids; a user's DM chat id is their user id).
    /// Defaults to `allow_from`.
    #[serde(default)]
    pub targets: Option<Vec<ChatId>>,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

impl TelegramConfig {
    /// The chats that receive prompts.
    pub fn effective_targets(&self) -> Vec<ChatId> {
        config::effective_targets(&self.allow_from, &self.targets)
    }

    /// Checks what parsing cannot, without I/O. Errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::check_people(
            SECTION,
            &self.allow_from,
            &self.targets,
            "your numeric Telegram user id",
        )?;
        parse_api_url(&self.api_url)?;
        Ok(())
    }
}

pub(crate) fn parse_api_url(s: &str) -> Result<url::Url, ConfigError> {
    config::parse_base_url(SECTION, "api_url", s)
}

/// A Telegram user id (always positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub u64);

/// A Telegram chat id (negative for groups and channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChatId(pub i64);

/// A user's direct chat with the bot has their user id.
impl From<UserId> for ChatId {
    fn from(u: UserId) -> ChatId {
        ChatId(u.0 as i64)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Strips `tg:` / `telegram:` and parses the rest as an integer, with a precise error.
fn parse_prefixed(s: &str, what: &str) -> Result<i64, String> {
    let t = s.trim();
    let digits = t
        .strip_prefix("telegram:")
        .or_else(|| t.strip_prefix("tg:"))
        .unwrap_or(t);
    if digits.starts_with('@')
        || (!digits.is_empty()
            && digits.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !digits.chars().any(|c| c.is_ascii_digit() || c == '-'))
    {
        return Err(format!(
            "{s:?} looks like a username; {what} must be numeric ids (usernames can be renamed). Message @userinfobot to learn yours"
        ));
    }
    digits.parse::<i64>().map_err(|_| {
        format!(
            "{s:?} is not a numeric Telegram {what} (expected e.g. 123456789 or \"tg:123456789\")"
        )
    })
}

impl UserId {
    pub fn parse(s: &str) -> Result<UserId, String> {
        Self::from_i64(parse_prefixed(s, "user id")?, s)
    }

    fn from_i64(n: i64, shown: &str) -> Result<UserId, String> {
        if n <= 0 {
            return Err(format!(
                "{shown} is not a user id: user ids are positive (negative ids are group chats, which belong in targets)"
            ));
        }
        Ok(UserId(n as u64))
    }
}

impl ChatId {
    pub fn parse(s: &str) -> Result<ChatId, String> {
        let n = parse_prefixed(s, "chat id")?;
        if n == 0 {
            return Err(format!("{s:?} is not a chat id"));
        }
        Ok(ChatId(n))
    }
}

struct IdVisitor<T>(fn(&str) -> Result<T, String>, &'static str);

impl<T> de::Visitor<'_> for IdVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a numeric Telegram {} or a string \"tg:<id>\"", self.1)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.0)(&v.to_string()).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        if v > i64::MAX as u64 {
            return Err(E::custom(format!(
                "{v} is out of range for a Telegram {}",
                self.1
            )));
        }
        (self.0)(&v.to_string()).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IdVisitor(UserId::parse, "user id"))
    }
}

impl<'de> Deserialize<'de> for ChatId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IdVisitor(ChatId::parse, "chat id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<TelegramConfig, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn allow_from_accepts_numbers_and_prefixed_strings() {
        let c = parse(serde_json::json!({
            "bot_token": "env:TELEGRAM_BOT_TOKEN",
            "allow_from": [111111111, "tg:222", "telegram:333", "444"],
        }))
        .unwrap();
        assert_eq!(
            c.allow_from,
            vec![UserId(111111111), UserId(222), UserId(333), UserId(444)]
        );
        assert_eq!(c.api_url, DEFAULT_API_URL);
        assert_eq!(
            c.effective_targets(),
            vec![ChatId(111111111), ChatId(222), ChatId(333), ChatId(444)]
        );
        c.validate().unwrap();
    }

    #[test]
    fn allow_from_rejects_everything_else_precisely() {
        let cases = [
            (serde_json::json!("@alice"), "looks like a username"),
            (serde_json::json!("alice"), "looks like a username"),
            (serde_json::json!("tg:@alice"), "looks like a username"),
            (
                serde_json::json!("discord:123"),
                "is not a numeric Telegram user id",
            ),
            (
                serde_json::json!("12ab"),
                "is not a numeric Telegram user id",
            ),
            (serde_json::json!(-1001234), "user ids are positive"),
            (serde_json::json!(0), "user ids are positive"),
            (
                serde_json::json!(1.5),
                "a numeric Telegram user id or a string",
            ),
            (
                serde_json::json!(true),
                "a numeric Telegram user id or a string",
            ),
        ];
        for (v, want) in cases {
            let err = parse(serde_json::json!({"bot_token": "env:X", "allow_from": [v.clone()]}))
                .unwrap_err();
            assert!(err.contains(want), "{v}: {err}");
        }
    }

    #[test]
    fn literal_tokens_are_refused() {
        let err =
            parse(serde_json::json!({"bot_token": "123:ABC", "allow_from": [1]})).unwrap_err();
        assert!(
            err.contains("secrets are not written in the config"),
            "{err}"
        );
    }

    #[test]
    fn targets_may_be_groups_and_default_to_allow_from() {
        let c = parse(serde_json::json!({"bot_token": "env:X", "allow_from": [1], "targets": [-100123, "tg:5"]})).unwrap();
        assert_eq!(c.effective_targets(), vec![ChatId(-100123), ChatId(5)]);
    }

    #[test]
    fn unknown_keys_and_bad_urls_are_errors() {
        let err =
            parse(serde_json::json!({"bot_token": "env:X", "allow_from": [1], "allowFrom": [2]}))
                .unwrap_err();
        assert!(err.contains("unknown field `allowFrom`"), "{err}");
        let c = parse(
            serde_json::json!({"bot_token": "env:X", "allow_from": [1], "api_url": "ftp://x"}),
        )
        .unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "telegram.api_url \"ftp://x\" must be http:// or https://"
        );
        let c = parse(serde_json::json!({"bot_token": "env:X", "allow_from": []})).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("telegram.allow_from is empty")
        );
    }
}
