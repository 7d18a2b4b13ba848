//! Configuration pieces every part of the bridge shares: secrets that come only from the
//! environment or a file, and the `[gateway]`, `[state]`, `[http]`, `[log]`, `[alerts]` and `[trust]`
//! sections.
//! Channel sections live with their adapters; the binary assembles the whole file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use jiff::tz::TimeZone;

use serde::{Deserialize, Deserializer};

use crate::approval::Window;
use crate::channel::Target;
use crate::engine::{Point, Quiet, ReminderPolicy};

/// A configuration error that names the field and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `gateway.token`.
    pub field: String,
    /// What is wrong and what to write instead.
    pub problem: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Where a secret comes from: `env:NAME` or `file:/path`. A literal secret in the config
/// text is refused, so config files can be shared and committed without leaking tokens.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

impl Secret {
    pub fn parse(s: &str) -> Result<Secret, String> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`env:{name}` is not a valid environment variable name"
                ));
            }
            Ok(Secret::Env(name.to_owned()))
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("`file:` needs a path, e.g. `file:/etc/approval-bridge/token`".into());
            }
            Ok(Secret::File(PathBuf::from(path)))
        } else {
            Err("secrets are not written in the config: use `env:NAME` (read from the environment) \
                 or `file:/path` (read from a file)"
                .into())
        }
    }

    /// Reads the secret. `field` names the config key in the error.
    pub fn resolve(&self, field: &str) -> Result<String, ConfigError> {
        let value = match self {
            Secret::Env(name) => std::env::var(name).map_err(|_| {
                ConfigError::new(field, format!("environment variable {name} is not set"))
            })?,
            Secret::File(path) => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(field, format!("cannot read {}: {e}", path.display()))
            })?,
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(ConfigError::new(field, format!("{self:?} is empty")));
        }
        Ok(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Env(n) => write!(f, "env:{n}"),
            Secret::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let s = String::deserialize(d)?;
        Secret::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `[gateway]`: the OpenClaw gateway this bridge serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// WebSocket URL, `ws://` or `wss://`.
    pub url: String,
    /// The gateway's shared token (`gateway.auth.token` there), as `env:NAME` or `file:/path`.
    pub token: Secret,
    /// Optional SHA-256 fingerprint of the gateway's TLS certificate (hex, colons allowed);
    /// when set, only that certificate is accepted on `wss://`.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("ws://") || self.url.starts_with("wss://")) {
            return Err(ConfigError::new(
                "gateway.url",
                format!(
                    "`{}` must start with ws:// or wss://, e.g. ws://127.0.0.1:18789",
                    self.url
                ),
            ));
        }
        if let Some(fp) = &self.tls_fingerprint {
            parse_fingerprint(fp)?;
            if !self.url.starts_with("wss://") {
                return Err(ConfigError::new(
                    "gateway.tls_fingerprint",
                    "pinning needs a wss:// gateway.url",
                ));
            }
        }
        Ok(())
    }

    /// The pinned certificate fingerprint as bytes, if configured.
    pub fn fingerprint(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        self.tls_fingerprint
            .as_deref()
            .map(parse_fingerprint)
            .transpose()
    }
}

fn parse_fingerprint(s: &str) -> Result<[u8; 32], ConfigError> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&hex).map_err(|_| {
        ConfigError::new("gateway.tls_fingerprint", "must be hex (64 digits, colons allowed), e.g. from `openssl x509 -fingerprint -sha256`")
    })?;
    bytes.try_into().map_err(|_| {
        ConfigError::new(
            "gateway.tls_fingerprint",
            "must be a SHA-256 fingerprint: 32 bytes, 64 hex digits",
        )
    })
}

/// `[state]`: where the device key, device token and database live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Directory, created 0700 if missing.
    pub dir: PathBuf,
}

/// `[http]`: the optional health and metrics listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; loopback unless you put a proxy with auth in front.
    pub listen: SocketAddr,
}

