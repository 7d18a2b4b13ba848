//! Lifecycle events as types and the metrics they bump. Each `Event` is emitted once: one
//! key/value `tracing` event, one audit record, one metric. `/metrics` renders the registry.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::approval::{
    Approval, ApprovalId, Choice, Decider, Decision, Kind, Outcome, Responder, now_ms,
};
use crate::channel::{Refusal, Target};
use crate::grant::{Grant, GrantId};
use crate::store::{AuditRecord, Store, StoreError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabel {
    kind: String,
    outcome: String,
    by: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PromptLabel {
    channel: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
    .into_iter()
}

/// The bridge's Prometheus metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    requested: Family<KindLabel, Counter>,
    ended: Family<EndLabel, Counter>,
    prompts: Family<PromptLabel, Counter>,
    posts: Family<PromptLabel, Counter>,
    missed: Family<KindLabel, Counter>,
    answers: Family<ChannelLabel, Counter>,
    refusals: Family<ReasonLabel, Counter>,
    grants: Family<ReasonLabel, Counter>,
    delivery_seconds: Family<ChannelLabel, Histogram>,
    resolve_seconds: Histogram,
    overhead_seconds: Family<PathLabel, Histogram>,
    pub pending: Gauge,
    pub gateway_up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("approval_bridge");
        let m = Metrics {
            requested: Family::default(),
            ended: Family::default(),
            prompts: Family::default(),
            posts: Family::default(),
            missed: Family::default(),
            answers: Family::default(),
            refusals: Family::default(),
            grants: Family::default(),
            delivery_seconds: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            resolve_seconds: Histogram::new(latency_buckets()),
            // 1 µs to about 0.5 s.
            overhead_seconds: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    1e-6, 2.0, 20,
                ))
            }),
            pending: Gauge::default(),
            gateway_up: Gauge::default(),
            registry: Mutex::new(Registry::default()),
        };
        registry.register(
            "approvals_requested",
            "Approvals seen, by kind",
            m.requested.clone(),
        );
        registry.register(
            "approvals_ended",
            "Approvals ended, by kind, outcome and where decided",
            m.ended.clone(),
        );
        registry.register(
            "prompts",
            "Prompts sent, by channel and result",
            m.prompts.clone(),
        );
        registry.register(
            "approvals_missed",
            "Approvals that ended at the gateway without a human and without a prompt of the bridge, by kind",
            m.missed.clone(),
        );
        registry.register(
            "bulletins",
            "Bulletins (alerts, recovery lines) posted, by channel and result",
            m.posts.clone(),
        );
        registry.register("answers", "Answers received, by channel", m.answers.clone());
        registry.register("refusals", "Answers refused, by reason", m.refusals.clone());
        registry.register(
            "grants",
            "Time-boxed grants created, used and revoked (reason)",
            m.grants.clone(),
        );
        registry.register(
            "delivery_seconds",
            "Time from approval requested (seen) to prompt delivered",
            m.delivery_seconds.clone(),
        );
        registry.register(
            "resolve_seconds",
            "Time from an answer to the gateway's acknowledgement",
            m.resolve_seconds.clone(),
        );
        registry.register(
            "overhead_seconds",
            "The bridge's own time on the hot paths: path=prompt from an approval event to the channel's send, path=resolve from an answer to the gateway call",
            m.overhead_seconds.clone(),
        );
        registry.register(
            "pending_approvals",
            "Approvals pending now",
            m.pending.clone(),
        );
        registry.register(
            "gateway_connected",
            "1 while the gateway link is up",
            m.gateway_up.clone(),
        );
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = registry;
        m
    }
}

