//! Who may decide what. Pure functions over the facts of one answer: the engine gathers
//! them, `authorize` returns the verdict, nothing here does I/O.

use crate::approval::{Approval, Decision};
use crate::channel::{MessageRef, Refusal, Via};

/// What the engine knows when an answer to decide arrives.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The responder's stable id is in that channel's allowFrom.
    pub allowed: bool,
    pub in_dm: bool,
    /// The approval, if it is pending here.
    pub pending: Option<&'a Approval>,
    /// How the answer came, and the prompts we sent for this approval.
    pub via: &'a Via,
    pub our_prompts: &'a [MessageRef],
    pub decision: Decision,
}

/// The verdict on one answer: `Ok` means resolve it with the gateway.
pub fn authorize(f: &Facts<'_>) -> Result<(), Refusal> {
    if !f.allowed {
        return Err(Refusal::NotAllowed);
    }
    if !f.in_dm {
        return Err(Refusal::NotDirectMessage);
    }
    let approval = f.pending.ok_or(Refusal::UnknownApproval)?;
    if let Via::Prompt(msg) = f.via
        && !f.our_prompts.contains(msg)
    {
        return Err(Refusal::NotOurPrompt);
    }
    if !approval.offers(f.decision) {
        return Err(Refusal::DecisionNotOffered);
    }
    Ok(())
}
