//! The gateway's ledger of terminal approvals (`approval.history`): one `HistoryRow` per
//! approval that ended there, decided or not, and the `HistoryMark` that says how far the
//! bridge has read it. Parsing lives here so the client and the in-memory gateway share one
//! reading and one rule for "newer than the mark".
//!
//! Measured on openclaw 2026.9.6 (`dist/approval-*.mjs`, `state/openclaw-state-read.worker.js`
//! and a real gateway): `approval.history {cursor?, limit? 1–100, kind?}` answers
//! `{items, nextCursor?}`, newest first by `(resolvedAtMs, id)` (both descending; ids compare
//! as SQLite text, byte by byte, as Rust's `str` does), terminal rows only, kept 30 days.
//! A page may hold fewer items than `limit` (rows of sessions the caller may not see are
//! dropped after the page is cut), so only a missing `nextCursor` ends the list. A row:
//!
//! ```json
//! {"id", "status": "allowed|denied|expired|cancelled", "presentation": {"kind": "exec",
//!  "commandText", "commandPreview", "warningText", "host", "nodeId", "agentId", "scope"?,
//!  "allowedDecisions"}, "urlPath", "createdAtMs", "expiresAtMs", "resolvedAtMs",
//!  "reason": "user|timeout|malformed-verdict|no-route|run-aborted|gateway-restart|storage-corrupt",
//!  "decision"?, "source": {"agentId"?, "sessionKey"?}, "resolver": {"kind": "device|channel|runtime|system", "id"?}}
//! ```
//!
//! Plugin and system-agent rows carry `title` and `description` in the presentation instead
//! of a command. A cron (automation) run's row has no `cronExecutionSource`: its session key
//! (`agent:<agent>:cron:<job id>[:run:<run id>]`) and, when allow-always was offered, the
//! presentation's `scope {kind: "standing-grant", automation, command}` say it.

use std::fmt;

use serde_json::Value;

use crate::approval::{ApprovalId, CancelReason, Decider, Decision, Kind, Outcome};

/// How far the bridge has read the history: the newest row it has taken in. Rows are
/// totally ordered by `(resolved_at_ms, id)`, the gateway's own order; a row is *after* the
/// mark when its pair is strictly greater. So a row is taken exactly once across calls and
/// restarts, even among rows that share a `resolvedAtMs`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HistoryMark {
    pub resolved_at_ms: i64,
    pub id: ApprovalId,
}

impl fmt::Display for HistoryMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.resolved_at_ms)
    }
}

/// A row's `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryStatus {
    Allowed,
    Denied,
    Expired,
    Cancelled,
    /// A status this version does not know, verbatim.
    Other(String),
}

impl HistoryStatus {
    fn parse(s: &str) -> HistoryStatus {
        match s {
            "allowed" => HistoryStatus::Allowed,
            "denied" => HistoryStatus::Denied,
            "expired" => HistoryStatus::Expired,
            "cancelled" => HistoryStatus::Cancelled,
            other => HistoryStatus::Other(other.to_owned()),
        }
    }
}

/// A row's `reason`: why it reached its terminal state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryReason {
    /// A reviewer's answer (allowed or denied).
    User,
    /// Its deadline passed.
    Timeout,
    /// A reviewer's answer the gateway could not accept, turned into a deny.
    MalformedVerdict,
    /// No approval client or chat could see it: denied at once.
    NoRoute,
    /// The run that asked ended first.
    RunAborted,
    /// It was pending while the gateway restarted.
    GatewayRestart,
    /// The gateway's own record was unreadable: denied.
    StorageCorrupt,
    /// A reason this version does not know, verbatim.
    Other(String),
}

impl HistoryReason {
    fn parse(s: &str) -> HistoryReason {
        match s {
            "user" => HistoryReason::User,
            "timeout" => HistoryReason::Timeout,
            "malformed-verdict" => HistoryReason::MalformedVerdict,
            "no-route" => HistoryReason::NoRoute,
            "run-aborted" => HistoryReason::RunAborted,
            "gateway-restart" => HistoryReason::GatewayRestart,
            "storage-corrupt" => HistoryReason::StorageCorrupt,
            other => HistoryReason::Other(other.to_owned()),
        }
    }
}