impl Metrics {
    /// Records the bridge's own time on a hot path (`prompt` or `resolve`).
    pub fn overhead(&self, path: &'static str, took: std::time::Duration) {
        self.overhead_seconds
            .get_or_create(&PathLabel { path })
            .observe(took.as_secs_f64());
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

/// Everything that happens to an approval, as the engine sees it. The core produces them
/// as effects; the runner emits each once.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Requested {
        approval: Approval,
    },
    Delivered {
        id: ApprovalId,
        target: Target,
        message: String,
        after: Duration,
    },
    DeliveryFailed {
        id: ApprovalId,
        target: Target,
        error: String,
        will_retry: bool,
    },
    Answered {
        id: Option<ApprovalId>,
        responder: Responder,
        decision: Option<Choice>,
    },
    Refused {
        id: Option<ApprovalId>,
        responder: Responder,
        reason: Refusal,
        raw: Option<String>,
    },
    Resolved {
        id: ApprovalId,
        responder: Responder,
        decision: Decision,
        after: Duration,
    },
    ResolveFailed {
        id: ApprovalId,
        responder: Responder,
        error: String,
    },
    Ended {
        id: ApprovalId,
        kind: Kind,
        outcome: Outcome,
    },
    Finished {
        id: ApprovalId,
        target: Target,
        note: &'static str,
    },
    /// An approval ended at the gateway without a human and without a prompt of ours.
    Missed {
        row: crate::history::HistoryRow,
    },
    /// A bulletin (an alert, a recovery line) was posted to `target`, or could not be.
    Posted {
        /// The problem kind (`gateway_down`, `channel_down:telegram`, ...).
        kind: String,
        target: Target,
        text: String,
        /// The message id, or why it could not be posted.
        result: Result<String, String>,
    },
    /// An owner allowed a request for a time: `grant` now allows exactly it again.
    GrantCreated {
        grant: Grant,
    },
    /// The bridge is about to allow approval `id` under `grant` on its owner's behalf
    /// (written before the resolve, as an `answered` record is).
    GrantUsed {
        grant: GrantId,
        id: ApprovalId,
        owner: Responder,
        until_ms: i64,
    },
    /// `by` ended `grant` before its time.
    GrantRevoked {
        grant: GrantId,
        by: Responder,
    },
}

impl Event {
    /// Logs, audits and counts the event. A failing audit write is logged (and shows on
    /// `/healthz` through [`Store::fault`]); callers that must not act on an unrecorded
    /// event use [`Event::try_emit`].
    pub fn emit(&self, store: &dyn Store, metrics: &Metrics) {
        let _ = self.try_emit(store, metrics);
    }

    /// As [`Event::emit`], returning whether the audit record was written.
    pub fn try_emit(&self, store: &dyn Store, metrics: &Metrics) -> Result<(), StoreError> {
        self.observe(metrics);
        let rec = self.record();
        store.audit(&rec).inspect_err(|e| {
            tracing::error!(error = %e, event = rec.event, "audit write failed");
        })
    }

