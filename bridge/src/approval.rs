//! Domain types of one approval's life: what was asked (`Approval`), what may be
//! answered (`Decision`), who answered (`Responder`) and how it ended (`Outcome`: decided,
//! expired, denied for lack of a route, cancelled, or gone).
//! Parsing from the gateway's JSON lives here so every port shares one reading.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The three approval families the gateway runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `exec.approval.*`: a shell command.
    Exec,
    /// `plugin.approval.*`: a plugin-defined action; ids are prefixed `plugin:`.
    Plugin,
    /// `openclaw.approval.*`: a system-agent action.
    System,
}

impl Kind {
    /// The `kind` value of the kind-agnostic `approval.resolve`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Plugin => "plugin",
            Kind::System => "system-agent",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "exec" => Some(Kind::Exec),
            "plugin" => Some(Kind::Plugin),
            "system-agent" | "system" | "openclaw" => Some(Kind::System),
            _ => None,
        }
    }
}

/// An answer the gateway accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    AllowOnce,
    AllowAlways,
    Deny,
}

impl Decision {
    pub const ALL: [Decision; 3] = [Decision::AllowOnce, Decision::AllowAlways, Decision::Deny];

    /// The wire form: `allow-once`, `allow-always`, `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::AllowOnce => "allow-once",
            Decision::AllowAlways => "allow-always",
            Decision::Deny => "deny",
        }
    }

    /// Parses the wire form, accepting OpenClaw's `always` alias for `allow-always`.
    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "allow-once" => Some(Decision::AllowOnce),
            "allow-always" | "always" => Some(Decision::AllowAlways),
            "deny" => Some(Decision::Deny),
            _ => None,
        }
    }

    /// Button label.
    pub fn label(self) -> &'static str {
        match self {
            Decision::AllowOnce => "Allow once",
            Decision::AllowAlways => "Allow always",
            Decision::Deny => "Deny",
        }
    }

    /// One-glyph form: Matrix's reaction key, the short button of a digest row.
    pub fn emoji(self) -> &'static str {
        match self {
            Decision::AllowOnce => "✅",
            Decision::Deny => "❌",
            Decision::AllowAlways => "♾️",
        }
    }

    /// Past tense, for outcome lines ("Allowed once by ...").
    pub fn past(self) -> &'static str {
        match self {
            Decision::AllowOnce => "Allowed once",
            Decision::AllowAlways => "Allowed always",
            Decision::Deny => "Denied",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a time-boxed allow's grant lasts: whole minutes, from 1 minute to 24 hours.
/// Its token is the shortest form, `15m`, `1h`, `90m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Window(u32);

impl Window {
    /// The longest grant: 24 hours.
    pub const MAX_MINUTES: u32 = 24 * 60;

    /// A window of `minutes`, when it is within 1 minute ..= 24 hours.
    pub fn minutes(minutes: u32) -> Option<Window> {
        (1..=Self::MAX_MINUTES)
            .contains(&minutes)
            .then_some(Window(minutes))
    }

    pub fn as_minutes(self) -> u32 {
        self.0
    }

    pub fn ms(self) -> i64 {
        i64::from(self.0) * 60_000
    }

    /// The token: whole hours as `<n>h`, anything else as `<n>m`.
    pub fn token(self) -> String {
        if self.0.is_multiple_of(60) {
            format!("{}h", self.0 / 60)
        } else {
            format!("{}m", self.0)
        }
    }

    /// Reads `<n>m` or `<n>h` (digits only); `None` outside 1 minute ..= 24 hours.
    pub fn parse(s: &str) -> Option<Window> {
        let (n, per) = match s.as_bytes().last()? {
            b'm' => (&s[..s.len() - 1], 1),
            b'h' => (&s[..s.len() - 1], 60),
            _ => return None,
        };
        if n.is_empty() || n.len() > 4 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Window::minutes(n.parse::<u32>().ok()? * per)
    }

    /// As people read it: `15 min`, `1 h`, `1 h 30 min`.
    pub fn label(self) -> String {
        crate::time::span(self.ms())
    }
}

impl TryFrom<u32> for Window {
    type Error = String;
    fn try_from(m: u32) -> Result<Window, String> {
        Window::minutes(m).ok_or_else(|| format!("{m} minutes is outside 1 min ..= 24 h"))
    }
}

impl From<Window> for u32 {
    fn from(w: Window) -> u32 {
        w.0
    }
}

/// What one button or typed answer picks: a gateway decision, or allow-once that also
/// opens a time-boxed grant for the same request (`allow-1h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Choice {
    Decide(Decision),
    AllowFor(Window),
}