/// `[log]`: logging.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,bridge=debug`; `RUST_LOG` overrides it.
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[alerts]`: when the owners are told that approvals cannot reach them, and reminded of
/// approvals about to expire.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// How long the gateway link or a channel must be broken before every chat that still
    /// works hears of it: `"60s"` (default), `"5m"`, ..., or `"off"`.
    #[serde(default = "default_after", deserialize_with = "after")]
    pub after: Option<Duration>,
    /// When a pending approval's prompts get a reminder: a share of its life passed
    /// (`"50%"`) or a time left (`"2m"`). Default `["50%", "2m"]`; `[]` for none.
    #[serde(default = "default_remind")]
    pub remind: Vec<String>,
    /// Hours without reminders, `"23:00-07:00"`, in `timezone`.
    #[serde(default)]
    pub quiet: Option<String>,
    /// An IANA time zone such as `"Europe/Berlin"`; default: the system's.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Chats (`"telegram:222333444"`) that get the prompt when nobody answered by
    /// `escalate_at`; each must be allowed to decide on its channel.
    #[serde(default)]
    pub escalate_to: Vec<String>,
    /// When to escalate, as a point like `remind`'s; default `"50%"`.
    #[serde(default = "default_escalate_at")]
    pub escalate_at: String,
    /// How often a delivery-only probe tests the path by itself (the first once the gateway
    /// link is ready): `"6h"`, ..., or `"off"` (default). At least a minute.
    #[serde(default, deserialize_with = "probe_every")]
    pub probe_every: Option<Duration>,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        AlertsConfig {
            after: default_after(),
            remind: default_remind(),
            quiet: None,
            timezone: None,
            escalate_to: Vec::new(),
            escalate_at: default_escalate_at(),
            probe_every: None,
        }
    }
}

impl AlertsConfig {
    /// The reminder policy this section describes; an error names the bad key and the fix.
    pub fn reminders(&self) -> Result<ReminderPolicy, ConfigError> {
        let points = self
            .remind
            .iter()
            .map(|p| parse_point(p).map_err(|e| ConfigError::new("alerts.remind", e)))
            .collect::<Result<Vec<Point>, _>>()?;
        let zone = match &self.timezone {
            None => TimeZone::system(),
            Some(name) => TimeZone::get(name).map_err(|_| {
                ConfigError::new(
                    "alerts.timezone",
                    format!("`{name}` is not a time zone: write an IANA name like \"Europe/Berlin\" or \"UTC\""),
                )
            })?,
        };
        let quiet = self
            .quiet
            .as_deref()
            .map(|q| parse_quiet(q, zone).map_err(|e| ConfigError::new("alerts.quiet", e)))
            .transpose()?;
        let escalate_to = self
            .escalate_to
            .iter()
            .map(|t| match t.split_once(':') {
                Some((channel, chat)) if !channel.is_empty() && !chat.is_empty() => Ok(Target {
                    channel: channel.to_owned(),
                    chat: chat.to_owned(),
                }),
                _ => Err(ConfigError::new(
                    "alerts.escalate_to",
                    format!(
                        "`{t}` is not a chat: write \"<channel>:<id>\", e.g. \"telegram:222333444\""
                    ),
                )),
            })
            .collect::<Result<Vec<Target>, _>>()?;
        let escalate_at = parse_point(&self.escalate_at)
            .map_err(|e| ConfigError::new("alerts.escalate_at", e))?;
        Ok(ReminderPolicy {
            points,
            quiet,
            escalate_to,
            escalate_at: Some(escalate_at),
        })
    }
}

/// `[trust]`: what the owners may hand the bridge to decide for them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// The time-boxed allows every exec prompt offers beside allow-once: `["15m", "1h",
    /// "8h"]`, each from 1 minute to 24 hours, at most 5; default `["1h"]`; `[]` for none.
    #[serde(default = "default_durations")]
    pub durations: Vec<String>,
}

impl Default for TrustConfig {
    fn default() -> TrustConfig {
        TrustConfig {
            durations: default_durations(),
        }
    }
}

/// More would not fit one row of buttons (Discord's limit).
const MAX_DURATIONS: usize = 5;

impl TrustConfig {
    /// The windows `durations` lists, in order; an error names the bad entry and the fix.
    pub fn windows(&self) -> Result<Vec<Window>, ConfigError> {
        let field = "trust.durations";
        if self.durations.len() > MAX_DURATIONS {
            return Err(ConfigError::new(
                field,
                format!(
                    "{} durations is more than a prompt has room for: list at most {MAX_DURATIONS}",
                    self.durations.len()
                ),
            ));
        }
        let mut out: Vec<Window> = Vec::new();
        for d in &self.durations {
            let w = Window::parse(d.trim()).ok_or_else(|| {
                ConfigError::new(
                    field,
                    format!("`{d}` is not a duration from 1 minute to 24 hours: write whole minutes or hours, like \"15m\" or \"8h\""),
                )
            })?;
            if out.contains(&w) {
                return Err(ConfigError::new(field, format!("`{d}` is listed twice")));
            }
            out.push(w);
        }
        Ok(out)
    }
}

