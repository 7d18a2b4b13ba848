//! The end-to-end probe: a real, harmless approval raised through the gateway (a marked
//! no-op nobody runs), followed hop by hop — the gateway accepted it, each chat got its
//! prompt, an owner tapped, the gateway took the decision — and reported with each hop's
//! time and the first broken one named. A delivery-only probe stops after the prompts and
//! leaves the approval to expire at the gateway: the probe itself decides nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Core, Effect, Timer};
use crate::approval::{ApprovalId, Decider, Outcome, Responder};
use crate::channel::{ChannelError, Notice, ReplyTo, Target};
use crate::gateway::GatewayError;

/// Who asked for a probe, and so where its report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeBy {
    /// `approval-bridge probe`, through the HTTP listener; the number is its ticket.
    Cli(u64),
    /// `/probe` typed by an owner.
    Chat(ReplyTo),
    /// `[alerts] probe_every`.
    Schedule,
}

/// One hop of a probe: what, when (ms after the start), and whether it worked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    pub name: String,
    pub ok: bool,
    pub ms: Option<u64>,
    pub detail: Option<String>,
}

/// A probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub ok: bool,
    /// The first hop that did not work, when one did not.
    pub broken: Option<String>,
    pub approval: Option<String>,
    pub hops: Vec<Hop>,
}

impl ProbeReport {
    /// Plain text, a hop per line: `✅ gateway accepted · 12 ms`.
    pub fn text(&self) -> String {
        let mut s = match &self.broken {
            None => "Probe passed:".to_owned(),
            Some(hop) => format!("Probe FAILED at: {hop}"),
        };
        for h in &self.hops {
            let mark = if h.ok { "✅" } else { "❌" };
            s.push_str(&format!("\n{mark} {}", h.name));
            if let Some(ms) = h.ms {
                s.push_str(&format!(" · {ms} ms"));
            }
            if let Some(d) = &h.detail {
                s.push_str(&format!(" ({d})"));
            }
        }
        s
    }
}

/// How long a probe waits: for the prompts alone, and for an owner's tap.
const DELIVERY_WAIT: Duration = Duration::from_secs(60);
const TAP_WAIT: Duration = Duration::from_secs(180);
/// The probe approval's own life at the gateway: it expires there unanswered.
const DELIVERY_ONLY_LIFE_MS: u64 = 90_000;

#[derive(Debug)]
struct Probe {
    by: ProbeBy,
    marker: String,
    /// Waits for an owner's tap and the resolve; otherwise done once delivered.
    tap: bool,
    started: Instant,
    approval: Option<ApprovalId>,
    hops: Vec<Hop>,
    /// Targets whose delivery has not reported yet.
    waiting: Vec<Target>,
    tapped: bool,
}

#[derive(Debug, Default)]
pub(super) struct Probes {
    running: BTreeMap<u64, Probe>,
    next: u64,
    /// The scheduled probes have begun (the first runs once the link is first ready).
    scheduled: bool,
}

impl Core {
    /// The gateway link is ready: the first scheduled probe runs now, the next ones every
    /// `probe_every` (each delivery only; it decides nothing and waits for nobody).
    pub(super) fn start_scheduled_probes(&mut self) {
        if self.alerts.policy.probe_every.is_some() && !self.probes.scheduled {
            self.probes.scheduled = true;
            self.on_probe_due();
        }
    }

    pub(super) fn on_probe_due(&mut self) {
        let Some(every) = self.alerts.policy.probe_every else {
            return;
        };
        self.start_probe(ProbeBy::Schedule, false);
        self.later(every, Timer::ProbeDue);
    }

    /// Starts a probe; `tap`: wait for an owner to answer its prompt.
    pub(super) fn start_probe(&mut self, by: ProbeBy, tap: bool) {
        let n = self.probes.next;
        self.probes.next += 1;
        let marker = format!("approval-bridge probe {}-{n}", self.now.unix_ms);
        let command = format!("true # {marker}: a no-op nobody runs; answer it to test the path");
        let life_ms = if tap {
            TAP_WAIT.as_millis() as u64
        } else {
            DELIVERY_ONLY_LIFE_MS
        };
        let wait = if tap { TAP_WAIT } else { DELIVERY_WAIT };
        let waiting = self.channels.values().flat_map(|c| c.targets()).collect();
        self.probes.running.insert(
            n,
            Probe {
                by,
                marker,
                tap,
                started: self.now.at,
                approval: None,
                hops: Vec::new(),
                waiting,
                tapped: false,
            },
        );
        self.emit(Effect::RaiseProbe {
            probe: n,
            command,
            timeout_ms: life_ms,
        });
        self.later(wait, Timer::Probe(n));
    }

    fn hop(&mut self, n: u64, name: String, result: Result<(), String>) {
        let Some(p) = self.probes.running.get_mut(&n) else {
            return;
        };
        let ms = self.now.at.saturating_duration_since(p.started).as_millis() as u64;
        p.hops.push(Hop {
            name,
            ok: result.is_ok(),
            ms: Some(ms),
            detail: result.err(),
        });
    }

