//! Who may decide what. Pure functions over the facts of one answer: the engine gathers
//! them, `authorize` returns the verdict, nothing here does I/O.

use crate::approval::{Approval, Choice, Kind};
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
    /// The decision asked for, or a time-boxed allow (which must be one this approval's
    /// prompt offered).
    pub choice: Choice,
    /// The kind the answer claims (a button payload's tag); `None` when its form carries none.
    pub kind: Option<Kind>,
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
    if f.kind.is_some_and(|k| k != approval.kind) {
        return Err(Refusal::WrongKind);
    }
    if !approval.offers_choice(f.choice) {
        return Err(Refusal::DecisionNotOffered);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::approval::{Decision, Window};
    use crate::channel::Target;

    fn exec(id: &str) -> Approval {
        Approval::from_gateway(
            Kind::Exec,
            &json!({"id": id, "request": {"command": "true", "allowedDecisions": ["allow-once", "deny"]}, "createdAtMs": 1}),
        )
        .unwrap()
    }

    fn prompt() -> MessageRef {
        MessageRef {
            target: Target {
                channel: "mem".into(),
                chat: "1".into(),
            },
            message: "7".into(),
        }
    }

    /// The owner, in a DM, on our prompt of a pending exec approval, claiming `kind`.
    fn verdict(kind: Option<Kind>) -> Result<(), Refusal> {
        let approval = exec("e1");
        let via = Via::Prompt(prompt());
        let ours = [prompt()];
        authorize(&Facts {
            allowed: true,
            in_dm: true,
            pending: Some(&approval),
            via: &via,
            our_prompts: &ours,
            choice: Decision::AllowOnce.into(),
            kind,
        })
    }

    /// The owner, in a DM, on our prompt of `approval`, picking `choice`.
    fn picking(approval: &Approval, choice: Choice) -> Result<(), Refusal> {
        let via = Via::Prompt(prompt());
        let ours = [prompt()];
        authorize(&Facts {
            allowed: true,
            in_dm: true,
            pending: Some(approval),
            via: &via,
            our_prompts: &ours,
            choice,
            kind: Some(Kind::Exec),
        })
    }

    #[test]
    fn a_time_boxed_allow_counts_only_for_a_window_the_prompt_offered() {
        let mut approval = exec("e1");
        let (hour, day) = (Window::parse("1h").unwrap(), Window::parse("24h").unwrap());
        approval.windows = vec![hour];
        assert_eq!(picking(&approval, Choice::AllowFor(hour)), Ok(()));
        assert_eq!(
            picking(&approval, Choice::AllowFor(day)),
            Err(Refusal::DecisionNotOffered)
        );
        approval.allowed_decisions = vec![Decision::Deny];
        assert_eq!(
            picking(&approval, Choice::AllowFor(hour)),
            Err(Refusal::DecisionNotOffered)
        );
    }

    #[test]
    fn an_answer_claiming_another_kind_is_refused() {
        assert_eq!(verdict(Some(Kind::System)), Err(Refusal::WrongKind));
        assert_eq!(verdict(Some(Kind::Plugin)), Err(Refusal::WrongKind));
    }

    #[test]
    fn an_answer_claiming_the_approvals_kind_is_allowed() {
        assert_eq!(verdict(Some(Kind::Exec)), Ok(()));
    }

    #[test]
    fn an_answer_without_a_kind_is_judged_on_the_rest() {
        assert_eq!(verdict(None), Ok(()));
    }

    #[test]
    fn a_stranger_claiming_another_kind_is_refused_as_a_stranger() {
        let approval = exec("e1");
        let via = Via::Prompt(prompt());
        let ours = [prompt()];
        let facts = Facts {
            allowed: false,
            in_dm: true,
            pending: Some(&approval),
            via: &via,
            our_prompts: &ours,
            choice: Decision::AllowOnce.into(),
            kind: Some(Kind::System),
        };
        assert_eq!(authorize(&facts), Err(Refusal::NotAllowed));
    }
}