impl Choice {
    /// The decision the gateway is asked for.
    pub fn decision(self) -> Decision {
        match self {
            Choice::Decide(d) => d,
            Choice::AllowFor(_) => Decision::AllowOnce,
        }
    }

    /// The grant this choice opens, if any.
    pub fn window(self) -> Option<Window> {
        match self {
            Choice::Decide(_) => None,
            Choice::AllowFor(w) => Some(w),
        }
    }

    /// The wire token: `allow-once`, `allow-always`, `deny`, `allow-<window>`.
    pub fn token(self) -> String {
        match self {
            Choice::Decide(d) => d.as_str().to_owned(),
            Choice::AllowFor(w) => format!("allow-{}", w.token()),
        }
    }

    /// Reads a token (a decision's wire form, its `always` alias, or `allow-<window>`).
    pub fn parse(s: &str) -> Option<Choice> {
        if let Some(d) = Decision::parse(s) {
            return Some(Choice::Decide(d));
        }
        s.strip_prefix("allow-")
            .and_then(Window::parse)
            .map(Choice::AllowFor)
    }

    /// Button label: `Allow once`, `Allow for 1 h`.
    pub fn label(self) -> String {
        match self {
            Choice::Decide(d) => d.label().to_owned(),
            Choice::AllowFor(w) => format!("Allow for {}", w.label()),
        }
    }

    /// Short form: Matrix's reaction key, a digest row's button (`✅`, `⏳1h`).
    pub fn emoji(self) -> String {
        match self {
            Choice::Decide(d) => d.emoji().to_owned(),
            Choice::AllowFor(w) => format!("⏳{}", w.token()),
        }
    }
}

impl From<Decision> for Choice {
    fn from(d: Decision) -> Choice {
        Choice::Decide(d)
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token())
    }
}

/// The gateway's id of an approval, verbatim (a UUID, or `plugin:<uuid>` for plugins).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApprovalId(pub String);

impl ApprovalId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ApprovalId {
    fn from(s: &str) -> Self {
        ApprovalId(s.to_owned())
    }
}

/// A pending approval as the gateway described it. Every text field is untrusted:
/// channels escape it for their markup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: ApprovalId,
    pub kind: Kind,
    /// Exec: the full command. Plugin/system: the title.
    pub command: String,
    pub cwd: Option<String>,
    pub host: Option<String>,
    pub node_id: Option<String>,
    pub agent_id: Option<String>,
    pub session_key: Option<String>,
    /// Plugin/system: the longer description.
    pub description: Option<String>,
    /// Plugin: `info`, `warning`, `critical`, ...
    pub severity: Option<String>,
    /// The gateway's warning text and analysis lines, in order, deduplicated.
    pub warnings: Vec<String>,
    /// `commandAnalysis.riskKinds`.
    pub risk_kinds: Vec<String>,
    /// Set when a cron (automation) run raised the approval.
    pub cron: bool,
    pub allowed_decisions: Vec<Decision>,
    /// The time-boxed allows the bridge offers beside allow-once (set by the engine's
    /// trust policy when the approval arrives; empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

/// Why a gateway payload could not be read as an approval.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("approval payload has no `{0}`")]
    Missing(&'static str),
}

