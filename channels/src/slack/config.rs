//! `[slack]` configuration.

use std::fmt;
use std::net::SocketAddr;

use bridge::config::Secret;
use serde::{Deserialize, Deserializer, de};

use crate::config;
pub use crate::config::ConfigError;

/// This section's name in the config file and in its errors.
const SECTION: &str = "slack";

/// Default Web API base.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";

/// The `[slack]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The bot user OAuth token (`xoxb-…`) for the Web API, as a secret reference:
    /// `env:NAME` or `file:/path`. `Slack::new` takes the resolved value.
    pub bot_token: Secret,
    /// The app-level token (`xapp-…`, scope `connections:write`) that opens Socket Mode
    /// connections: interactions arrive over a WebSocket, no public URL needed.
    pub app_token: Secret,
    /// The app's signing secret, for the HTTP interactivity endpoint (see `http_listen`);
    /// Socket Mode does not need it.
    #[serde(default)]
    pub signing_secret: Option<Secret>,
    /// Reserved for an HTTP interactivity endpoint (a Request URL instead of Socket Mode).
    /// Not served yet: setting it is refused, so nobody believes it is listening. The
    /// signature check it will use is in `slack::signature`.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// Web API base URL (a test fake, or an Enterprise Grid proxy).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Slack user ids (`U…` or `W…`) that may decide approvals. Display names and
    /// `@handles` are refused: they can be changed.
    pub allow_from: Vec<UserId>,
    /// Users whose DM with the bot receives every prompt. Defaults to `allow_from`.
    #[serde(default)]
    pub targets: Option<Vec<UserId>>,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

impl SlackConfig {
    /// The users whose DM receives prompts.
    pub fn effective_targets(&self) -> Vec<UserId> {
        config::effective_targets(&self.allow_from, &self.targets)
    }

    /// Checks what parsing cannot, without I/O. Errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::check_people(
            SECTION,
            &self.allow_from,
            &self.targets,
            "your Slack member id (U…)",
        )?;
        if self.http_listen.is_some() {
            return Err(ConfigError::new(
                SECTION,
                "http_listen",
                "is not supported yet: interactions arrive over Socket Mode (app_token); remove http_listen",
            ));
        }
        parse_api_url(&self.api_url)?;
        Ok(())
    }
}

pub(crate) fn parse_api_url(s: &str) -> Result<url::Url, ConfigError> {
    config::parse_base_url(SECTION, "api_url", s)
}

/// Checks the shape of a resolved token, so a swapped bot/app token fails at start.
pub fn check_token(field: &'static str, token: &str, prefix: &str) -> Result<(), ConfigError> {
    if token.starts_with(prefix) {
        Ok(())
    } else {
        Err(ConfigError::new(
            SECTION,
            field,
            format!("does not start with {prefix:?} (is it the other Slack token?)"),
        ))
    }
}

/// A Slack user id: `U` or `W` then upper-case letters and digits (e.g. `U0123ABCD`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub String);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl UserId {
    pub fn parse(s: &str) -> Result<UserId, String> {
        let t = s.trim();
        let t = t.strip_prefix("slack:").unwrap_or(t);
        if t.starts_with('@') || t.chars().any(|c| c.is_ascii_lowercase()) {
            return Err(format!(
                "{s:?} looks like a name or handle; use the member id (U…), from the profile's ⋮ → \"Copy member ID\" (names can be changed)"
            ));
        }
        let ok = t.len() >= 5
            && t.len() <= 24
            && matches!(t.as_bytes()[0], b'U' | b'W')
            && t.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !ok {
            return Err(format!(
                "{s:?} is not a Slack user id (expected e.g. \"U0123ABCD\")"
            ));
        }
        Ok(UserId(t.to_owned()))
    }

    /// Whether `s` is a well-formed user id (exactly, no normalisation).
    pub fn is_valid(s: &str) -> bool {
        UserId::parse(s).is_ok_and(|u| u.0 == s)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = UserId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Slack user id string such as \"U0123ABCD\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UserId, E> {
                UserId::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<SlackConfig, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    fn base() -> serde_json::Value {
        serde_json::json!({"bot_token": "env:SLACK_BOT_TOKEN", "app_token": "env:SLACK_APP_TOKEN", "allow_from": ["U0123ABCD"]})
    }

    #[test]
    fn minimal_config_defaults() {
        let c = parse(base()).unwrap();
        assert_eq!(c.api_url, DEFAULT_API_URL);
        assert_eq!(c.effective_targets(), vec![UserId("U0123ABCD".into())]);
        assert!(c.signing_secret.is_none() && c.http_listen.is_none());
        c.validate().unwrap();
    }

    #[test]
    fn user_ids_are_checked_precisely() {
        assert_eq!(
            UserId::parse("slack:W0ENTERPRISE1").unwrap().0,
            "W0ENTERPRISE1"
        );
        let cases = [
            ("@alice", "looks like a name"),
            ("alice", "looks like a name"),
            ("u0123abcd", "looks like a name"),
            ("C0123ABCD", "is not a Slack user id"),
            ("D0123ABCD", "is not a Slack user id"),
            ("U01", "is not a Slack user id"),
            ("U0123-ABC", "is not a Slack user id"),
            ("", "is not a Slack user id"),
        ];
        for (v, want) in cases {
            let mut j = base();
            j["allow_from"] = serde_json::json!([v]);
            let err = parse(j).unwrap_err();
            assert!(err.contains(want), "{v}: {err}");
        }
        let mut j = base();
        j["allow_from"] = serde_json::json!([12345]);
        assert!(parse(j).unwrap_err().contains("a Slack user id string"));
        assert!(UserId::is_valid("U0123ABCD"));
        assert!(!UserId::is_valid(" U0123ABCD"));
        assert!(!UserId::is_valid("slack:U0123ABCD"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let mut j = base();
        j["allow_from"] = serde_json::json!([]);
        assert_eq!(
            parse(j).unwrap().validate().unwrap_err().field,
            "allow_from"
        );
        let mut j = base();
        j["targets"] = serde_json::json!([]);
        assert_eq!(parse(j).unwrap().validate().unwrap_err().field, "targets");
        let mut j = base();
        j["http_listen"] = serde_json::json!("127.0.0.1:3000");
        let e = parse(j).unwrap().validate().unwrap_err();
        assert_eq!(e.field, "http_listen", "{e}");
        let mut j = base();
        j["api_url"] = serde_json::json!("ftp://x");
        assert_eq!(parse(j).unwrap().validate().unwrap_err().field, "api_url");
        let mut j = base();
        j["bot_token"] = serde_json::json!("xoxb-literal");
        assert!(parse(j).unwrap_err().contains("env:NAME"));
        let mut j = base();
        j["channel"] = serde_json::json!("C1");
        assert!(parse(j).unwrap_err().contains("unknown field `channel`"));
    }

    #[test]
    fn swapped_tokens_are_caught() {
        assert!(check_token("bot_token", "xoxb-1-2", "xoxb-").is_ok());
        let e = check_token("app_token", "xoxb-1-2", "xapp-").unwrap_err();
        assert_eq!(
            e.to_string(),
            "slack.app_token does not start with \"xapp-\" (is it the other Slack token?)"
        );
    }
}