/// Who the gateway recorded as ending it: `kind` `device` (a client's device id, through
/// `approval.resolve`), `channel`, `runtime` (measured: a client's `exec.approval.resolve`,
/// with its display name as `id`, so the bridge's own exec decisions should read
/// `approval-bridge` (same path; not measured); also the gateway's auto-review; a
/// `approval.resolve` — the bridge's system-agent path — records `device`) or `system` (the gateway itself, `id` e.g.
/// `no-approval-route`, `session-evicted`, or none for a timeout or a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryResolver {
    pub kind: String,
    pub id: Option<String>,
}

/// One terminal approval from `approval.history`. Every text field is untrusted, as in
/// [`crate::approval::Approval`]: channels escape it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub id: ApprovalId,
    pub kind: Kind,
    pub status: HistoryStatus,
    pub reason: HistoryReason,
    /// `allow-once`, `allow-always` or `deny`; absent on expired and cancelled rows.
    pub decision: Option<Decision>,
    /// Exec: `commandText` (or `commandPreview`). Plugin and system-agent: the title.
    pub command: String,
    /// Exec: the gateway's short form of the command, when it differs.
    pub command_preview: Option<String>,
    /// Plugin and system-agent: the description.
    pub description: Option<String>,
    pub warning: Option<String>,
    pub host: Option<String>,
    pub node_id: Option<String>,
    /// `source.agentId`, else the presentation's `agentId`.
    pub agent_id: Option<String>,
    pub session_key: Option<String>,
    /// Set when a cron (automation) run asked: the job id from the session key, or the
    /// standing-grant scope's `automation`.
    pub cron_job: Option<String>,
    pub allowed_decisions: Vec<Decision>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub resolved_at_ms: i64,
    pub resolver: Option<HistoryResolver>,
}

