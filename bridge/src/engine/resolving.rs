//! Answers, from arrival to the gateway's verdict: one resolve per approval at a time,
//! and the answers that wait behind it (held until their prompt's delivery is recorded,
//! queued behind a resolve in flight, waiting to learn an outcome that is on its way).
//! `policy::authorize` judges every decision here, after its `answered` record is written.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::lifecycle::PromptState;
use super::{Asker, Core, Effect, ProbeBy};
use crate::approval::{ApprovalId, Choice, Decider, Decision, Kind, Outcome, Responder};
use crate::channel::{Answer, Notice, Refusal, ReplyTo, Request, Target, Via};
use crate::gateway::GatewayError;
use crate::policy::{self, Facts};
use crate::telemetry::Event;

/// What waits on one approval's answers.
#[derive(Debug, Default)]
struct Waiting {
    /// Decisions sent to the gateway and not yet answered, first first, with whom each
    /// is credited to.
    in_flight: Vec<(Decider, Decision)>,
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
    pub(super) fn asked_for(&self, id: &ApprovalId, decision: Decision) -> Option<Decider> {
        let w = self.by_id.get(id)?;
        w.in_flight
            .iter()
            .find(|(_, d)| *d == decision)
            .map(|(by, _)| by.clone())
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
            for (by, d) in &w.in_flight {
                let who = match by {
                    Decider::Responder(r) | Decider::Grant { owner: r, .. } => r.clone(),
                    Decider::Elsewhere { .. } => continue,
                };
                cut.sent.push((id.clone(), who, *d));
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
            Request::ListGrants => {
                if self.owner_command(&answer, allowed) {
                    let list = self.grants_list();
                    self.notify(&answer.reply, Notice::Grants(list));
                }
            }
            Request::Revoke { grant } => {
                if self.owner_command(&answer, allowed) {
                    self.revoke(&answer, &grant);
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
            choice,
            kind: claimed,
        } = answer.request.clone()
        else {
            return;
        };
        let decision = choice.decision();
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
            choice,
            kind: claimed,
        };
        if let Err(reason) = policy::authorize(&facts) {
            return self.refuse(&answer, Some(&id), reason);
        }
        let Some(kind) = entry.map(|e| e.approval.kind) else {
            return;
        };
        self.probe_tapped(&id, &answer.responder);
        self.start_resolve(Asker::Answer(answer), id, kind, decision, received);
    }

    /// Asks the gateway for `decision` on `id` on behalf of `by` (→ `ResolveDone`).
    pub(super) fn start_resolve(
        &mut self,
        by: Asker,
        id: ApprovalId,
        kind: Kind,
        decision: Decision,
        received: Instant,
    ) {
        let decider = match &by {
            Asker::Answer(a) => Decider::Responder(a.responder.clone()),
            Asker::Grant { grant, owner } => self.grant_decider(grant, owner),
        };
        self.resolving.of(&id).in_flight.push((decider, decision));
        self.inflight += 1;
        self.emit(Effect::Resolve {
            by,
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
        by: Asker,
        id: ApprovalId,
        decision: Decision,
        result: Result<(), GatewayError>,
        took: Duration,
    ) {
        let responder = by.responder().clone();
        let decider = match &by {
            Asker::Answer(_) => Decider::Responder(responder.clone()),
            Asker::Grant { grant, owner } => self.grant_decider(grant, owner),
        };
        let (reply, grant) = match &by {
            Asker::Answer(a) => (Some(a.reply.clone()), None),
            Asker::Grant { grant, .. } => (None, Some(grant.clone())),
        };
        let mine = |(by, d): &(Decider, Decision)| *by == decider && *d == decision;
        let w = self.resolving.of(&id);
        let pos = w.in_flight.iter().position(mine);
        // A success stays in flight until the outcome is set (the entry must not be
        // forgotten before the responder is told); a failure leaves at once.
        if result.is_err()
            && let Some(pos) = pos
        {
            w.in_flight.remove(pos);
        }
        if let Err(err) = &result {
            self.event(Event::ResolveFailed {
                id: id.clone(),
                responder: responder.clone(),
                error: err.to_string(),
            });
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
                    by: decider.clone(),
                    at_ms: self.now.unix_ms,
                };
                self.set_outcome(&id, outcome);
                self.resolving.of(&id).in_flight.retain(|e| !mine(e));
                // The canonical outcome may differ if another answer won the race.
                let won = match self.approvals.outcome(&id) {
                    Some(Outcome::Decided {
                        decision: d, by: b, ..
                    }) => *d == decision && *b == decider,
                    Some(_) => false,
                    None => true,
                };
                let notice = match self.approvals.outcome(&id).cloned() {
                    Some(outcome) if !won => Notice::AlreadyFinished {
                        id: id.clone(),
                        outcome,
                    },
                    _ => Notice::Accepted {
                        id: id.clone(),
                        decision,
                    },
                };
                let window = match &by {
                    Asker::Answer(a) => match a.request {
                        Request::Decide {
                            choice: Choice::AllowFor(w),
                            ..
                        } if won => Some(w),
                        _ => None,
                    },
                    Asker::Grant { .. } => None,
                };
                let approval = self.approvals.get(&id).map(|e| e.approval.clone());
                self.after_resolve(&id, |core| match (&by, grant, window, approval) {
                    (Asker::Answer(a), _, Some(w), Some(approval)) => {
                        core.mint_grant(a, &approval, w)
                    }
                    (_, Some(grant), _, _) => core.grant_resolved(&grant, &id, won),
                    _ => {
                        if let Some(reply) = &reply {
                            core.notify(reply, notice);
                        }
                    }
                });
            }
            Err(err @ (GatewayError::NotFound | GatewayError::AlreadyResolved)) => {
                // Terminal: someone else won, or the gateway forgot it. Never retried.
                let known = self.approvals.outcome(&id).cloned();
                let others_resolving = self.resolving.busy(&id);
                self.after_resolve(&id, |core| match known {
                    Some(outcome) => {
                        if let Some(reply) = &reply {
                            core.notify(
                                reply,
                                Notice::AlreadyFinished {
                                    id: id.clone(),
                                    outcome,
                                },
                            );
                        }
                    }
                    None if err == GatewayError::NotFound && !others_resolving => {
                        let outcome = Outcome::Gone {
                            at_ms: core.now.unix_ms,
                        };
                        core.set_outcome(&id, outcome.clone());
                        if let Some(reply) = &reply {
                            core.notify(
                                reply,
                                Notice::AlreadyFinished {
                                    id: id.clone(),
                                    outcome,
                                },
                            );
                        }
                    }
                    // The resolved event with the canonical outcome is on its way.
                    None => {
                        if let Some(reply) = reply {
                            core.resolving.of(&id).told_later.push(reply);
                        }
                    }
                });
            }
            Err(err) => {
                // Refused, or the gateway could not be reached: nothing was decided, the
                // approval stays pending. A person may retry; a grant's use asks the owner.
                let refusal = match err {
                    GatewayError::Rejected { .. } => Refusal::GatewayRejected,
                    _ => Refusal::GatewayUnavailable,
                };
                if let Some(reply) = &reply {
                    self.notify(reply, Notice::Refused(refusal));
                }
                self.after_resolve(&id, |core| {
                    if grant.is_some() {
                        core.grant_fell_through(&id);
                    }
                });
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

    pub(super) fn refuse(&mut self, answer: &Answer, id: Option<&ApprovalId>, reason: Refusal) {
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
