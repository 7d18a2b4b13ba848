//! Time-boxed grants on the core: the prompt offers them, a press makes one only once the
//! gateway allowed and its record is written, the same request is then allowed on the
//! owner's behalf (recorded first, told quietly), anything else or anything later on the
//! gateway's clock is prompted, and a revoke, a failed record or a failed resolve always
//! falls back to asking.

use super::*;

const HOUR: i64 = 3_600_000;

/// An exec approval of `command` the gateway created at `created_ms` (its clock).
fn exec(id: &str, command: &str, created_ms: i64) -> Approval {
    Approval::from_gateway(
        Kind::Exec,
        &json!({"id": id, "request": {"command": command, "cwd": "/srv", "host": "gateway",
            "agentId": "main", "allowedDecisions": ["allow-once", "allow-always", "deny"]},
            "createdAtMs": created_ms, "expiresAtMs": created_ms + 120_000}),
    )
    .unwrap()
}

fn hour() -> Choice {
    Choice::AllowFor(Window::parse("1h").unwrap())
}

impl Sim {
    fn raise(&mut self, a: Approval) {
        self.input(Input::Gateway(GatewayEvent::Requested(a)));
    }

    /// The owner allows `a1` (`ls -la`, created at 10 000) for 1 h: the grant it made.
    fn granted(&mut self) -> Grant {
        self.raise(exec("a1", "ls -la", 10_000));
        let prompt = self.deliver();
        self.answer(pressed(OWNER, "a1", hour(), &prompt));
        self.resolve(Ok(()));
        self.finish_all();
        self.take();
        self.core
            .trust
            .grants
            .values()
            .next()
            .cloned()
            .expect("a grant")
    }
}

#[test]
fn every_exec_prompt_offers_the_configured_windows_beside_allow_once() {
    let mut sim = Sim::with_trust(&["15m", "1h"]);
    sim.raise(exec("a1", "ls", 10_000));
    let Some(Effect::Deliver { approvals, .. }) =
        sim.take_waiting(|e| matches!(e, Effect::Deliver { .. }))
    else {
        panic!("no delivery");
    };
    let tokens: Vec<String> = approvals[0].choices().iter().map(|c| c.token()).collect();
    assert_eq!(
        tokens,
        [
            "allow-once",
            "allow-15m",
            "allow-1h",
            "allow-always",
            "deny"
        ]
    );
    // Without allow-once, or without the gateway's time, there is nothing to time-box.
    let mut deny_only = exec("a2", "ls", 10_000);
    deny_only.allowed_decisions = vec![Decision::Deny];
    sim.raise(deny_only);
    sim.raise(exec("a3", "ls", 0));
    for id in ["a2", "a3"] {
        let a = &sim.core.approvals.get(&id.into()).unwrap().approval;
        assert!(a.windows.is_empty(), "{id}");
    }
    // Switched off: an empty list.
    let mut off = Sim::with_trust(&[]);
    off.raise(exec("b1", "ls", 10_000));
    assert!(
        off.core
            .approvals
            .get(&"b1".into())
            .unwrap()
            .approval
            .windows
            .is_empty()
    );
}