impl Approval {
    /// Reads an `*.approval.requested` payload (or one entry of `*.approval.list`).
    /// `kind` is the family the event came from; the payload's own `approvalKind` and an
    /// id prefix refine it.
    pub fn from_gateway(kind: Kind, payload: &Value) -> Result<Approval, ParseError> {
        let id = str_at(payload, &["id"]).ok_or(ParseError::Missing("id"))?;
        let kind = match str_at(payload, &["approvalKind"]).and_then(Kind::parse) {
            Some(k) => k,
            None if id.starts_with("plugin:") => Kind::Plugin,
            None => kind,
        };
        let req = payload.get("request").unwrap_or(payload);
        let text = |path: &[&str]| str_at(req, path).map(str::to_owned);
        let command = match kind {
            Kind::Exec => text(&["command"])
                .or_else(|| text(&["commandPreview"]))
                .ok_or(ParseError::Missing("request.command"))?,
            Kind::Plugin | Kind::System => text(&["title"])
                .or_else(|| text(&["command"]))
                .or_else(|| text(&["toolName"]))
                .unwrap_or_else(|| "(untitled approval)".to_owned()),
        };
        let mut warnings: Vec<String> = Vec::new();
        let mut push = |w: &str| {
            let w = w.trim();
            if !w.is_empty() && !warnings.iter().any(|x| x == w) {
                warnings.push(w.to_owned());
            }
        };
        if let Some(w) = str_at(req, &["warningText"]) {
            w.lines().for_each(&mut push);
        }
        for w in strings_at(req, &["commandAnalysis", "warningLines"]) {
            push(&w);
        }
        let allowed: Vec<Decision> = strings_at(req, &["allowedDecisions"])
            .iter()
            .filter_map(|d| Decision::parse(d))
            .collect();
        let allowed_decisions = if allowed.is_empty() {
            // Absent list: the gateway's defaults. Plugin and exec both accept all three.
            Decision::ALL.to_vec()
        } else {
            allowed
        };
        Ok(Approval {
            id: ApprovalId(id.to_owned()),
            kind,
            command,
            cwd: text(&["cwd"]),
            host: text(&["host"]),
            node_id: text(&["nodeId"]),
            agent_id: text(&["agentId"]),
            session_key: text(&["sessionKey"]),
            description: text(&["description"]),
            severity: text(&["severity"]),
            warnings,
            risk_kinds: strings_at(req, &["commandAnalysis", "riskKinds"]),
            cron: req.get("cronExecutionSource").is_some_and(|v| !v.is_null()),
            allowed_decisions,
            windows: Vec::new(),
            created_at_ms: payload
                .get("createdAtMs")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            expires_at_ms: payload.get("expiresAtMs").and_then(Value::as_i64),
        })
    }

    pub fn offers(&self, d: Decision) -> bool {
        self.allowed_decisions.contains(&d)
    }

    /// Whether `c` may be picked: its decision is offered, and a time-boxed allow is one
    /// of the windows the bridge offered on this approval.
    pub fn offers_choice(&self, c: Choice) -> bool {
        self.offers(c.decision()) && c.window().is_none_or(|w| self.windows.contains(&w))
    }

    /// What a prompt offers, in the order every channel shows it: allow once, each
    /// time-boxed allow, allow always, deny.
    pub fn choices(&self) -> Vec<Choice> {
        let mut out = Vec::new();
        if self.offers(Decision::AllowOnce) {
            out.push(Choice::Decide(Decision::AllowOnce));
            out.extend(self.windows.iter().copied().map(Choice::AllowFor));
        }
        for d in [Decision::AllowAlways, Decision::Deny] {
            if self.offers(d) {
                out.push(Choice::Decide(d));
            }
        }
        out
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

fn strings_at(v: &Value, path: &[&str]) -> Vec<String> {
    let mut cur = v;
    for k in path {
        match cur.get(k) {
            Some(n) => cur = n,
            None => return Vec::new(),
        }
    }
    cur.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A person who answered, identified by the channel's stable id only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Responder {
    /// Channel name, e.g. `telegram`.
    pub channel: String,
    /// The channel's stable user id (Telegram numeric id, `@user:server`, ...).
    pub user_id: String,
    /// A display name for humans reading the outcome; never used for authorization.
    pub display: Option<String>,
}

impl fmt::Display for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.display {
            Some(d) => write!(f, "{d} ({})", self.user_id),
            None => f.write_str(&self.user_id),
        }
    }
}