    /// Logs and counts the event without auditing it: for callers that write the audit
    /// record themselves, in one transaction with the state change it describes.
    pub fn observe(&self, metrics: &Metrics) {
        match self {
            Event::Requested { approval } => {
                metrics
                    .requested
                    .get_or_create(&KindLabel {
                        kind: approval.kind.as_str().into(),
                    })
                    .inc();
                tracing::info!(event = "requested", id = %approval.id, kind = approval.kind.as_str(), command = %approval.command, "approval requested");
            }
            Event::Delivered {
                id,
                target,
                message,
                after,
            } => {
                metrics
                    .prompts
                    .get_or_create(&PromptLabel {
                        channel: target.channel.clone(),
                        result: "delivered".into(),
                    })
                    .inc();
                metrics
                    .delivery_seconds
                    .get_or_create(&ChannelLabel {
                        channel: target.channel.clone(),
                    })
                    .observe(after.as_secs_f64());
                tracing::info!(event = "delivered", %id, %target, message, ms = after.as_millis() as u64, "prompt delivered");
            }
            Event::DeliveryFailed {
                id,
                target,
                error,
                will_retry,
            } => {
                metrics
                    .prompts
                    .get_or_create(&PromptLabel {
                        channel: target.channel.clone(),
                        result: "failed".into(),
                    })
                    .inc();
                tracing::warn!(event = "delivery_failed", %id, %target, error, will_retry, "prompt not delivered");
            }
            Event::Answered {
                id,
                responder,
                decision,
            } => {
                metrics
                    .answers
                    .get_or_create(&ChannelLabel {
                        channel: responder.channel.clone(),
                    })
                    .inc();
                tracing::info!(event = "answered", id = id.as_ref().map(|i| i.as_str()), channel = %responder.channel, user = %responder.user_id, decision = decision.map(|c| c.token()), "answer received");
            }
            Event::Refused {
                id,
                responder,
                reason,
                ..
            } => {
                metrics
                    .refusals
                    .get_or_create(&ReasonLabel {
                        reason: reason.key().into(),
                    })
                    .inc();
                tracing::warn!(event = "refused", id = id.as_ref().map(|i| i.as_str()), channel = %responder.channel, user = %responder.user_id, reason = reason.key(), "answer refused");
            }
            Event::Resolved {
                id,
                responder,
                decision,
                after,
            } => {
                metrics.resolve_seconds.observe(after.as_secs_f64());
                tracing::info!(event = "resolved", %id, channel = %responder.channel, user = %responder.user_id, decision = decision.as_str(), ms = after.as_millis() as u64, "approval resolved");
            }
            Event::ResolveFailed {
                id,
                responder,
                error,
            } => {
                tracing::warn!(event = "resolve_failed", %id, user = %responder.user_id, error, "resolve failed; approval left pending");
            }
            Event::Ended { id, kind, outcome } => {
                let (o, by) = outcome_labels(outcome);
                metrics
                    .ended
                    .get_or_create(&EndLabel {
                        kind: kind.as_str().into(),
                        outcome: o.into(),
                        by: by.into(),
                    })
                    .inc();
                tracing::info!(event = "ended", %id, outcome = o, by, summary = %outcome.summary(), "approval ended");
            }
            Event::Finished { id, target, note } => {
                tracing::debug!(event = "finished", %id, %target, note, "prompt shows the outcome");
            }
            Event::Missed { row } => {
                metrics
                    .missed
                    .get_or_create(&KindLabel {
                        kind: row.kind.as_str().into(),
                    })
                    .inc();
                tracing::warn!(event = "missed", id = %row.id, command = %row.command, agent = row.agent_id.as_deref(), cron_job = row.cron_job.as_deref(), outcome = %row.outcome().summary(), "approval ended without reaching anyone");
            }
            Event::Posted {
                kind,
                target,
                result,
                ..
            } => {
                metrics
                    .posts
                    .get_or_create(&PromptLabel {
                        channel: target.channel.clone(),
                        result: if result.is_ok() { "posted" } else { "failed" }.into(),
                    })
                    .inc();
                match result {
                    Ok(message) => {
                        tracing::info!(event = "posted", kind, %target, message, "bulletin posted")
                    }
                    Err(error) => {
                        tracing::warn!(event = "post_failed", kind, %target, error, "bulletin not posted")
                    }
                }
            }
            Event::GrantCreated { grant } => {
                metrics
                    .grants
                    .get_or_create(&ReasonLabel {
                        reason: "created".into(),
                    })
                    .inc();
                tracing::info!(event = "grant_created", grant = %grant.id, id = %grant.minted_by, channel = %grant.by.channel, user = %grant.by.user_id, minutes = grant.window.as_minutes(), until_ms = grant.until_ms, command = %grant.scope.command, "time-boxed grant created");
            }
            Event::GrantUsed {
                grant,
                id,
                owner,
                until_ms,
            } => {
                metrics
                    .grants
                    .get_or_create(&ReasonLabel {
                        reason: "used".into(),
                    })
                    .inc();
                tracing::info!(event = "grant_used", %grant, %id, channel = %owner.channel, user = %owner.user_id, until_ms, "allowing under a time-boxed grant");
            }
            Event::GrantRevoked { grant, by } => {
                metrics
                    .grants
                    .get_or_create(&ReasonLabel {
                        reason: "revoked".into(),
                    })
                    .inc();
                tracing::info!(event = "grant_revoked", %grant, channel = %by.channel, user = %by.user_id, "time-boxed grant revoked");
            }
        }
    }

