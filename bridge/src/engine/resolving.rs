//! Answers, from arrival to the gateway's verdict: one resolve per approval at a time,
//! and the answers that wait behind it (held until their prompt's delivery is recorded,
//! queued behind a resolve in flight, waiting to learn an outcome that is on its way).
//! `policy::authorize` judges every decision here, after its `answered` record is written.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::lifecycle::PromptState;
use super::{Core, Effect, ProbeBy};
use crate::approval::{ApprovalId, Decider, Decision, Outcome, Responder};
use crate::channel::{Answer, Notice, Refusal, ReplyTo, Request, Target, Via};
use crate::gateway::GatewayError;
use crate::policy::{self, Facts};
use crate::telemetry::Event;

/// What waits on one approval's answers.
#[derive(Debug, Default)]
struct Waiting {
    /// Decisions sent to the gateway and not yet answered, first first.
    in_flight: Vec<(Responder, Decision)>,
    /// Presses on a prompt whose delivery has not reported back yet: the message is
    /// already visible to the owner. Judged once the delivery is recorded.
    held: Vec<Answer>,
    /// Responders to tell the outcome once it is known (their resolve lost a race).
    told_later: Vec<ReplyTo>,
    /// Answers from allowed responders that arrived while a resolve was in flight;
    /// judged again once it reports back.
    queued: Vec<Answer>,
}

/// Answers a shutdown cut off: sent to the gateway without a reply, or never sent.
#[derive(Debug, Default)]
pub(super) struct CutOff {
    pub sent: Vec<(ApprovalId, Responder, Decision)>,
    pub unsent: Vec<(ApprovalId, Responder)>,
}

#[derive(Debug, Default)]
pub(super) struct Resolving {
    by_id: HashMap<ApprovalId, Waiting>,
}

impl Resolving {
    fn of(&mut self, id: &ApprovalId) -> &mut Waiting {
        self.by_id.entry(id.clone()).or_default()
    }

    /// A resolve of `id` is in flight.
    pub(super) fn busy(&self, id: &ApprovalId) -> bool {
        self.by_id.get(id).is_some_and(|w| !w.in_flight.is_empty())
    }

    /// Who asked the gateway for `decision` on `id`, first first, if anyone is waiting for
    /// that answer: the gateway's echo of our own resolve is credited to them.
    pub(super) fn asked_for(&self, id: &ApprovalId, decision: Decision) -> Option<Responder> {
        let w = self.by_id.get(id)?;
        w.in_flight
            .iter()
            .find(|(_, d)| *d == decision)
            .map(|(r, _)| r.clone())
    }

    /// Responders waiting to learn how `id` ended.
    pub(super) fn take_waiting(&mut self, id: &ApprovalId) -> Vec<ReplyTo> {
        self.by_id
            .get_mut(id)
            .map(|w| std::mem::take(&mut w.told_later))
            .unwrap_or_default()
    }

    /// The held presses on `id`'s prompt in `target`, taken out to be judged.
    pub(super) fn release_held(&mut self, id: &ApprovalId, target: &Target) -> Vec<Answer> {
        let Some(w) = self.by_id.get_mut(id) else {
            return Vec::new();
        };
        let (now, later) = std::mem::take(&mut w.held)
            .into_iter()
            .partition(|a| matches!(&a.via, Via::Prompt(m) if m.target == *target));
        w.held = later;
        now
    }

    pub(super) fn forget(&mut self, id: &ApprovalId) {
        self.by_id.remove(id);
    }

    /// What a shutdown cuts off, by approval: the decisions still in flight, and the
    /// responders of answers still waiting to be sent (held or queued).
    pub(super) fn cut_off(&self) -> CutOff {
        let mut ids: Vec<&ApprovalId> = self.by_id.keys().collect();
        ids.sort();
        let mut cut = CutOff::default();
        for id in ids {
            let w = &self.by_id[id];
            for (r, d) in &w.in_flight {
                cut.sent.push((id.clone(), r.clone(), *d));
            }
            for a in w.held.iter().chain(&w.queued) {
                cut.unsent.push((id.clone(), a.responder.clone()));
            }
        }
        cut
    }
}

impl Core {
    fn allows(&self, who: &Responder) -> bool {
        self.channels
            .get(&who.channel)
            .is_some_and(|c| c.allows(&who.user_id))
    }

    /// Audits a command that decides nothing (`/pending`, `/missed`, `/probe`) and whether
    /// it may run: only an owner's, only in a DM; a refusal is told.
    fn owner_command(&mut self, answer: &Answer, allowed: bool) -> bool {
        self.event(Event::Answered {
            id: None,
            responder: answer.responder.clone(),
            decision: None,
        });
        let refusal = if !allowed {
            Refusal::NotAllowed
        } else if !answer.in_dm {
            Refusal::NotDirectMessage
        } else {
            return true;
        };
        self.refuse(answer, None, refusal);
        false
    }