/// Who made a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Decider {
    /// Someone answering one of this bridge's prompts.
    Responder(Responder),
    /// Another gateway client; the gateway's `resolvedBy` text when it gave one.
    Elsewhere { resolved_by: Option<String> },
    /// The bridge, on `owner`'s behalf, under their time-boxed grant `grant` (which lasts
    /// until `until_ms`, the gateway's clock).
    Grant {
        grant: crate::grant::GrantId,
        owner: Responder,
        until_ms: i64,
    },
}

/// How an approval ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Outcome {
    Decided {
        decision: Decision,
        by: Decider,
        at_ms: i64,
    },
    /// The gateway let it time out.
    Expired { at_ms: i64 },
    /// The gateway no longer knows it (restarted, or ended while we were away).
    Gone { at_ms: i64 },
    /// The gateway denied it by itself at once because no approval client or chat could
    /// see it (`resolvedBy: "no-approval-route"`, history reason `no-route`).
    NoRoute { at_ms: i64 },
    /// The gateway withdrew it without a decision, before its deadline: it was pending
    /// across a gateway restart, or whatever asked for it went away.
    Cancelled { reason: CancelReason, at_ms: i64 },
}

/// Why the gateway withdrew an approval (`Outcome::Cancelled`). Stored as kebab-case text;
/// a value this version does not know reads back as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CancelReason {
    /// Pending while the gateway restarted (history reason `gateway-restart`).
    GatewayRestart,
    /// The agent run that asked ended first (history reason `run-aborted`).
    RunAborted,
    /// The system-agent session that asked was evicted (`resolvedBy: "session-evicted"`;
    /// the gateway files it as a timeout, but nobody's deadline passed).
    SessionEvicted,
    /// Any other reason the gateway gave, or none.
    #[serde(other)]
    Other,
}

impl CancelReason {
    /// The gateway's own word for it (`resolvedBy`, or a history row's `reason`).
    pub fn parse(s: &str) -> Option<CancelReason> {
        match s {
            "gateway-restart" => Some(CancelReason::GatewayRestart),
            "run-aborted" => Some(CancelReason::RunAborted),
            "session-evicted" => Some(CancelReason::SessionEvicted),
            _ => None,
        }
    }
}

impl Outcome {
    pub fn at_ms(&self) -> i64 {
        match self {
            Outcome::Decided { at_ms, .. }
            | Outcome::Expired { at_ms }
            | Outcome::Gone { at_ms }
            | Outcome::NoRoute { at_ms }
            | Outcome::Cancelled { at_ms, .. } => *at_ms,
        }
    }

    /// One plain-text line for humans: "Allowed once by Ann (42) via telegram".
    /// Channels escape it for their markup and add the time in their own format.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Decided {
                decision,
                by: Decider::Responder(r),
                ..
            } => {
                format!("{} by {} via {}", decision.past(), r, r.channel)
            }
            Outcome::Decided {
                decision,
                by: Decider::Elsewhere { resolved_by },
                ..
            } => match resolved_by {
                Some(who) => format!("{} elsewhere by {}", decision.past(), who),
                None => format!("{} elsewhere", decision.past()),
            },
            Outcome::Decided {
                decision,
                by:
                    Decider::Grant {
                        grant,
                        owner,
                        until_ms,
                    },
                ..
            } => format!(
                "{} by grant {grant} of {owner} via {} until {}",
                decision.past(),
                owner.channel,
                crate::time::utc(*until_ms)
            ),
            Outcome::Expired { .. } => "Expired without a decision".to_owned(),
            Outcome::Gone { .. } => "No longer pending at the gateway".to_owned(),
            Outcome::NoRoute { .. } => "Denied: no approval route reached anyone".to_owned(),
            Outcome::Cancelled { reason, .. } => match reason {
                CancelReason::GatewayRestart => "Cancelled by a gateway restart",
                CancelReason::RunAborted => "Cancelled: the run that asked ended",
                CancelReason::SessionEvicted => "Cancelled: the session that asked was closed",
                CancelReason::Other => "Cancelled by the gateway",
            }
            .to_owned(),
        }
    }
}