    pub(super) fn on_probe_raised(&mut self, n: u64, result: Result<ApprovalId, GatewayError>) {
        match result {
            Ok(id) => {
                if let Some(p) = self.probes.running.get_mut(&n) {
                    p.approval = Some(id);
                }
                self.hop(n, "gateway accepted the request".into(), Ok(()));
            }
            Err(e) => {
                self.hop(n, "gateway accepted the request".into(), Err(e.to_string()));
                self.end_probe(n);
            }
        }
    }

    /// The probe an approval belongs to, known by its id or by the marker in its command
    /// (its `requested` event may come before the request's answer).
    fn probe_of(&mut self, id: &ApprovalId) -> Option<u64> {
        let command = self.approvals.get(id).map(|e| e.approval.command.clone());
        let (n, p) = self.probes.running.iter_mut().find(|(_, p)| {
            p.approval.as_ref() == Some(id)
                || command.as_deref().is_some_and(|c| c.contains(&p.marker))
        })?;
        p.approval.get_or_insert_with(|| id.clone());
        Some(*n)
    }

    /// A delivery of `ids` to `target` reported back.
    pub(super) fn probe_delivered(
        &mut self,
        target: &Target,
        ids: &[ApprovalId],
        err: Option<&ChannelError>,
    ) {
        for id in ids {
            let Some(n) = self.probe_of(id) else {
                continue;
            };
            if err.is_some_and(ChannelError::is_transient) {
                continue; // retried
            }
            let result = err.map_or(Ok(()), |e| Err(e.to_string()));
            self.hop(n, format!("prompt delivered to {target}"), result);
            let p = self.probes.running.get_mut(&n).expect("found above");
            p.waiting.retain(|t| t != target);
            if p.waiting.is_empty() && !p.tap {
                self.end_probe(n);
            }
        }
    }

    /// An owner's answer to a probe passed every check and goes to the gateway.
    pub(super) fn probe_tapped(&mut self, id: &ApprovalId, who: &Responder) {
        let Some(n) = self.probe_of(id) else {
            return;
        };
        if let Some(p) = self.probes.running.get_mut(&n)
            && !p.tapped
        {
            p.tapped = true;
            self.hop(
                n,
                format!("owner's tap received ({who} via {})", who.channel),
                Ok(()),
            );
        }
    }

    /// A probe's approval ended: decided through us is the last hop; anything else
    /// (expired, decided elsewhere) means the tap never made it.
    pub(super) fn probe_ended(&mut self, id: &ApprovalId, outcome: &Outcome) {
        let Some(n) = self.probe_of(id) else {
            return;
        };
        let result = match outcome {
            Outcome::Decided {
                by: Decider::Responder(_),
                ..
            } => Ok(()),
            other => Err(other.summary()),
        };
        if self.probes.running.get(&n).is_some_and(|p| p.tap) {
            self.hop(n, "resolved at the gateway".into(), result);
            self.end_probe(n);
        }
    }

    pub(super) fn on_probe_timer(&mut self, n: u64) {
        if let Some(p) = self.probes.running.get(&n) {
            let waited = self.now.at.saturating_duration_since(p.started);
            let missing = match (&p.approval, p.waiting.first(), p.tapped) {
                (None, _, _) => "gateway accepted the request".to_owned(),
                (Some(_), Some(t), _) => format!("prompt delivered to {t}"),
                (Some(_), None, false) => "owner's tap received".to_owned(),
                (Some(_), None, true) => "resolved at the gateway".to_owned(),
            };
            let detail = format!("nothing within {} s", waited.as_secs());
            let p = self.probes.running.get_mut(&n).expect("found above");
            p.hops.push(Hop {
                name: missing,
                ok: false,
                ms: None,
                detail: Some(detail),
            });
            self.end_probe(n);
        }
    }

    /// Reports a probe to whoever asked and forgets it.
    fn end_probe(&mut self, n: u64) {
        let Some(p) = self.probes.running.remove(&n) else {
            return;
        };
        let broken = p.hops.iter().find(|h| !h.ok).map(|h| h.name.clone());
        let report = ProbeReport {
            ok: broken.is_none(),
            broken,
            approval: p.approval.map(|a| a.0),
            hops: p.hops,
        };
        match &report.broken {
            None => tracing::info!(hops = report.hops.len(), "probe passed"),
            Some(hop) => tracing::warn!(%hop, "probe failed"),
        }
        match p.by {
            ProbeBy::Chat(to) => self.notify(&to, Notice::Probe(report)),
            ProbeBy::Schedule => self.on_scheduled_probe(report.hops.iter().find(|h| !h.ok)),
            ProbeBy::Cli(ticket) => self.emit(Effect::ProbeDone { ticket, report }),
        }
    }
}
