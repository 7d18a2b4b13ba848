//! Reminders and escalation on the core: new messages at the configured points of a
//! pending approval's life, none in quiet hours or once it ended, and the escalation
//! chats prompted at their point, told who else was asked; at each reminder point the
//! prompt itself is rewritten (silently) so its time left is current.

use jiff::civil::Time;
use jiff::tz::TimeZone;

use super::*;

const MIN: u64 = 60_000;

/// An exec approval created now (the Sim's clock starts at 1 000 ms) living `life_ms`.
fn expiring(id: &str, life_ms: i64) -> Approval {
    Approval::from_gateway(
        Kind::Exec,
        &json!({"id": id, "request": {"command": "make deploy", "agentId": "main",
            "allowedDecisions": ["allow-once", "deny"]},
            "createdAtMs": 1_000, "expiresAtMs": 1_000 + life_ms}),
    )
    .unwrap()
}

fn policy(reminders: ReminderPolicy) -> AlertPolicy {
    AlertPolicy {
        after: None,
        device_id: String::new(),
        reminders,
        probe_every: None,
    }
}

fn reminding(quiet: Option<Quiet>) -> Sim {
    let r = ReminderPolicy {
        points: vec![Point::Share(50), Point::Left(Duration::from_secs(120))],
        quiet,
        ..ReminderPolicy::default()
    };
    Sim::with_policy(
        vec![MemoryChannel::new("mem", &[OWNER], &[OWNER])],
        policy(r),
    )
}

impl Sim {
    fn requested(&mut self, a: Approval) -> MessageRef {
        self.input(Input::Gateway(GatewayEvent::Requested(a)));
        self.deliver()
    }
}

#[test]
fn a_pending_approval_is_reminded_at_half_time_and_two_minutes_before_it_expires() {
    let mut sim = reminding(None);
    sim.requested(expiring("a1", 30 * MIN as i64));
    sim.check(expect![[r#"
        store approval a1
        deliver mem:42 [a1] overhead from +0ms waited 0ms
        arm +900000ms: nudge a1 Remind { left: 900s }
        arm +1680000ms: nudge a1 Remind { left: 120s }
        store prompt a1 = mem:42#101
        emit delivered a1 mem:42#101 after 0ms
    "#]]);
    sim.fire_timer();
    sim.check(expect![[r#"
        refresh mem:42#101 for a1
        post mem:42: ⏰ 15 min left to decide (agent main): make deploy
        Unanswered, it is denied then. Use the prompt's buttons, or /approve a1 allow-once|deny.
    "#]]);
    sim.fire_timer();
    sim.check(expect![[r#"
        refresh mem:42#101 for a1
        post mem:42: ⏰ 2 min left to decide (agent main): make deploy
        Unanswered, it is denied then. Use the prompt's buttons, or /approve a1 allow-once|deny.
    "#]]);
}

#[test]
fn no_reminder_once_decided_in_quiet_hours_or_past_its_point() {
    // Decided before the first point: its timers find nothing to do.
    let mut sim = reminding(None);
    sim.requested(expiring("a1", 30 * MIN as i64));
    sim.ended("a1", decided_elsewhere(Decision::Deny));
    sim.finish_all();
    sim.take();
    sim.fire_timer();
    sim.fire_timer();
    assert_eq!(sim.take(), "\n", "no reminder for an ended approval");

    // Quiet all day long (00:00 to 23:59 UTC).
    let quiet = Quiet {
        from: Time::constant(0, 0, 0, 0),
        to: Time::constant(23, 59, 59, 0),
        zone: TimeZone::UTC,
    };
    let mut sim = reminding(Some(quiet));
    sim.requested(expiring("a1", 30 * MIN as i64));
    sim.take();
    sim.fire_timer();
    assert_eq!(
        sim.take(),
        "refresh mem:42#101 for a1\n",
        "quiet hours: no reminder; the prompt's silent rewrite still happens"
    );

    // A one-minute approval: half time yes, "2 minutes left" cannot be.
    let mut sim = reminding(None);
    sim.requested(expiring("a1", MIN as i64));
    let log = sim.take();
    assert_eq!(log.matches("nudge a1").count(), 1, "{log}");
    assert!(
        log.contains("arm +30000ms: nudge a1 Remind { left: 30s }"),
        "{log}"
    );
}

#[test]
fn a_wall_clock_days_off_does_not_skip_or_bunch_the_reminders() {
    let mut sim = reminding(None);
    sim.advance(3 * 86_400_000);
    sim.requested(expiring("a1", 30 * MIN as i64));
    let log = sim.take();
    assert!(
        log.contains("arm +900000ms: nudge a1 Remind { left: 900s }"),
        "{log}"
    );
    assert!(
        log.contains("arm +1680000ms: nudge a1 Remind { left: 120s }"),
        "{log}"
    );
}

#[test]
fn an_unanswered_approval_is_escalated_with_who_else_was_asked_and_they_can_decide() {
    let escalation = Target {
        channel: "mem".into(),
        chat: "99".into(),
    };
    let r = ReminderPolicy {
        escalate_to: vec![escalation.clone()],
        escalate_at: Some(Point::Share(50)),
        ..ReminderPolicy::default()
    };
    let mut sim = Sim::with_policy(
        vec![MemoryChannel::new("mem", &[OWNER], &[OWNER, "99"])],
        policy(r),
    );
    let first = sim.requested(expiring("a1", 30 * MIN as i64));
    sim.take();
    sim.fire_timer();
    sim.check(expect![[r#"
        post mem:99: 🔔 Nobody has answered this approval for 15 min, so you are asked too (also asked: mem:42). 15 min left: make deploy
        deliver mem:99 [a1] overhead from +0ms waited 0ms
    "#]]);
    let escalated = sim.deliver();
    assert_eq!(escalated.target, escalation);
    let mut press = pressed("99", "a1", Decision::Deny, &escalated);
    press.reply = ReplyTo::new("mem", "cb:99".to_owned());
    sim.answer(press);
    sim.resolve(Ok(()));
    // Both prompts show who decided.
    let log = sim.take();
    assert!(
        log.contains(&format!("finish {}: deny by 99", message_text(&first))),
        "{log}"
    );
    assert!(
        log.contains(&format!("finish {}: deny by 99", message_text(&escalated))),
        "{log}"
    );
}

#[test]
fn escalation_at_the_same_point_as_a_reminder_still_comes() {
    // The defaults: remind at "50%" and escalate at "50%".
    let r = ReminderPolicy {
        points: vec![Point::Share(50)],
        escalate_to: vec![Target {
            channel: "mem".into(),
            chat: "99".into(),
        }],
        escalate_at: Some(Point::Share(50)),
        ..ReminderPolicy::default()
    };
    let mut sim = Sim::with_policy(
        vec![MemoryChannel::new("mem", &[OWNER], &[OWNER, "99"])],
        policy(r),
    );
    sim.requested(expiring("a1", 30 * MIN as i64));
    let log = sim.take();
    assert!(
        log.contains("arm +900000ms: nudge a1 Remind { left: 900s }")
            && log.contains("arm +900000ms: nudge a1 Escalate"),
        "{log}"
    );
}