fn default_durations() -> Vec<String> {
    vec!["1h".into()]
}

fn default_remind() -> Vec<String> {
    vec!["50%".into(), "2m".into()]
}

fn default_escalate_at() -> String {
    "50%".into()
}

/// `50%` (a share of the life passed, 1–99) or a duration left (`2m`).
fn parse_point(s: &str) -> Result<Point, String> {
    if let Some(p) = s.trim().strip_suffix('%') {
        return match p.trim().parse::<u8>() {
            Ok(p @ 1..=99) => Ok(Point::Share(p)),
            _ => Err(format!("`{s}` is not a share: write 1% to 99%")),
        };
    }
    parse_duration(s)
        .map(Point::Left)
        .map_err(|e| format!("{e}, or a share like `50%`"))
}

/// `23:00-07:00` in `zone`.
fn parse_quiet(s: &str, zone: TimeZone) -> Result<Quiet, String> {
    let bad = || format!("`{s}` is not a range of hours: write it like \"23:00-07:00\"");
    let (from, to) = s.split_once('-').ok_or_else(bad)?;
    let time = |t: &str| t.trim().parse::<jiff::civil::Time>().map_err(|_| bad());
    let (from, to) = (time(from)?, time(to)?);
    if from == to {
        return Err(bad());
    }
    Ok(Quiet { from, to, zone })
}

fn default_after() -> Option<Duration> {
    Some(Duration::from_secs(60))
}

/// The shortest `alerts.after`: below it a gateway restart would alert.
const MIN_AFTER: Duration = Duration::from_secs(10);

fn after<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration_or_off(
        d,
        MIN_AFTER,
        "is too short: at least 10s, so a gateway restart does not alert",
    )
}

/// A duration of at least `min`, or `"off"`; `short` says what is wrong with a shorter one.
fn duration_or_off<'de, D: Deserializer<'de>>(
    d: D,
    min: Duration,
    short: &str,
) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim() == "off" {
        return Ok(None);
    }
    let wait = parse_duration(&s).map_err(serde::de::Error::custom)?;
    if wait < min {
        return Err(serde::de::Error::custom(format!("`{s}` {short}")));
    }
    Ok(Some(wait))
}

/// The shortest `alerts.probe_every`: a probe's prompt lives 90 s, and two at once help nobody.
const MIN_PROBE_EVERY: Duration = Duration::from_secs(60);

fn probe_every<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration_or_off(
        d,
        MIN_PROBE_EVERY,
        "is too often: at least 1m (each probe sends a prompt to every chat)",
    )
}

