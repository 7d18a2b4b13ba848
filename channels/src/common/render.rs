//! The pieces of a prompt every channel renders alike: the kind's title, the decisions the
//! `/approve` fallback offers, an outcome's icon, the time a pending prompt has left, and
//! (from `bridge::time`) an instant as UTC text. Escaping and layout differ per service and
//! stay in each `render.rs`.

use bridge::approval::{Approval, Decision, Kind, Outcome};
use bridge::channel::action;
use bridge::grant::GrantId;
use bridge::time::{clock, span};

/// The emoji and the name that head a prompt of this kind, each service marking them up
/// its own way: `("🔐", "Exec approval")`.
pub fn kind_title(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Exec => ("🔐", "Exec approval"),
        Kind::Plugin => ("🧩", "Plugin approval"),
        Kind::System => ("⚙️", "System approval"),
    }
}

/// The choices `a` offers as `/approve` takes them, in a fixed order:
/// `allow-once|allow-1h|deny`.
pub fn decision_words(a: &Approval) -> String {
    let words: Vec<String> = a.choices().iter().map(|c| c.token()).collect();
    words.join("|")
}

/// A Revoke button per grant, as `(label, payload)`: what each channel renders in its own
/// markup on a grant's use line and under `/grants`.
pub fn revoke_buttons<'a>(grants: impl IntoIterator<Item = &'a GrantId>) -> Vec<(String, String)> {
    grants
        .into_iter()
        .map(|g| (format!("Revoke {g}"), action::encode_revoke(g)))
        .collect()
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

/// Below this much time left a prompt counts seconds; from it on, whole minutes.
const SECONDS_BELOW_MS: i64 = 120_000;
/// From this much time left on, the expiry shows its date too: a time of day alone could
/// be today's or tomorrow's.
const DATE_FROM_MS: i64 = 12 * 3_600_000;

/// What follows the word `expires` on a pending prompt rendered at `now_ms`: the time left
/// as a phone reads it, then the instant, `in 12 min (11:06 UTC)`. Whole minutes (the
/// nearest) from 2 minutes left on, seconds below (`in 1 min 30 s`), `now` once nothing is
/// left; the date joins the instant from 12 hours left on. The time left reads the
/// bridge's clock, the instant is the gateway's; a bridge clock outside the approval's own
/// life by more than [`SKEW_MS`] (a clock that is off) counts from its creation instead.
pub fn expires(created_at_ms: i64, expires_at_ms: i64, now_ms: i64) -> String {
    let now_ms = plausible_now(created_at_ms, expires_at_ms, now_ms);
    let left = expires_at_ms.saturating_sub(now_ms);
    let at = deadline(expires_at_ms, now_ms);
    match left {
        ..1000 => format!("now ({at})"),
        1000..SECONDS_BELOW_MS => format!("in {} ({at})", span(left)),
        _ => {
            let minutes = left.saturating_add(30_000) / 60_000;
            format!("in {} ({at})", span(minutes.saturating_mul(60_000)))
        }
    }
}

/// How far the bridge's clock may stray from the approval's life before it counts as off.
pub const SKEW_MS: i64 = 60_000;

/// `now_ms`, unless it lies more than [`SKEW_MS`] outside `created..expires` by the
/// gateway's clock: then `created_at_ms` (a prompt is rendered when its approval is new).
pub fn plausible_now(created_at_ms: i64, expires_at_ms: i64, now_ms: i64) -> i64 {
    let early = created_at_ms.saturating_sub(SKEW_MS);
    let late = expires_at_ms.saturating_add(SKEW_MS);
    if (early..=late).contains(&now_ms) {
        now_ms
    } else {
        created_at_ms
    }
}

/// The instant a pending prompt expires, seen from `now_ms`: `11:06 UTC` within 12 hours,
/// `2026-11-19 11:06:45 UTC` from then on. Half of [`expires`], for a channel that shows
/// the time left its own way (Discord's live `<t:…:R>`).
pub fn deadline(expires_at_ms: i64, now_ms: i64) -> String {
    if expires_at_ms.saturating_sub(now_ms) < DATE_FROM_MS {
        clock(expires_at_ms)
    } else {
        utc(expires_at_ms)
    }
}

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
            windows: Vec::new(),
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
    fn a_pending_prompt_says_the_time_left_then_the_instant() {
        // 2026-11-18 11:06:45 UTC.
        const AT: i64 = 1_795_000_005_999;
        // A long life, so every `now` below is a plausible one.
        const CREATED: i64 = AT - 4 * 86_400_000;
        let check = |left_ms: i64, expect: &str| {
            assert_eq!(
                expires(CREATED, AT, AT - left_ms),
                expect,
                "{left_ms} ms left"
            );
        };
        check(30 * 60_000 - 250, "in 30 min (11:06 UTC)");
        check(12 * 60_000 + 29_999, "in 12 min (11:06 UTC)");
        check(12 * 60_000 + 30_000, "in 13 min (11:06 UTC)");
        check(2 * 60_000, "in 2 min (11:06 UTC)");
        check(2 * 60_000 - 1, "in 1 min 59 s (11:06 UTC)");
        check(90_000, "in 1 min 30 s (11:06 UTC)");
        check(45_500, "in 45 s (11:06 UTC)");
        check(1000, "in 1 s (11:06 UTC)");
        check(999, "now (11:06 UTC)");
        check(0, "now (11:06 UTC)");
        check(-30_000, "now (11:06 UTC)");
        check(
            2 * 3_600_000 + 5 * 60_000 + 10_000,
            "in 2 h 5 min (11:06 UTC)",
        );
        check(12 * 3_600_000 - 1, "in 12 h (11:06 UTC)");
        check(12 * 3_600_000, "in 12 h (2026-11-18 11:06:45 UTC)");
        check(3 * 86_400_000, "in 3 d (2026-11-18 11:06:45 UTC)");
        // A bridge clock days off counts from the approval's creation.
        let half_hour = AT - 30 * 60_000;
        assert_eq!(
            expires(half_hour, AT, AT + 3 * 86_400_000),
            "in 30 min (11:06 UTC)"
        );
        assert_eq!(
            expires(half_hour, AT, AT - 3 * 86_400_000),
            "in 30 min (11:06 UTC)"
        );
        // No overflow at the extremes.
        assert!(expires(i64::MIN, i64::MAX, i64::MIN).starts_with("in "));
        assert!(expires(i64::MIN, i64::MIN, i64::MAX).starts_with("now ("));
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