    /// The audit record of this event.
    pub fn record(&self) -> AuditRecord {
        let (event, id, channel, actor, detail) = match self {
            Event::Requested { approval } => (
                "requested",
                Some(approval.id.to_string()),
                None,
                None,
                json!({"kind": approval.kind, "command": approval.command, "allowed": approval.allowed_decisions}),
            ),
            Event::Delivered {
                id,
                target,
                message,
                after,
            } => (
                "delivered",
                Some(id.to_string()),
                Some(target.channel.clone()),
                None,
                json!({"chat": target.chat, "message": message, "ms": after.as_millis() as u64}),
            ),
            Event::DeliveryFailed {
                id,
                target,
                error,
                will_retry,
            } => (
                "delivery_failed",
                Some(id.to_string()),
                Some(target.channel.clone()),
                None,
                json!({"chat": target.chat, "error": error, "will_retry": will_retry}),
            ),
            Event::Answered {
                id,
                responder,
                decision,
            } => (
                "answered",
                id.as_ref().map(|i| i.to_string()),
                Some(responder.channel.clone()),
                Some(responder.user_id.clone()),
                json!({"decision": decision.map(|c| c.token()), "display": responder.display}),
            ),
            Event::Refused {
                id,
                responder,
                reason,
                raw,
            } => (
                "refused",
                id.as_ref().map(|i| i.to_string()),
                Some(responder.channel.clone()),
                Some(responder.user_id.clone()),
                json!({"reason": reason.key(), "raw": raw, "display": responder.display}),
            ),
            Event::Resolved {
                id,
                responder,
                decision,
                after,
            } => (
                "resolved",
                Some(id.to_string()),
                Some(responder.channel.clone()),
                Some(responder.user_id.clone()),
                json!({"decision": decision, "ms": after.as_millis() as u64}),
            ),
            Event::ResolveFailed {
                id,
                responder,
                error,
            } => (
                "resolve_failed",
                Some(id.to_string()),
                Some(responder.channel.clone()),
                Some(responder.user_id.clone()),
                json!({"error": error}),
            ),
            Event::Ended { outcome, id, .. } => (
                "ended",
                Some(id.to_string()),
                None,
                None,
                serde_json::to_value(outcome).unwrap_or_default(),
            ),
            Event::Finished { id, target, note } => (
                "finished",
                Some(id.to_string()),
                Some(target.channel.clone()),
                None,
                json!({"chat": target.chat, "note": note}),
            ),
            Event::Missed { row } => (
                "missed",
                Some(row.id.to_string()),
                None,
                None,
                json!({"kind": row.kind, "command": row.command, "agent": row.agent_id,
                    "cron_job": row.cron_job, "outcome": row.outcome(),
                    "created_at_ms": row.created_at_ms, "resolved_at_ms": row.resolved_at_ms}),
            ),
            Event::Posted {
                kind,
                target,
                text,
                result,
            } => (
                "posted",
                None,
                Some(target.channel.clone()),
                None,
                match result {
                    Ok(message) => {
                        json!({"kind": kind, "chat": target.chat, "message": message, "text": text})
                    }
                    Err(error) => {
                        json!({"kind": kind, "chat": target.chat, "error": error, "text": text})
                    }
                },
            ),
            Event::GrantCreated { grant } => (
                "grant_created",
                Some(grant.minted_by.to_string()),
                Some(grant.by.channel.clone()),
                Some(grant.by.user_id.clone()),
                json!({"grant": grant.id, "scope": grant.scope, "minutes": grant.window.as_minutes(),
                    "from_ms": grant.from_ms, "until_ms": grant.until_ms, "display": grant.by.display}),
            ),
            Event::GrantUsed {
                grant,
                id,
                owner,
                until_ms,
            } => (
                "grant_used",
                Some(id.to_string()),
                Some(owner.channel.clone()),
                Some(owner.user_id.clone()),
                json!({"grant": grant, "until_ms": until_ms,
                    "note": format!("allowed by grant {grant} of {owner} until {}", crate::time::utc(*until_ms))}),
            ),
            Event::GrantRevoked { grant, by } => (
                "grant_revoked",
                None,
                Some(by.channel.clone()),
                Some(by.user_id.clone()),
                json!({"grant": grant, "display": by.display}),
            ),
        };
        AuditRecord {
            at_ms: now_ms(),
            approval_id: id,
            event: event.into(),
            channel,
            actor,
            detail,
        }
    }
}

fn outcome_labels(o: &Outcome) -> (&'static str, &'static str) {
    match o {
        Outcome::Decided {
            decision,
            by: Decider::Responder(_),
            ..
        } => (decision.as_str(), "bridge"),
        Outcome::Decided {
            decision,
            by: Decider::Elsewhere { .. },
            ..
        } => (decision.as_str(), "elsewhere"),
        Outcome::Decided {
            decision,
            by: Decider::Grant { .. },
            ..
        } => (decision.as_str(), "grant"),
        Outcome::Expired { .. } => ("expired", "gateway"),
        Outcome::Gone { .. } => ("gone", "gateway"),
        Outcome::NoRoute { .. } => ("no-route", "gateway"),
        Outcome::Cancelled { .. } => ("cancelled", "gateway"),
    }
}
