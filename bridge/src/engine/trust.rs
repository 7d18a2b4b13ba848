//! Owner-held trust in the core: which time-boxed allows a prompt offers, the grants the
//! owners made with them, and when one lets the bridge allow an approval on its owner's
//! behalf. A grant only ever stands in for one owner's allow-once: its creation, each use
//! and its revocation are recorded before they count, and any failure falls back to asking.

use std::collections::{BTreeMap, HashMap};

use rand::Rng;

use super::{Asker, Core, Effect, Write};
use crate::approval::{Approval, ApprovalId, Decider, Decision, Kind, Responder, Window};
use crate::bulletin::Bulletin;
use crate::channel::{Answer, Notice, Refusal, ReplyTo, Target};
use crate::grant::{Grant, GrantId, Revocation};

/// What the owners may hand the bridge: the time-boxed allows every exec prompt offers
/// (`[trust] durations`), and the gateway grants are scoped to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustPolicy {
    /// The gateway's URL: part of every grant's scope.
    pub gateway: String,
    /// Empty: no time-boxed allows.
    pub windows: Vec<Window>,
}

#[derive(Debug, Default)]
pub(super) struct Trust {
    policy: TrustPolicy,
    /// Every grant held: open, revoked or ended (until the bridge restarts).
    pub(super) grants: BTreeMap<GrantId, Grant>,
    /// Approvals being allowed under a grant (its use is being recorded or resolved).
    using: HashMap<ApprovalId, GrantId>,
}

impl Trust {
    /// The trust of a bridge holding `grants` (the store's open ones).
    pub(super) fn new(policy: TrustPolicy, grants: Vec<Grant>) -> Trust {
        Trust {
            policy,
            grants: grants.into_iter().map(|g| (g.id.clone(), g)).collect(),
            using: HashMap::new(),
        }
    }

    /// The windows a prompt for `a` offers: only on exec requests that offer allow-once
    /// and carry the gateway's time (a grant could never be measured without it).
    fn windows_for(&self, a: &Approval) -> Vec<Window> {
        if a.kind == Kind::Exec && a.offers(Decision::AllowOnce) && a.created_at_ms > 0 {
            self.policy.windows.clone()
        } else {
            Vec::new()
        }
    }

    /// The first open grant (by id) that covers `a`; none while the feature is off
    /// (`durations = []`), whatever the store still holds.
    fn covering(&self, a: &Approval) -> Option<&Grant> {
        if self.policy.windows.is_empty() {
            return None;
        }
        self.grants
            .values()
            .find(|g| g.covers(&self.policy.gateway, a, 1))
    }

    /// Whether `id` is being allowed under a grant (so it is not prompted meanwhile).
    pub(super) fn allowing(&self, id: &ApprovalId) -> bool {
        self.using.contains_key(id)
    }

    /// A fresh grant id.
    fn new_id(&self, rng: &mut impl Rng) -> GrantId {
        loop {
            let id = GrantId::from_random(rng.r#gen());
            if !self.grants.contains_key(&id) {
                return id;
            }
        }
    }
}

impl Core {
    /// Sets the time-boxed allows a new approval's prompts offer.
    pub(super) fn offer_windows(&self, approval: &mut Approval) {
        approval.windows = self.trust.windows_for(approval);
    }

    /// When an open grant covers the recorded approval `id`, records its use (→
    /// `GrantUseRecorded`) and returns true: the approval is allowed under it, not prompted.
    pub(super) fn try_grant(&mut self, id: &ApprovalId) -> bool {
        let Some(entry) = self.approvals.get(id) else {
            return false;
        };
        if entry.outcome.is_some() || self.resolving.busy(id) {
            return false;
        }
        let Some(g) = self.trust.covering(&entry.approval) else {
            return false;
        };
        let (grant, owner, until_ms) = (g.id.clone(), g.by.clone(), g.until_ms);
        self.trust.using.insert(id.clone(), grant.clone());
        self.emit(Effect::RecordGrantUse {
            grant,
            id: id.clone(),
            owner,
            until_ms,
        });
        true
    }

    /// The use of `grant` on `id` is recorded (or not): resolve allow-once on the owner's
    /// behalf, or, when anything changed meanwhile or the record failed, ask as usual.
    pub(super) fn on_grant_use_recorded(
        &mut self,
        grant: GrantId,
        id: ApprovalId,
        result: Result<bool, String>,
    ) {
        let still = self.approvals.get(&id).is_some_and(|e| {
            e.outcome.is_none()
                && self
                    .trust
                    .grants
                    .get(&grant)
                    .is_some_and(|g| g.covers(&self.trust.policy.gateway, &e.approval, 1))
        }) && !self.resolving.busy(&id);
        match result {
            Ok(true) if still => {}
            Ok(_) | Err(_) => {
                if let Err(e) = &result {
                    tracing::error!(%id, %grant, error = %e,
                        "cannot record the grant's use (disk full or read-only?); asking the owner instead");
                }
                return self.grant_fell_through(&id);
            }
        }
        let Some(g) = self.trust.grants.get_mut(&grant) else {
            return;
        };
        g.uses += 1;
        let owner = g.by.clone();
        let kind = self
            .approvals
            .get(&id)
            .map_or(Kind::Exec, |e| e.approval.kind);
        self.start_resolve(
            Asker::Grant { grant, owner },
            id,
            kind,
            Decision::AllowOnce,
            self.now.at,
        );
    }