#[test]
fn a_time_boxed_allow_resolves_once_then_records_its_grant_before_it_counts() {
    let mut sim = Sim::with_trust(&["1h"]);
    sim.raise(exec("a1", "ls -la", 10_000));
    let prompt = sim.deliver();
    sim.take();
    sim.answer(pressed(OWNER, "a1", hour(), &prompt));
    sim.check(expect![[r#"
        record answer 42 allow-1h a1 via #101
        resolve a1 allow-once for 42
    "#]]);
    assert!(
        sim.core.trust.grants.is_empty(),
        "no grant before the gateway allowed"
    );
    sim.resolve(Ok(()));
    sim.check(expect![[r#"
        emit resolved a1 allow-once by 42
        store outcome a1: allow-once by 42
        finish mem:42#101: allow-once by 42
        record grant g-6aa8fbbe of 42 for a1 on "ls -la" until 3610000
        notify cb:42: granted g-6aa8fbbe until 3610000
    "#]]);
    assert_eq!(
        sim.audit_events("a1"),
        [
            "requested",
            "delivered",
            "answered",
            "resolved",
            "ended",
            "grant_created"
        ]
    );
}

#[test]
fn the_same_request_inside_the_window_is_allowed_under_the_grant_and_told_quietly() {
    let mut sim = Sim::with_trust(&["1h"]);
    let g = sim.granted();
    sim.raise(exec("a2", "ls -la", 10_000 + HOUR - 1));
    sim.check(expect![[r#"
        store approval a2
        record use of g-6aa8fbbe on a2
        resolve a2 allow-once under g-6aa8fbbe of 42
    "#]]);
    assert!(
        sim.waiting
            .iter()
            .all(|e| !matches!(e, Effect::Deliver { .. })),
        "not prompted"
    );
    sim.resolve(Ok(()));
    sim.check(expect![[r#"
        emit resolved a2 allow-once by 42
        store outcome a2: allow-once by grant g-6aa8fbbe of 42
        post mem:42: ⏳ Allowed by your grant g-6aa8fbbe (until 01:00 UTC): ls -la. Revoke it to be asked again (/revoke g-6aa8fbbe).
    "#]]);
    assert_eq!(
        sim.audit_events("a2"),
        ["requested", "grant_used", "resolved", "ended"]
    );
    let used = sim.store.audit_log(Some(&"a2".into())).unwrap();
    assert_eq!(
        used[1].detail["note"],
        format!(
            "allowed by grant {} of 42 until 1970-01-01 01:00:10 UTC",
            g.id
        )
    );
    assert_eq!(sim.core.trust.grants[&g.id].uses, 1);
}

#[test]
fn one_byte_of_difference_or_a_request_after_the_window_is_prompted() {
    let mut sim = Sim::with_trust(&["1h"]);
    sim.granted();
    // The bridge's own clock is days ahead: the gateway's time decides, either way.
    sim.advance(10 * 24 * HOUR as u64);
    sim.raise(exec("b1", "ls -la ", 20_000));
    sim.raise(exec("b2", "ls -la", 10_000 + HOUR));
    sim.raise(exec("b3", "ls -la", 9_999));
    let mut other_agent = exec("b4", "ls -la", 20_000);
    other_agent.agent_id = Some("ops".into());
    sim.raise(other_agent);
    let log = sim.take();
    assert!(!log.contains("record use"), "{log}");
    let delivered: Vec<String> = sim
        .waiting
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver { approvals, .. } => Some(approvals[0].id.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, ["b1"], "b2..b4 queue behind b1 in the lane");
    assert_eq!(sim.core.approvals.pending_count(), 4);
    // A skewed bridge clock does not shorten it either: inside the window on the gateway's
    // clock is covered.
    sim.raise(exec("b5", "ls -la", 10_000 + HOUR / 2));
    sim.check(expect![[r#"
        store approval b5
        record use of g-6aa8fbbe on b5
        resolve b5 allow-once under g-6aa8fbbe of 42
    "#]]);
}

#[test]
fn a_revoked_grant_covers_nothing_and_only_an_owner_can_revoke() {
    let mut sim = Sim::with_trust(&["1h"]);
    let g = sim.granted();
    sim.answer(command(
        STRANGER,
        Request::Revoke {
            grant: g.id.clone(),
        },
    ));
    sim.check(expect![[r#"
        emit answered None by 666
        emit refused None by 666: not_allowed
        notify cb:666: refused not_allowed
    "#]]);
    sim.answer(command(OWNER, Request::ListGrants));
    sim.check(expect![[r#"
        emit answered None by 42
        notify cb:42: grants [g-6aa8fbbe(0 uses)]
    "#]]);
    sim.answer(command(
        OWNER,
        Request::Revoke {
            grant: g.id.clone(),
        },
    ));
    sim.check(expect![[r#"
        emit answered None by 42
        store revoked g-6aa8fbbe by 42
        notify cb:42: revoked g-6aa8fbbe already=false
    "#]]);
    sim.answer(command(
        OWNER,
        Request::Revoke {
            grant: g.id.clone(),
        },
    ));
    sim.answer(command(
        OWNER,
        Request::Revoke {
            grant: crate::grant::GrantId::from_random(7),
        },
    ));
    sim.check(expect![[r#"
        emit answered None by 42
        notify cb:42: revoked g-6aa8fbbe already=true
        emit answered None by 42
        emit refused None by 42: unknown_grant
        notify cb:42: refused unknown_grant
    "#]]);
    sim.raise(exec("a2", "ls -la", 20_000));
    sim.check(expect![[r#"
        store approval a2
        deliver mem:42 [a2] overhead from +0ms waited 0ms
    "#]]);
    let revoked: Vec<String> = sim
        .store
        .audit_log(None)
        .unwrap()
        .into_iter()
        .filter(|r| r.event == "grant_revoked")
        .map(|r| r.actor.unwrap_or_default())
        .collect();
    assert_eq!(revoked, ["42"]);
    // A restarted bridge does not bring it back.
    let mut sim = sim.restart();
    assert!(sim.core.trust.grants.is_empty());
    sim.take();
}

#[test]
fn grants_survive_a_restart() {
    let mut sim = Sim::with_trust(&["1h"]);
    let g = sim.granted();
    let mut sim = sim.restart();
    sim.take();
    sim.raise(exec("a2", "ls -la", 30_000));
    sim.check(expect![[r#"
        store approval a2
        record use of g-6aa8fbbe on a2
        resolve a2 allow-once under g-6aa8fbbe of 42
    "#]]);
    assert_eq!(sim.core.trust.grants[&g.id].until_ms, g.until_ms);
    // Turned off (`durations = []`): the stored grant covers nothing.
    sim.trust = trusting(&[]);
    let mut sim = sim.restart();
    sim.take();
    sim.raise(exec("a3", "ls -la", 30_000));
    sim.check(expect![[r#"
        store approval a3
        deliver mem:42 [a3] overhead from +0ms waited 0ms
    "#]]);
}

#[test]
fn a_window_the_prompt_did_not_offer_is_refused_and_a_late_press_learns_the_outcome() {
    let mut sim = Sim::with_trust(&["1h"]);
    sim.raise(exec("a1", "ls -la", 10_000));
    let prompt = sim.deliver();
    sim.take();
    let eight = Choice::AllowFor(Window::parse("8h").unwrap());
    sim.answer(pressed(OWNER, "a1", eight, &prompt));
    sim.check(expect![[r#"
        record answer 42 allow-8h a1 via #101
        emit refused Some("a1") by 42: decision_not_offered
        notify cb:42: refused decision_not_offered
    "#]]);
    // A stranger's time-boxed press is a stranger's press.
    sim.answer(pressed(STRANGER, "a1", hour(), &prompt));
    sim.check(expect![[r#"
        record answer 666 allow-1h a1 via #101
        emit refused Some("a1") by 666: not_allowed
        notify cb:666: refused not_allowed
    "#]]);
    // The approval expires; the button pressed afterwards (a replay) makes no grant.
    sim.ended("a1", Outcome::Expired { at_ms: 200_000 });
    sim.finish_all();
    sim.take();
    sim.answer(pressed(OWNER, "a1", hour(), &prompt));
    sim.check(expect![[r#"
        record answer 42 allow-1h a1 via #101
        look up 42 allow-1h a1 via #101
        notify cb:42: already finished: expired
    "#]]);
    assert!(sim.core.trust.grants.is_empty());
    assert!(sim.store.open_grants(0).unwrap().is_empty());
}

#[test]
fn a_grant_whose_use_cannot_be_recorded_or_resolved_asks_the_owner_instead() {
    let mut sim = Sim::with_trust(&["1h"]);
    sim.granted();
    // The disk is full: the use cannot be recorded, so nothing is allowed under it.
    sim.store.set_full(true);
    sim.raise(exec("a2", "ls -la", 20_000));
    sim.check(expect![[r#"
        store approval a2
        record use of g-6aa8fbbe on a2
        deliver mem:42 [a2] overhead from +0ms waited 0ms
    "#]]);
    sim.store.set_full(false);
    sim.deliver();
    sim.take();
    // The gateway cannot be reached: the owner is asked.
    sim.raise(exec("a3", "ls -la", 20_000));
    sim.take();
    sim.resolve(Err(GatewayError::Unavailable("down".into())));
    sim.check(expect![[r#"
        emit resolve_failed a3 by 42: gateway unavailable: down
        deliver mem:42 [a3] overhead from +0ms waited 0ms
    "#]]);
    // Someone else decided it first: nothing is posted, nothing prompted.
    sim.deliver();
    sim.raise(exec("a4", "ls -la", 20_000));
    sim.ended("a4", decided_elsewhere(Decision::Deny));
    sim.take();
    sim.resolve(Err(GatewayError::AlreadyResolved));
    let log = sim.take();
    assert!(!log.contains("post") && !log.contains("deliver"), "{log}");
}

#[test]
fn a_grant_whose_record_fails_is_not_made() {
    let mut sim = Sim::with_trust(&["1h"]);
    sim.raise(exec("a1", "ls -la", 10_000));
    let prompt = sim.deliver();
    sim.answer(pressed(OWNER, "a1", hour(), &prompt));
    sim.store.set_full(true);
    sim.take();
    sim.resolve(Ok(()));
    let log = sim.take();
    assert!(
        log.contains("notify cb:42: allowed a1 once, grant not stored"),
        "{log}"
    );
    sim.store.set_full(false);
    assert!(sim.core.trust.grants.is_empty());
    sim.raise(exec("a2", "ls -la", 20_000));
    assert!(!sim.take().contains("record use"));
}
