//! `[matrix]` configuration.

use std::fmt;

use bridge::config::Secret;
use serde::{Deserialize, Deserializer, de};

use crate::config;
pub use crate::config::ConfigError;

/// This section's name in the config file and in its errors.
const SECTION: &str = "matrix";

/// The `[matrix]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// Homeserver base URL (`https://matrix.example.org`; `http://` only for loopback tests).
    pub homeserver: String,
    /// The bot account's full Matrix id, `@approval-bot:example.org`.
    pub user_id: UserId,
    /// The bot's password, as a secret reference (`env:NAME` or `file:/path`). Used only for
    /// the first login; afterwards the saved session in the state directory is restored.
    /// Exactly one of `password` and `access_token`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// An access token of the bot account, as a secret reference. Exactly one of `password`
    /// and `access_token`. The token's device keeps its id across restarts.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// Matrix user ids that may decide (`@owner:example.org`), compared exactly. Display
    /// names are never used.
    pub allow_from: Vec<UserId>,
    /// Users whose direct room with the bot receives every prompt. Defaults to `allow_from`.
    #[serde(default)]
    pub targets: Option<Vec<UserId>>,
    /// Accept decisions only from encrypted events sent by a verified device of an
    /// allow_from user. Element sends reactions unencrypted, so with `strict` only typed
    /// `/approve` answers from a verified session count. Default false.
    #[serde(default)]
    pub strict: bool,
}

impl MatrixConfig {
    /// The users whose DM receives prompts.
    pub fn effective_targets(&self) -> Vec<UserId> {
        config::effective_targets(&self.allow_from, &self.targets)
    }

    /// Checks what parsing cannot, without I/O. Errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_homeserver(&self.homeserver)?;
        match (&self.password, &self.access_token) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    SECTION,
                    "password",
                    "and matrix.access_token are both set: keep exactly one",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    SECTION,
                    "password",
                    "is missing: set password or access_token (as env:NAME or file:/path)",
                ));
            }
            _ => {}
        }
        config::check_people(
            SECTION,
            &self.allow_from,
            &self.targets,
            "your Matrix id, e.g. \"@you:example.org\"",
        )?;
        if self.effective_targets().contains(&self.user_id)
            || self.allow_from.contains(&self.user_id)
        {
            return Err(ConfigError::new(
                SECTION,
                "allow_from",
                "contains the bot's own user_id: the bot never decides",
            ));
        }
        Ok(())
    }
}

pub(crate) fn parse_homeserver(s: &str) -> Result<url::Url, ConfigError> {
    config::parse_base_url(SECTION, "homeserver", s)
}

/// A Matrix user id, `@local:server`, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub String);

impl UserId {
    /// Accepts `@local:server` (server may carry a port); refuses display names and bare names.
    pub fn parse(s: &str) -> Result<UserId, String> {
        let Some(rest) = s.strip_prefix('@') else {
            return Err(format!(
                "{s:?} is not a Matrix user id: expected \"@user:server\" (display names can be changed by anyone)"
            ));
        };
        let Some((local, server)) = rest.split_once(':') else {
            return Err(format!(
                "{s:?} is not a Matrix user id: missing \":server\""
            ));
        };
        let local_ok = !local.is_empty()
            && local
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-/+".contains(c));
        let server_ok = !server.is_empty()
            && server
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        if !local_ok || !server_ok || s.len() > 255 {
            return Err(format!(
                "{s:?} is not a valid Matrix user id (lowercase \"@user:server\")"
            ));
        }
        Ok(UserId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UserId::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<MatrixConfig, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "homeserver": "https://matrix.example.org",
            "user_id": "@approval-bot:example.org",
            "password": "env:MATRIX_PASSWORD",
            "allow_from": ["@owner:example.org"],
        })
    }

    #[test]
    fn minimal_config_targets_default_to_allow_from() {
        let c = parse(base()).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.effective_targets(),
            vec![UserId("@owner:example.org".into())]
        );
        assert!(!c.strict);
    }

    #[test]
    fn user_ids_are_validated() {
        for bad in [
            "owner",
            "Owner Name",
            "@owner",
            "@:example.org",
            "@Owner:example.org",
            "owner:example.org",
        ] {
            let mut v = base();
            v["allow_from"] = serde_json::json!([bad]);
            let e = parse(v).unwrap_err();
            assert!(e.contains("Matrix user id"), "{bad}: {e}");
        }
        assert!(UserId::parse("@a.b_c=d-e/f:localhost:8448").is_ok());
    }

    #[test]
    fn exactly_one_credential() {
        let mut v = base();
        v["access_token"] = serde_json::json!("env:T");
        assert!(
            parse(v)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
                .contains("keep exactly one")
        );
        let mut v = base();
        v.as_object_mut().unwrap().remove("password");
        assert!(
            parse(v)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("matrix.password is missing")
        );
        let mut v = base();
        v["password"] = serde_json::json!("hunter2");
        assert!(
            parse(v)
                .unwrap_err()
                .contains("secrets are not written in the config")
        );
    }

    #[test]
    fn unknown_keys_and_bad_urls_are_errors() {
        let mut v = base();
        v["allowFrom"] = serde_json::json!([]);
        assert!(parse(v).unwrap_err().contains("unknown field `allowFrom`"));
        let mut v = base();
        v["homeserver"] = serde_json::json!("matrix.example.org");
        assert!(
            parse(v)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("matrix.homeserver")
        );
    }
}