    /// A grant did not allow `id` after all: it is prompted as any other.
    pub(super) fn grant_fell_through(&mut self, id: &ApprovalId) {
        self.trust.using.remove(id);
        if self.approvals.outcome(id).is_none() {
            self.prompt_everywhere(id);
            self.arm_nudges(id);
        }
    }

    /// Who decided when `grant` allowed: the grant, for its owner.
    pub(super) fn grant_decider(&self, grant: &GrantId, owner: &Responder) -> Decider {
        Decider::Grant {
            grant: grant.clone(),
            owner: owner.clone(),
            until_ms: self.trust.grants.get(grant).map_or(0, |g| g.until_ms),
        }
    }

    /// The resolve under `grant` is over; when it allowed `id` (`won`: no other answer
    /// came first), its owner gets one quiet line with a Revoke button.
    pub(super) fn grant_resolved(&mut self, grant: &GrantId, id: &ApprovalId, won: bool) {
        self.trust.using.remove(id);
        if !won {
            return;
        }
        let (Some(g), Some(entry)) = (self.trust.grants.get(grant), self.approvals.get(id)) else {
            return;
        };
        let bulletin = Bulletin::GrantUsed {
            grant: grant.clone(),
            id: id.clone(),
            command: entry.approval.command.clone(),
            until_ms: g.until_ms,
        };
        for target in self.owner_chats(&g.by.clone()) {
            self.emit(Effect::Post {
                target,
                bulletin: bulletin.clone(),
                incident: None,
            });
        }
    }

    /// Where to tell `owner` something on their own: their DM in the channel they used (a
    /// target whose chat is their id), else that channel's targets.
    fn owner_chats(&self, owner: &Responder) -> Vec<Target> {
        let targets: Vec<Target> = self
            .channels
            .get(&owner.channel)
            .map(|c| c.targets())
            .unwrap_or_default();
        let own: Vec<Target> = targets
            .iter()
            .filter(|t| t.chat == owner.user_id)
            .cloned()
            .collect();
        if own.is_empty() { targets } else { own }
    }

    /// `answer` allowed `approval` once and asked for `window`: mint the grant and record
    /// it (→ `GrantRecorded`); the responder hears of it once it is recorded.
    pub(super) fn mint_grant(&mut self, answer: &Answer, approval: &Approval, window: Window) {
        let id = self.trust.new_id(&mut self.rng);
        match Grant::mint(
            id,
            &self.trust.policy.gateway,
            approval,
            answer.responder.clone(),
            window,
        ) {
            Ok(grant) => self.emit(Effect::RecordGrant {
                grant,
                reply: answer.reply.clone(),
            }),
            Err(e) => {
                tracing::warn!(id = %approval.id, error = %e, "no grant made");
                self.notify(
                    &answer.reply,
                    Notice::GrantNotStored {
                        id: approval.id.clone(),
                    },
                );
            }
        }
    }

    /// A minted grant is recorded (it counts from now on), or could not be (there is none).
    pub(super) fn on_grant_recorded(
        &mut self,
        grant: Grant,
        reply: ReplyTo,
        result: Result<bool, String>,
    ) {
        match result {
            Ok(true) => {
                self.trust.grants.insert(grant.id.clone(), grant.clone());
                self.notify(&reply, Notice::Granted { grant });
            }
            other => {
                tracing::error!(grant = %grant.id, result = ?other,
                    "cannot record the time-boxed grant; none was made");
                self.notify(
                    &reply,
                    Notice::GrantNotStored {
                        id: grant.minted_by,
                    },
                );
            }
        }
    }

    /// `/grants`: the open grants, oldest first.
    pub(super) fn grants_list(&self) -> Vec<Grant> {
        let mut open: Vec<Grant> = self
            .trust
            .grants
            .values()
            .filter(|g| g.open_at(self.now.unix_ms))
            .cloned()
            .collect();
        open.sort_by_key(|g| (g.from_ms, g.id.clone()));
        open
    }

    /// An owner's revoke: the grant stops counting at once (in memory, before its record:
    /// a narrowing needs no confirmation) and its revocation is recorded.
    pub(super) fn revoke(&mut self, answer: &Answer, grant: &GrantId) {
        let Some(g) = self.trust.grants.get_mut(grant) else {
            return self.refuse(answer, None, Refusal::UnknownGrant);
        };
        if g.revoked.is_some() {
            let notice = Notice::Revoked {
                grant: g.clone(),
                already: true,
            };
            return self.notify(&answer.reply, notice);
        }
        let by = &answer.responder;
        let revocation = Revocation {
            at_ms: self.now.unix_ms,
            by: format!("{}:{}", by.channel, by.user_id),
        };
        g.revoked = Some(revocation.clone());
        let notice = Notice::Revoked {
            grant: g.clone(),
            already: false,
        };
        self.emit(Effect::Store(Write::GrantRevoked {
            grant: grant.clone(),
            revocation,
            by: by.clone(),
        }));
        self.notify(&answer.reply, notice);
    }
}
