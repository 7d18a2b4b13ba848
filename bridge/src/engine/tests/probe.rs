//! The scheduled probe on the core: the first once the link is ready, then every
//! `probe_every`; delivery only, nobody told while it passes; a failure is an incident
//! posted once it has lasted `after` and ended by the next pass, and none at all while
//! another alert already tells what broke. It decides nothing.

use super::*;

const EVERY: u64 = 3_600_000;

fn probing() -> Sim {
    let policy = AlertPolicy {
        after: Some(Duration::from_secs(60)),
        device_id: "dev1".into(),
        reminders: ReminderPolicy::default(),
        probe_every: Some(Duration::from_millis(EVERY)),
    };
    Sim::with_policy(vec![MemoryChannel::new("mem", &[OWNER], &[OWNER])], policy)
}

impl Sim {
    fn ready(&mut self) {
        self.input(Input::Gateway(GatewayEvent::Connected {
            scopes: vec![],
            missing: vec![],
        }));
        self.input(Input::Gateway(GatewayEvent::Snapshot(vec![])));
    }

    /// The waiting probe raise answers: accepted as `id` (its `requested` event follows)
    /// or refused.
    fn raised(&mut self, id: &str, refused: Option<GatewayError>) -> Option<Approval> {
        let Some(Effect::RaiseProbe { probe, command, .. }) =
            self.take_waiting(|e| matches!(e, Effect::RaiseProbe { .. }))
        else {
            panic!("no probe raised: {:?}", self.waiting);
        };
        if let Some(e) = refused {
            self.input(Input::ProbeRaised {
                probe,
                result: Err(e),
            });
            return None;
        }
        self.input(Input::ProbeRaised {
            probe,
            result: Ok(ApprovalId(id.into())),
        });
        let mut a = approval(id, &["allow-once", "deny"]);
        a.command = command;
        self.input(Input::Gateway(GatewayEvent::Requested(a.clone())));
        Some(a)
    }

    /// Fires the armed timer `pick` accepts.
    fn fire(&mut self, pick: impl Fn(&Timer) -> bool) {
        let Some(Effect::Arm { at, timer }) =
            self.take_waiting(|e| matches!(e, Effect::Arm { timer, .. } if pick(timer)))
        else {
            panic!("no such timer: {:?}", self.waiting);
        };
        let ahead = at.saturating_duration_since(self.now.at);
        self.advance(ahead.as_millis() as u64);
        self.input(Input::Timer(timer));
    }

    /// Fires every armed alert timer, stale ones included.
    fn fire_alerts(&mut self) {
        let alert = |e: &Effect| {
            matches!(
                e,
                Effect::Arm {
                    timer: Timer::Alert { .. },
                    ..
                }
            )
        };
        while self.waiting.iter().any(alert) {
            self.fire(|t| matches!(t, Timer::Alert { .. }));
        }
    }
}

fn due(t: &Timer) -> bool {
    matches!(t, Timer::ProbeDue)
}

#[test]
fn a_scheduled_probe_runs_when_ready_then_every_interval_and_tells_only_of_a_failure() {
    let mut sim = probing();
    sim.take();
    sim.ready();
    sim.check(expect![[r#"
        read history after - from 0
        raise probe #0 living 90000ms
        arm +60000ms: probe #0
        arm +3600000ms: scheduled probe
    "#]]);
    // It passes: the prompt went out, nobody is told anything, nothing is decided.
    let p0 = sim.raised("p0", None).unwrap();
    sim.deliver();
    sim.check(expect![[r#"
        store approval p0
        deliver mem:42 [p0] overhead from +0ms waited 0ms
        store prompt p0 = mem:42#101
        emit delivered p0 mem:42#101 after 0ms
    "#]]);
    // A reconnect does not start a second schedule.
    sim.input(Input::Gateway(GatewayEvent::Connected {
        scopes: vec![],
        missing: vec![],
    }));
    sim.input(Input::Gateway(GatewayEvent::Snapshot(vec![p0])));
    sim.check(expect![[r#"
        read history after - from 0
    "#]]);
    // An hour later the gateway refuses the probe: an incident, posted after `after`.
    sim.fire(due);
    sim.check(expect![[r#"
        raise probe #1 living 90000ms
        arm +60000ms: probe #1
        arm +3600000ms: scheduled probe
    "#]]);
    sim.raised(
        "",
        Some(GatewayError::Unavailable("request timed out".into())),
    );
    sim.check(expect![[r#"
        arm +60000ms: alert Probe #1
    "#]]);
    sim.fire_alerts();
    sim.check(expect![[r#"
        post mem:42: ⚠️ Approvals cannot reach you: since 01:00 UTC, the scheduled probe broke at "gateway accepted the request" (gateway unavailable: request timed out).
        Fix: send /probe (or run `approval-bridge probe`) to see every hop, and read the bridge's log.
    "#]]);
    let alert = sim.posted();
    // The next one passes: the alert is marked over and a line follows.
    sim.fire(due);
    sim.take();
    sim.raised("p2", None);
    sim.deliver();
    let text = sim.take();
    assert!(
        text.contains(&format!(
            "edit post {}: ✅ Resolved after",
            message_text(&alert)
        )),
        "{text}"
    );
    assert!(
        text.contains("post mem:42: ✅ Back: the scheduled probe passes again"),
        "{text}"
    );
    assert!(
        !text.contains("resolve "),
        "a probe decides nothing:\n{text}"
    );
    // The probes' prompts are left to expire at the gateway.
    assert_eq!(sim.core.pending_count(), 2);
}

#[test]
fn a_scheduled_probe_failing_while_another_alert_is_open_adds_none() {
    let mut sim = probing();
    sim.ready();
    sim.raised("p0", None);
    sim.deliver();
    // The gateway goes away: its own incident opens; the probe due meanwhile fails too.
    sim.input(Input::Gateway(GatewayEvent::Disconnected {
        reason: "connect failed: connection refused".into(),
    }));
    sim.fire(due);
    sim.raised("", Some(GatewayError::Unavailable("not connected".into())));
    sim.take();
    sim.fire_alerts();
    let text = sim.take();
    assert!(
        text.contains("cannot reach the OpenClaw gateway") && !text.contains("scheduled probe"),
        "one alert, the gateway's:\n{text}"
    );
    assert!(
        !sim.waiting.iter().any(|e| matches!(
            e,
            Effect::Arm {
                timer: Timer::Alert {
                    path: Path::Probe,
                    ..
                },
                ..
            }
        )),
        "no probe incident"
    );
}