/// Milliseconds since the Unix epoch, the gateway's clock unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_exec_requested_payload() {
        let p = json!({
            "id": "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11",
            "approvalKind": "exec",
            "request": {
                "command": "rm -rf /tmp/x", "cwd": "/srv", "host": "gateway", "agentId": "main",
                "warningText": "deletes files", "commandAnalysis": {"riskKinds": ["destructive"],
                "warningLines": ["deletes files", "recursive"]},
                "allowedDecisions": ["allow-once", "deny"]
            },
            "createdAtMs": 1000, "expiresAtMs": 2000
        });
        let a = Approval::from_gateway(Kind::Exec, &p).unwrap();
        assert_eq!(a.kind, Kind::Exec);
        assert_eq!(a.command, "rm -rf /tmp/x");
        assert_eq!(a.warnings, vec!["deletes files", "recursive"]);
        assert_eq!(a.risk_kinds, vec!["destructive"]);
        assert_eq!(
            a.allowed_decisions,
            vec![Decision::AllowOnce, Decision::Deny]
        );
        assert!(!a.offers(Decision::AllowAlways));
        assert_eq!(a.expires_at_ms, Some(2000));
    }

    #[test]
    fn plugin_prefix_sets_kind_and_title_is_the_headline() {
        let p = json!({"id": "plugin:abc", "request": {"title": "Send email", "description": "to x", "severity": "warning"}});
        let a = Approval::from_gateway(Kind::Exec, &p).unwrap();
        assert_eq!(a.kind, Kind::Plugin);
        assert_eq!(a.command, "Send email");
        assert_eq!(a.severity.as_deref(), Some("warning"));
        assert_eq!(a.allowed_decisions, Decision::ALL.to_vec());
    }

    #[test]
    fn exec_without_command_is_an_error() {
        let p = json!({"id": "x", "request": {}});
        assert_eq!(
            Approval::from_gateway(Kind::Exec, &p),
            Err(ParseError::Missing("request.command"))
        );
        assert_eq!(
            Approval::from_gateway(Kind::Exec, &json!({})),
            Err(ParseError::Missing("id"))
        );
    }

    #[test]
    fn outcomes_read_back_from_their_stored_form_old_and_new() {
        // Forms written by earlier versions stay readable: variants are added, never renamed.
        let old: Outcome = serde_json::from_str(r#"{"type":"expired","at_ms":5}"#).unwrap();
        assert_eq!(old, Outcome::Expired { at_ms: 5 });
        let old: Outcome = serde_json::from_str(r#"{"type":"gone","at_ms":6}"#).unwrap();
        assert_eq!(old, Outcome::Gone { at_ms: 6 });
        for o in [
            Outcome::NoRoute { at_ms: 7 },
            Outcome::Cancelled {
                reason: CancelReason::GatewayRestart,
                at_ms: 8,
            },
        ] {
            let text = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), o, "{text}");
        }
        assert_eq!(
            serde_json::to_string(&Outcome::Cancelled {
                reason: CancelReason::RunAborted,
                at_ms: 1
            })
            .unwrap(),
            r#"{"type":"cancelled","reason":"run-aborted","at_ms":1}"#
        );
        let future: Outcome =
            serde_json::from_str(r#"{"type":"cancelled","reason":"moon-phase","at_ms":2}"#)
                .unwrap();
        assert_eq!(
            future,
            Outcome::Cancelled {
                reason: CancelReason::Other,
                at_ms: 2
            }
        );
    }

    #[test]
    fn each_way_of_ending_without_a_human_says_what_it_was() {
        let cancelled = |reason| Outcome::Cancelled { reason, at_ms: 0 };
        assert_eq!(
            Outcome::NoRoute { at_ms: 0 }.summary(),
            "Denied: no approval route reached anyone"
        );
        assert_eq!(
            cancelled(CancelReason::GatewayRestart).summary(),
            "Cancelled by a gateway restart"
        );
        assert_eq!(
            cancelled(CancelReason::Other).summary(),
            "Cancelled by the gateway"
        );
        assert_eq!(
            Outcome::Expired { at_ms: 0 }.summary(),
            "Expired without a decision"
        );
    }

    #[test]
    fn decision_accepts_always_alias_only() {
        assert_eq!(Decision::parse("always"), Some(Decision::AllowAlways));
        assert_eq!(Decision::parse("Allow-Once"), None);
        assert_eq!(Decision::parse(""), None);
    }
}