    pub(super) fn on_answer(&mut self, answer: Answer) {
        let allowed = self.allows(&answer.responder);
        match answer.request.clone() {
            Request::ListPending => {
                if self.owner_command(&answer, allowed) {
                    let list = self.approvals.pending_list();
                    self.notify(&answer.reply, Notice::Pending(list));
                }
            }
            Request::ListMissed => {
                if self.owner_command(&answer, allowed) {
                    let list = self.missed_list();
                    self.notify(&answer.reply, Notice::Missed(list));
                }
            }
            Request::Probe => {
                if self.owner_command(&answer, allowed) {
                    self.start_probe(ProbeBy::Chat(answer.reply.clone()), true);
                }
            }
            Request::Malformed { raw, .. } => {
                let reason = if allowed {
                    Refusal::Malformed
                } else {
                    Refusal::NotAllowed
                };
                self.event(Event::Refused {
                    id: None,
                    responder: answer.responder.clone(),
                    reason,
                    raw: Some(raw),
                });
                self.notify(&answer.reply, Notice::Refused(reason));
            }
            // Fail closed: nothing is decided before the answer is in the audit log.
            Request::Decide { .. } => {
                let received = self.now.at;
                self.emit(Effect::RecordAnswer { answer, received });
            }
        }
    }

    pub(super) fn on_answer_recorded(
        &mut self,
        answer: Answer,
        received: Instant,
        result: Result<(), String>,
    ) {
        match result {
            Ok(()) => self.on_decide(answer, received),
            Err(e) => {
                let id = decide_id(&answer);
                tracing::error!(id = id.map(|i| i.as_str()), user = %answer.responder.user_id, error = %e,
                    "cannot record the answer in the database (disk full or read-only?); refusing it, the approval stays pending");
                self.refuse(&answer, id.cloned().as_ref(), Refusal::StoreUnavailable)
            }
        }
    }

    pub(super) fn on_outcome_looked(
        &mut self,
        answer: Answer,
        received: Instant,
        outcome: Option<Outcome>,
    ) {
        match (decide_id(&answer).cloned(), outcome) {
            (Some(id), Some(outcome)) => {
                self.notify(&answer.reply, Notice::AlreadyFinished { id, outcome })
            }
            _ => self.judge(answer, received),
        }
    }

    /// A recorded answer to decide. `received`: when the engine got it (the bridge's own
    /// time starts there).
    fn on_decide(&mut self, answer: Answer, received: Instant) {
        let Some(id) = decide_id(&answer).cloned() else {
            return;
        };
        // An allowed responder pressing on a finished approval learns the canonical
        // outcome; the prompt is never degraded.
        if self.allows(&answer.responder) {
            if !self.approvals.contains(&id) {
                return self.emit(Effect::LookupOutcome { answer, received });
            }
            if let Some(outcome) = self.approvals.outcome(&id).cloned() {
                return self.notify(&answer.reply, Notice::AlreadyFinished { id, outcome });
            }
        }
        self.judge(answer, received)
    }

    /// Holds, queues, refuses or resolves an answer to decide a held (or unknown) approval.
    fn judge(&mut self, answer: Answer, received: Instant) {
        let Request::Decide {
            id,
            decision,
            kind: claimed,
        } = answer.request.clone()
        else {
            return;
        };
        if let Via::Prompt(msg) = &answer.via
            && self.approvals.prompt(&id, &msg.target) == Some(&PromptState::Delivering)
        {
            return self.resolving.of(&id).held.push(answer);
        }
        let allowed = self.allows(&answer.responder);
        // One resolve per approval at a time. The gateway answers a repeated resolve of the
        // same approval (a double tap) with another success, so a second answer waits for
        // the first one's result and is judged again then: it learns the outcome, or gets
        // its own try if nothing was decided.
        if allowed && self.resolving.busy(&id) {
            return self.resolving.of(&id).queued.push(answer);
        }
        let entry = self.approvals.get(&id);
        let our_prompts = self.approvals.prompt_messages(&id);
        let facts = Facts {
            allowed,
            in_dm: answer.in_dm,
            pending: entry.map(|e| &e.approval),
            via: &answer.via,
            our_prompts: &our_prompts,
            decision,
            kind: claimed,
        };
        if let Err(reason) = policy::authorize(&facts) {
            return self.refuse(&answer, Some(&id), reason);
        }
        let Some(kind) = entry.map(|e| e.approval.kind) else {
            return;
        };
        self.resolving
            .of(&id)
            .in_flight
            .push((answer.responder.clone(), decision));
        self.inflight += 1;
        self.probe_tapped(&id, &answer.responder);
        self.emit(Effect::Resolve {
            answer,
            id,
            kind,
            decision,
            received,
        });
    }

    /// Judges the presses held while the delivery to `target` was in flight.
    pub(super) fn release_held(&mut self, id: &ApprovalId, target: &Target) {
        for answer in self.resolving.release_held(id, target) {
            let received = self.now.at;
            self.on_decide(answer, received);
        }
    }