/// A duration written as people write it: `60s`, `5m`, `1h 30m`, `2 days`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration: write it like `60s`, `5m` or `1h 30m`");
    let signed: jiff::SignedDuration = s.trim().parse().map_err(|_| bad())?;
    Duration::try_from(signed).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_secret_is_refused_with_the_fix() {
        let e = Secret::parse("123:abc").unwrap_err();
        assert!(e.contains("env:NAME") && e.contains("file:/path"), "{e}");
        assert_eq!(Secret::parse("env:TOK").unwrap(), Secret::Env("TOK".into()));
        assert!(Secret::parse("env:").is_err());
        assert!(Secret::parse("env:A-B").is_err());
    }

    #[test]
    fn secret_from_file_is_trimmed_and_missing_env_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(Secret::File(p).resolve("gateway.token").unwrap(), "s3cret");
        let e = Secret::Env("APPROVAL_BRIDGE_TEST_SURELY_UNSET".into())
            .resolve("telegram.bot_token")
            .unwrap_err();
        assert_eq!(e.field, "telegram.bot_token");
        assert!(e.problem.contains("APPROVAL_BRIDGE_TEST_SURELY_UNSET"));
    }

    #[test]
    fn trust_durations_default_to_an_hour_and_refuse_what_a_grant_cannot_be() {
        let parse = |t: &str| toml::from_str::<TrustConfig>(t).unwrap().windows();
        let tokens =
            |t: &str| -> Vec<String> { parse(t).unwrap().iter().map(|w| w.token()).collect() };
        assert_eq!(tokens(""), ["1h"]);
        assert_eq!(
            tokens("durations = [\"15m\", \"90m\", \"24h\"]"),
            ["15m", "90m", "24h"]
        );
        assert!(tokens("durations = []").is_empty());
        for bad in [
            "[\"25h\"]",
            "[\"0m\"]",
            "[\"1d\"]",
            "[\"1.5h\"]",
            "[\"1h\", \"60m\"]",
            "[\"1m\", \"2m\", \"3m\", \"4m\", \"5m\", \"6m\"]",
        ] {
            let e = parse(&format!("durations = {bad}")).unwrap_err();
            assert_eq!(e.field, "trust.durations", "{bad}");
        }
    }

    #[test]
    fn alerts_after_reads_durations_and_off() {
        let parse = |t: &str| toml::from_str::<AlertsConfig>(t).map(|c| c.after);
        assert_eq!(parse(""), Ok(Some(Duration::from_secs(60))));
        assert_eq!(parse("after = \"5m\""), Ok(Some(Duration::from_secs(300))));
        assert_eq!(
            parse("after = \"1h 30m\""),
            Ok(Some(Duration::from_secs(5400)))
        );
        assert_eq!(parse("after = \"off\""), Ok(None));
        let short = parse("after = \"2s\"").unwrap_err().to_string();
        assert!(short.contains("at least 10s"), "{short}");
        let bad = parse("after = \"soon\"").unwrap_err().to_string();
        assert!(bad.contains("write it like `60s`"), "{bad}");
        assert!(parse("after = \"-5m\"").is_err());
        assert!(parse("every = \"5m\"").is_err(), "unknown keys are errors");
    }

    #[test]
    fn alerts_probe_every_is_off_by_default_and_at_least_a_minute() {
        let parse = |t: &str| toml::from_str::<AlertsConfig>(t).map(|c| c.probe_every);
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("probe_every = \"off\""), Ok(None));
        assert_eq!(
            parse("probe_every = \"6h\""),
            Ok(Some(Duration::from_secs(6 * 3600)))
        );
        let short = parse("probe_every = \"30s\"").unwrap_err().to_string();
        assert!(short.contains("at least 1m"), "{short}");
        assert!(parse("probe_every = \"hourly\"").is_err());
    }

    #[test]
    fn reminders_read_points_quiet_hours_zones_and_escalation_chats() {
        let parse = |t: &str| toml::from_str::<AlertsConfig>(t).unwrap().reminders();
        let d = parse("").unwrap();
        assert_eq!(
            d.points,
            vec![Point::Share(50), Point::Left(Duration::from_secs(120))]
        );
        assert_eq!((d.quiet, d.escalate_to.len()), (None, 0));
        let r = parse(
            "remind = [\"25%\", \"5m\"]\nquiet = \"23:00-07:00\"\ntimezone = \"Europe/Berlin\"\n\
             escalate_to = [\"telegram:222\"]\nescalate_at = \"10m\"",
        )
        .unwrap();
        assert_eq!(r.points[0], Point::Share(25));
        assert_eq!(r.escalate_at, Some(Point::Left(Duration::from_secs(600))));
        assert_eq!(r.escalate_to[0].to_string(), "telegram:222");
        let q = r.quiet.unwrap();
        assert_eq!((q.from.hour(), q.to.hour()), (23, 7));
        let field = |t: &str| parse(t).unwrap_err().field;
        assert_eq!(field("remind = [\"150%\"]"), "alerts.remind");
        assert_eq!(field("remind = [\"later\"]"), "alerts.remind");
        assert_eq!(field("quiet = \"late\""), "alerts.quiet");
        assert_eq!(field("timezone = \"Mars/Base\""), "alerts.timezone");
        assert_eq!(field("escalate_to = [\"222\"]"), "alerts.escalate_to");
        assert_eq!(field("escalate_at = \"0%\""), "alerts.escalate_at");
    }

    #[test]
    fn debug_never_shows_secret_values() {
        assert_eq!(format!("{:?}", Secret::Env("X".into())), "env:X");
    }

    #[test]
    fn gateway_url_and_fingerprint_are_checked() {
        let g = |url: &str, fp: Option<&str>| GatewayConfig {
            url: url.into(),
            token: Secret::Env("T".into()),
            tls_fingerprint: fp.map(Into::into),
        };
        assert_eq!(
            g("http://x", None).validate().unwrap_err().field,
            "gateway.url"
        );
        assert!(g("ws://127.0.0.1:1", None).validate().is_ok());
        let fp = "AB:".repeat(31) + "AB";
        assert!(g("wss://h", Some(&fp)).validate().is_ok());
        assert_eq!(
            g("wss://h", Some(&fp)).fingerprint().unwrap(),
            Some([0xAB; 32])
        );
        assert_eq!(
            g("wss://h", Some("abcd")).validate().unwrap_err().field,
            "gateway.tls_fingerprint"
        );
        assert!(g("ws://h", Some(&fp)).validate().is_err());
    }
}