/// Why a history item could not be read as a row.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HistoryError {
    #[error("history row has no `{0}`")]
    Missing(&'static str),
    #[error("history row `{field}` is unreadable: {value}")]
    Unreadable { field: &'static str, value: String },
}

impl HistoryRow {
    /// Reads one item of `approval.history`'s `items`. Unknown fields are ignored; a row
    /// without an id, a status, a reason or a `resolvedAtMs` is an error (the caller skips
    /// it with a warning).
    pub fn from_gateway(item: &Value) -> Result<HistoryRow, HistoryError> {
        let id = text(item, &["id"]).ok_or(HistoryError::Missing("id"))?;
        let status = text(item, &["status"]).ok_or(HistoryError::Missing("status"))?;
        let reason = text(item, &["reason"]).ok_or(HistoryError::Missing("reason"))?;
        let resolved_at_ms = item
            .get("resolvedAtMs")
            .ok_or(HistoryError::Missing("resolvedAtMs"))?;
        let resolved_at_ms = resolved_at_ms
            .as_i64()
            .ok_or_else(|| HistoryError::Unreadable {
                field: "resolvedAtMs",
                value: resolved_at_ms.to_string(),
            })?;
        let decision = match item.get("decision") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_str().and_then(Decision::parse).ok_or_else(|| {
                HistoryError::Unreadable {
                    field: "decision",
                    value: v.to_string(),
                }
            })?),
        };
        let p = item.get("presentation").unwrap_or(&Value::Null);
        let kind = match text(p, &["kind"]).and_then(Kind::parse) {
            Some(k) => k,
            None if id.starts_with("plugin:") => Kind::Plugin,
            None => Kind::Exec,
        };
        let command = match kind {
            Kind::Exec => text(p, &["commandText"]).or_else(|| text(p, &["commandPreview"])),
            Kind::Plugin | Kind::System => text(p, &["title"]),
        }
        .unwrap_or("(no command recorded)")
        .to_owned();
        let command_preview = match kind {
            Kind::Exec => text(p, &["commandPreview"])
                .filter(|c| *c != command)
                .map(str::to_owned),
            Kind::Plugin | Kind::System => None,
        };
        let session_key = text(item, &["source", "sessionKey"]).map(str::to_owned);
        let standing_grant = text(p, &["scope", "kind"]) == Some("standing-grant");
        let cron_job = session_key
            .as_deref()
            .and_then(cron_job_of)
            .or_else(|| {
                standing_grant
                    .then(|| text(p, &["scope", "automation"]))
                    .flatten()
            })
            .map(str::to_owned);
        let allowed_decisions = p
            .get("allowedDecisions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().and_then(Decision::parse))
                    .collect()
            })
            .unwrap_or_default();
        let resolver = item.get("resolver").and_then(|r| {
            Some(HistoryResolver {
                kind: text(r, &["kind"])?.to_owned(),
                id: text(r, &["id"]).map(str::to_owned),
            })
        });
        let owned = |v: &Value, path: &[&str]| text(v, path).map(str::to_owned);
        Ok(HistoryRow {
            id: ApprovalId(id.to_owned()),
            kind,
            status: HistoryStatus::parse(status),
            reason: HistoryReason::parse(reason),
            decision,
            command,
            command_preview,
            description: match kind {
                Kind::Exec => None,
                Kind::Plugin | Kind::System => owned(p, &["description"]),
            },
            warning: owned(p, &["warningText"]),
            host: owned(p, &["host"]),
            node_id: owned(p, &["nodeId"]),
            agent_id: owned(item, &["source", "agentId"]).or_else(|| owned(p, &["agentId"])),
            session_key,
            cron_job,
            allowed_decisions,
            created_at_ms: item.get("createdAtMs").and_then(Value::as_i64).unwrap_or(0),
            expires_at_ms: item.get("expiresAtMs").and_then(Value::as_i64),
            resolved_at_ms,
            resolver,
        })
    }

    /// This row as a mark: what to pass once it has been taken in.
    pub fn mark(&self) -> HistoryMark {
        HistoryMark {
            resolved_at_ms: self.resolved_at_ms,
            id: self.id.clone(),
        }
    }

    /// Strictly after `mark` (always, without one).
    pub fn is_after(&self, mark: Option<&HistoryMark>) -> bool {
        mark.is_none_or(|m| (self.resolved_at_ms, &self.id) > (m.resolved_at_ms, &m.id))
    }

    /// A reviewer's answer ended it: reason `user` (allowed or denied by a device, a channel
    /// or a client), or `malformed-verdict` (a reviewer answered; the gateway turned the
    /// malformed answer into a deny). Everything else ended without one: no route, timeout,
    /// cancellation, a corrupt record, and reasons this version does not know (so that an
    /// unknown way of ending is reported rather than hidden). The gateway's own auto-review
    /// allow-once is recorded as a `runtime` reviewer's `user` answer and counts as decided.
    pub fn human_decided(&self) -> bool {
        matches!(
            self.reason,
            HistoryReason::User | HistoryReason::MalformedVerdict
        )
    }

    /// How it ended, as the bridge shows and audits it. A reviewer's answer is `Decided`
    /// elsewhere, by the resolver's id (a device id, for a device); the engine credits its
    /// own responders itself.
    pub fn outcome(&self) -> Outcome {
        let at_ms = self.resolved_at_ms;
        let resolver_id = self.resolver.as_ref().and_then(|r| r.id.clone());
        let decided = |decision: Decision, resolved_by: Option<String>| Outcome::Decided {
            decision,
            by: Decider::Elsewhere { resolved_by },
            at_ms,
        };
        let cancelled = |reason| Outcome::Cancelled { reason, at_ms };
        match &self.reason {
            HistoryReason::NoRoute => Outcome::NoRoute { at_ms },
            // The system agent evicts a session's approval as a "timeout".
            HistoryReason::Timeout if resolver_id.as_deref() == Some("session-evicted") => {
                cancelled(CancelReason::SessionEvicted)
            }
            HistoryReason::Timeout => Outcome::Expired { at_ms },
            HistoryReason::RunAborted => cancelled(CancelReason::RunAborted),
            HistoryReason::GatewayRestart => cancelled(CancelReason::GatewayRestart),
            HistoryReason::User => decided(self.decision.unwrap_or(Decision::Deny), resolver_id),
            HistoryReason::MalformedVerdict => decided(
                Decision::Deny,
                resolver_id.or_else(|| Some("malformed-verdict".into())),
            ),
            // As the resolved event names it (`resolvedBy: "storage-error"`).
            HistoryReason::StorageCorrupt => decided(Decision::Deny, Some("storage-error".into())),
            HistoryReason::Other(_) => match (&self.status, self.decision) {
                (HistoryStatus::Expired, _) => Outcome::Expired { at_ms },
                (HistoryStatus::Cancelled, _) => cancelled(CancelReason::Other),
                (_, Some(d)) => decided(d, resolver_id),
                (_, None) => Outcome::Expired { at_ms },
            },
        }
    }
}