    pub(super) fn on_resolve_done(
        &mut self,
        answer: Answer,
        id: ApprovalId,
        decision: Decision,
        result: Result<(), GatewayError>,
        took: Duration,
    ) {
        let responder = answer.responder.clone();
        let mine = |(r, d): &(Responder, Decision)| *r == responder && *d == decision;
        let w = self.resolving.of(&id);
        let pos = w.in_flight.iter().position(mine);
        // A success stays in flight until the outcome is set (the entry must not be
        // forgotten before the responder is told); a failure leaves at once.
        if result.is_err()
            && let Some(pos) = pos
        {
            w.in_flight.remove(pos);
        }
        match result {
            Ok(()) => {
                self.event(Event::Resolved {
                    id: id.clone(),
                    responder: responder.clone(),
                    decision,
                    after: took,
                });
                let outcome = Outcome::Decided {
                    decision,
                    by: Decider::Responder(responder.clone()),
                    at_ms: self.now.unix_ms,
                };
                self.set_outcome(&id, outcome);
                self.resolving.of(&id).in_flight.retain(|e| !mine(e));
                // The canonical outcome may differ if another answer won the race.
                let notice = match self.approvals.outcome(&id).cloned() {
                    Some(Outcome::Decided {
                        decision: d,
                        by: Decider::Responder(r),
                        ..
                    }) if d == decision && r == responder => Notice::Accepted {
                        id: id.clone(),
                        decision,
                    },
                    Some(outcome) => Notice::AlreadyFinished {
                        id: id.clone(),
                        outcome,
                    },
                    None => Notice::Accepted {
                        id: id.clone(),
                        decision,
                    },
                };
                self.after_resolve(&id, |core| {
                    core.notify(&answer.reply, notice);
                });
            }
            Err(err @ (GatewayError::NotFound | GatewayError::AlreadyResolved)) => {
                // Terminal: someone else won, or the gateway forgot it. Never retried.
                self.event(Event::ResolveFailed {
                    id: id.clone(),
                    responder,
                    error: err.to_string(),
                });
                let known = self.approvals.outcome(&id).cloned();
                let others_resolving = self.resolving.busy(&id);
                self.after_resolve(&id, |core| match known {
                    Some(outcome) => core.notify(
                        &answer.reply,
                        Notice::AlreadyFinished {
                            id: id.clone(),
                            outcome,
                        },
                    ),
                    None if err == GatewayError::NotFound && !others_resolving => {
                        let outcome = Outcome::Gone {
                            at_ms: core.now.unix_ms,
                        };
                        core.set_outcome(&id, outcome.clone());
                        let notice = Notice::AlreadyFinished {
                            id: id.clone(),
                            outcome,
                        };
                        core.notify(&answer.reply, notice);
                    }
                    // The resolved event with the canonical outcome is on its way.
                    None => core.resolving.of(&id).told_later.push(answer.reply.clone()),
                });
            }
            Err(err @ GatewayError::Rejected { .. }) => {
                self.event(Event::ResolveFailed {
                    id: id.clone(),
                    responder,
                    error: err.to_string(),
                });
                self.notify(&answer.reply, Notice::Refused(Refusal::GatewayRejected));
                self.after_resolve(&id, |_| {});
            }
            Err(err @ GatewayError::Unavailable(_)) => {
                // Nothing was decided: the approval stays pending, the responder may retry.
                self.event(Event::ResolveFailed {
                    id: id.clone(),
                    responder,
                    error: err.to_string(),
                });
                self.notify(&answer.reply, Notice::Refused(Refusal::GatewayUnavailable));
                self.after_resolve(&id, |_| {});
            }
        }
    }

    /// Ends a resolve's report: `tell` (the responder learns what became of it), then the
    /// approval may be forgotten, then the answers queued behind the resolve are judged
    /// again once none is in flight.
    fn after_resolve(&mut self, id: &ApprovalId, tell: impl FnOnce(&mut Core)) {
        let queued = if self.resolving.busy(id) {
            Vec::new()
        } else {
            std::mem::take(&mut self.resolving.of(id).queued)
        };
        tell(self);
        self.forget_if_done(id);
        for answer in queued {
            let received = self.now.at;
            self.on_decide(answer, received);
        }
    }

    fn refuse(&mut self, answer: &Answer, id: Option<&ApprovalId>, reason: Refusal) {
        self.event(Event::Refused {
            id: id.cloned(),
            responder: answer.responder.clone(),
            reason,
            raw: None,
        });
        self.notify(&answer.reply, Notice::Refused(reason));
    }
}

/// The approval an answer to decide names.
fn decide_id(answer: &Answer) -> Option<&ApprovalId> {
    match &answer.request {
        Request::Decide { id, .. } => Some(id),
        _ => None,
    }
}
