//! The pieces of a prompt every channel renders alike: the kind's title, the decisions the
//! `/approve` fallback offers, an outcome's icon, and (from `bridge::time`) an instant as UTC text. Escaping and
//! layout differ per service and stay in each `render.rs`.

use bridge::approval::{Approval, Decision, Kind, Outcome};

/// The emoji and the name that head a prompt of this kind, each service marking them up
/// its own way: `("🔐", "Exec approval")`.
pub fn kind_title(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Exec => ("🔐", "Exec approval"),
        Kind::Plugin => ("🧩", "Plugin approval"),
        Kind::System => ("⚙️", "System approval"),
    }
}

/// The decisions `a` offers as `/approve` takes them, in a fixed order: `allow-once|deny`.
pub fn decision_words(a: &Approval) -> String {
    let words: Vec<&str> = Decision::ALL
        .iter()
        .filter(|d| a.offers(**d))
        .map(|d| d.as_str())
        .collect();
    words.join("|")
}

/// The icon before an outcome: ⛔ denied, ✅ allowed, ⌛ expired, ⚪ gone, 🚫 denied for lack
/// of an approval route, ⏹️ cancelled by the gateway.
pub fn icon(o: &Outcome) -> &'static str {
    match o {
        Outcome::Decided {
            decision: Decision::Deny,
            ..
        } => "⛔",
        Outcome::Decided { .. } => "✅",
        Outcome::Expired { .. } => "⌛",
        Outcome::Gone { .. } => "⚪",
        Outcome::NoRoute { .. } => "🚫",
        Outcome::Cancelled { .. } => "⏹️",
    }
}

pub use bridge::time::utc;

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::approval::{ApprovalId, CancelReason, Decider, Responder};

    #[test]
    fn titles_and_the_approve_line_read_the_same_everywhere() {
        assert_eq!(kind_title(Kind::Exec), ("🔐", "Exec approval"));
        assert_eq!(kind_title(Kind::Plugin), ("🧩", "Plugin approval"));
        assert_eq!(kind_title(Kind::System), ("⚙️", "System approval"));
        let offering = |allowed: &[Decision]| Approval {
            id: ApprovalId::from("a"),
            kind: Kind::Exec,
            command: "ls".into(),
            cwd: None,
            host: None,
            node_id: None,
            agent_id: None,
            session_key: None,
            description: None,
            severity: None,
            warnings: Vec::new(),
            risk_kinds: Vec::new(),
            cron: false,
            allowed_decisions: allowed.to_vec(),
            created_at_ms: 0,
            expires_at_ms: None,
        };
        assert_eq!(
            decision_words(&offering(&[Decision::Deny, Decision::AllowOnce])),
            "allow-once|deny",
            "in a fixed order"
        );
        assert_eq!(
            decision_words(&offering(&Decision::ALL)),
            "allow-once|allow-always|deny"
        );
    }

    #[test]
    fn each_outcome_has_its_icon() {
        let decided = |decision, by| Outcome::Decided {
            decision,
            by,
            at_ms: 0,
        };
        let owner = Decider::Responder(Responder {
            channel: "telegram".into(),
            user_id: "42".into(),
            display: None,
        });
        let elsewhere = Decider::Elsewhere { resolved_by: None };
        assert_eq!(icon(&decided(Decision::AllowOnce, owner.clone())), "✅");
        assert_eq!(
            icon(&decided(Decision::AllowAlways, elsewhere.clone())),
            "✅"
        );
        assert_eq!(icon(&decided(Decision::Deny, owner)), "⛔");
        assert_eq!(icon(&decided(Decision::Deny, elsewhere)), "⛔");
        assert_eq!(icon(&Outcome::Expired { at_ms: 0 }), "⌛");
        assert_eq!(icon(&Outcome::Gone { at_ms: 0 }), "⚪");
        assert_eq!(icon(&Outcome::NoRoute { at_ms: 0 }), "🚫");
        let cancelled = Outcome::Cancelled {
            reason: CancelReason::GatewayRestart,
            at_ms: 0,
        };
        assert_eq!(icon(&cancelled), "⏹️");
    }
}