/// The job id in a cron run's session key, `agent:<agent>:cron:<job id>[:run:<run id>]`.
fn cron_job_of(session_key: &str) -> Option<&str> {
    let rest = session_key.strip_prefix("agent:")?;
    let (_agent, rest) = rest.split_once(':')?;
    let rest = rest.strip_prefix("cron:")?;
    let job = rest.split(':').next()?;
    (!job.is_empty()).then_some(job)
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// Where one page of the gateway's answer leaves a newest-first walk down to `mark`
/// and `floor_ms`.
#[derive(Debug, PartialEq)]
pub struct Page {
    /// The page's rows after the mark and at or above the floor, newest first.
    pub rows: Vec<HistoryRow>,
    /// The walk reached the mark or the floor: later pages hold only older rows.
    pub reached_end: bool,
}

/// Takes one page of `approval.history` items (newest first): the rows after `mark` and
/// not older than `floor_ms`, and whether the walk can stop. Unreadable items are skipped
/// with a warning; they never stop the walk.
pub fn take_page(items: &[Value], mark: Option<&HistoryMark>, floor_ms: i64) -> Page {
    let mut rows = Vec::new();
    let mut reached_end = false;
    for item in items {
        match HistoryRow::from_gateway(item) {
            Ok(row) if row.is_after(mark) && row.resolved_at_ms >= floor_ms => rows.push(row),
            Ok(_) => reached_end = true,
            Err(e) => {
                let id = item.get("id").and_then(Value::as_str).unwrap_or("?");
                tracing::warn!(%id, error = %e, "unreadable approval history row skipped");
            }
        }
    }
    Page { rows, reached_end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A no-route row as openclaw 2026.9.6 records it (the e2e test's, ids shortened).
    fn no_route() -> Value {
        json!({
            "id": "6f1c2a9e-0000-4000-8000-000000000001",
            "status": "denied",
            "presentation": {
                "kind": "exec", "commandText": "touch /tmp/marker", "commandPreview": null,
                "warningText": null, "host": "gateway", "nodeId": null, "agentId": "main",
                "allowedDecisions": ["allow-once", "deny"]
            },
            "urlPath": "/approve/6f1c2a9e-0000-4000-8000-000000000001",
            "createdAtMs": 1_000, "expiresAtMs": 1_801_000, "resolvedAtMs": 1_002,
            "reason": "no-route", "decision": "deny",
            "source": {"agentId": "main", "sessionKey": "agent:main:e2e-1"},
            "resolver": {"kind": "system", "id": "no-approval-route"},
            "someFutureField": {"x": 1}
        })
    }

    fn row(v: Value) -> HistoryRow {
        HistoryRow::from_gateway(&v).unwrap()
    }

    fn with(mut v: Value, patch: Value) -> Value {
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn a_no_route_row_reads_as_a_denial_nobody_made() {
        let r = row(no_route());
        assert_eq!(r.kind, Kind::Exec);
        assert_eq!(r.status, HistoryStatus::Denied);
        assert_eq!(r.reason, HistoryReason::NoRoute);
        assert_eq!(r.decision, Some(Decision::Deny));
        assert_eq!(r.command, "touch /tmp/marker");
        assert_eq!(r.command_preview, None);
        assert_eq!(r.agent_id.as_deref(), Some("main"));
        assert_eq!(r.session_key.as_deref(), Some("agent:main:e2e-1"));
        assert_eq!(r.cron_job, None);
        assert_eq!(r.host.as_deref(), Some("gateway"));
        assert_eq!(
            r.allowed_decisions,
            vec![Decision::AllowOnce, Decision::Deny]
        );
        assert_eq!(
            (r.created_at_ms, r.expires_at_ms, r.resolved_at_ms),
            (1_000, Some(1_801_000), 1_002)
        );
        assert_eq!(
            r.resolver,
            Some(HistoryResolver {
                kind: "system".into(),
                id: Some("no-approval-route".into())
            })
        );
        assert!(!r.human_decided());
        assert_eq!(r.outcome(), Outcome::NoRoute { at_ms: 1_002 });
    }

    #[test]
    fn each_reason_maps_to_its_outcome_and_only_answers_count_as_decided() {
        let case = |patch: Value| {
            let r = row(with(no_route(), patch));
            (r.human_decided(), r.outcome())
        };
        let system = json!({"kind": "system"});
        assert_eq!(
            case(
                json!({"status": "expired", "reason": "timeout", "decision": null, "resolver": system})
            ),
            (false, Outcome::Expired { at_ms: 1_002 })
        );
        assert_eq!(
            case(json!({"status": "cancelled", "reason": "gateway-restart", "resolver": system})),
            (
                false,
                Outcome::Cancelled {
                    reason: CancelReason::GatewayRestart,
                    at_ms: 1_002
                }
            )
        );
        assert_eq!(
            case(json!({"status": "cancelled", "reason": "run-aborted", "resolver": system})),
            (
                false,
                Outcome::Cancelled {
                    reason: CancelReason::RunAborted,
                    at_ms: 1_002
                }
            )
        );
        assert_eq!(
            case(json!({"status": "expired", "reason": "timeout",
                "resolver": {"kind": "system", "id": "session-evicted"}})),
            (
                false,
                Outcome::Cancelled {
                    reason: CancelReason::SessionEvicted,
                    at_ms: 1_002
                }
            )
        );
        let by_device = json!({"kind": "device", "id": "ab12"});
        assert_eq!(
            case(
                json!({"status": "allowed", "reason": "user", "decision": "allow-once", "resolver": by_device})
            ),
            (
                true,
                Outcome::Decided {
                    decision: Decision::AllowOnce,
                    by: Decider::Elsewhere {
                        resolved_by: Some("ab12".into())
                    },
                    at_ms: 1_002
                }
            )
        );
        assert!(
            case(json!({"reason": "malformed-verdict", "resolver": by_device})).0,
            "a reviewer answered"
        );
        let (decided, outcome) = case(json!({"reason": "storage-corrupt", "resolver": system}));
        assert!(!decided);
        assert!(matches!(
            outcome,
            Outcome::Decided {
                decision: Decision::Deny,
                ..
            }
        ));
        assert_eq!(
            case(json!({"status": "cancelled", "reason": "moon-phase"})),
            (
                false,
                Outcome::Cancelled {
                    reason: CancelReason::Other,
                    at_ms: 1_002
                }
            ),
            "an unknown reason is reported, not hidden"
        );
    }

    #[test]
    fn cron_runs_are_known_by_their_session_key_or_their_standing_grant_scope() {
        let r = row(with(
            no_route(),
            json!({"source": {"agentId": "main", "sessionKey": "agent:main:cron:nightly-7:run:r1"}}),
        ));
        assert_eq!(r.cron_job.as_deref(), Some("nightly-7"));
        let mut v = no_route();
        v["source"] = json!({});
        v["presentation"]["scope"] =
            json!({"kind": "standing-grant", "automation": "backup", "command": "tar c"});
        let r = row(v);
        assert_eq!(r.cron_job.as_deref(), Some("backup"));
        assert_eq!(r.agent_id.as_deref(), Some("main"), "from the presentation");
        assert_eq!(cron_job_of("agent:main:main"), None);
        assert_eq!(cron_job_of("agent:main:cron:"), None);
    }

    #[test]
    fn plugin_rows_carry_their_title() {
        let r = row(json!({
            "id": "plugin:p1", "status": "denied", "reason": "no-route", "decision": "deny",
            "resolvedAtMs": 5,
            "presentation": {"kind": "plugin", "title": "Send mail", "description": "to bob",
                "severity": "warning", "allowedDecisions": ["allow-once", "deny"]}
        }));
        assert_eq!(r.kind, Kind::Plugin);
        assert_eq!(r.command, "Send mail");
        assert_eq!(r.description.as_deref(), Some("to bob"));
        assert_eq!(r.created_at_ms, 0);
        assert_eq!(r.expires_at_ms, None);
        assert_eq!(r.resolver, None);
    }

    #[test]
    fn a_row_without_what_orders_it_is_an_error_not_a_panic() {
        let mut v = no_route();
        v.as_object_mut().unwrap().remove("resolvedAtMs");
        assert_eq!(
            HistoryRow::from_gateway(&v),
            Err(HistoryError::Missing("resolvedAtMs"))
        );
        let v = with(no_route(), json!({"resolvedAtMs": "soon"}));
        assert!(matches!(
            HistoryRow::from_gateway(&v),
            Err(HistoryError::Unreadable {
                field: "resolvedAtMs",
                ..
            })
        ));
        let v = with(no_route(), json!({"decision": "maybe"}));
        assert!(HistoryRow::from_gateway(&v).is_err());
        for bad in [json!(null), json!([]), json!("x"), json!({"id": 3})] {
            assert!(HistoryRow::from_gateway(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_mark_orders_by_time_then_id_and_excludes_itself() {
        let at = |ms: i64, id: &str| row(with(no_route(), json!({"resolvedAtMs": ms, "id": id})));
        let mark = at(10, "b").mark();
        assert!(
            !at(10, "b").is_after(Some(&mark)),
            "the mark itself is taken"
        );
        assert!(!at(10, "a").is_after(Some(&mark)));
        assert!(
            at(10, "c").is_after(Some(&mark)),
            "same millisecond, later id"
        );
        assert!(at(11, "a").is_after(Some(&mark)));
        assert!(!at(9, "z").is_after(Some(&mark)));
        assert!(at(0, "a").is_after(None));
    }

    #[test]
    fn a_page_keeps_what_is_new_and_says_when_the_walk_is_over() {
        let at = |ms: i64, id: &str| with(no_route(), json!({"resolvedAtMs": ms, "id": id}));
        let items = [
            at(30, "c"),
            json!({"id": "broken"}),
            at(20, "b"),
            at(20, "a"),
            at(10, "x"),
        ];
        let ids = |p: &Page| p.rows.iter().map(|r| r.id.0.clone()).collect::<Vec<_>>();
        let mark = HistoryMark {
            resolved_at_ms: 20,
            id: "a".into(),
        };
        let p = take_page(&items, Some(&mark), 0);
        assert_eq!(
            (ids(&p), p.reached_end),
            (vec!["c".into(), "b".into()], true)
        );
        let p = take_page(&items, None, 20);
        assert_eq!(ids(&p), ["c", "b", "a"], "the floor is inclusive");
        assert!(p.reached_end);
        let p = take_page(&items, None, 0);
        assert_eq!((p.rows.len(), p.reached_end), (4, false));
    }
}
