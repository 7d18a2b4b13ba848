//! Path alerts on the core: one alert per incident once it has lasted `after`, none for a
//! shorter one, the recovery as an edit plus a new line, a channel's trouble told on the
//! others, and the rate bound. Time is an input; no alert decides anything.

use super::*;
use crate::channel::Reach;

const AFTER: u64 = 60_000;

impl Sim {
    /// Completes the oldest waiting post with a new message id; returns it.
    pub(super) fn posted(&mut self) -> MessageRef {
        let Some(Effect::Post {
            target,
            bulletin,
            incident,
        }) = self.take_waiting(|e| matches!(e, Effect::Post { .. }))
        else {
            panic!("no post waits: {:?}", self.waiting);
        };
        self.next_message += 1;
        let post = MessageRef {
            target: target.clone(),
            message: self.next_message.to_string(),
        };
        self.input(Input::Posted {
            target,
            bulletin,
            incident,
            result: Ok(post.clone()),
        });
        post
    }

    /// Nothing happened since the last look.
    fn nothing(&mut self) {
        assert_eq!(self.take(), "\n", "no effects");
    }

    /// Every audit record's event name, oldest first.
    fn audit_kinds(&self) -> Vec<String> {
        let log = self.store.audit_log(None).unwrap();
        log.into_iter().map(|r| r.event).collect()
    }

    fn gateway(&mut self, ev: GatewayEvent) {
        self.input(Input::Gateway(ev));
    }

    fn link_up(&mut self) {
        self.gateway(GatewayEvent::Connected {
            scopes: vec![],
            missing: vec![],
        });
        self.gateway(GatewayEvent::Snapshot(vec![]));
    }

    fn link_down(&mut self, reason: &str) {
        self.gateway(GatewayEvent::Disconnected {
            reason: reason.into(),
        });
    }
}

fn alerting() -> Sim {
    Sim::with_alerts(vec![MemoryChannel::new("mem", &[OWNER], &[OWNER])], AFTER)
}

fn two_channels() -> Sim {
    Sim::with_alerts(
        vec![
            MemoryChannel::new("mem", &[OWNER], &[OWNER]),
            MemoryChannel::new("other", &["7"], &["7"]),
        ],
        AFTER,
    )
}

#[test]
fn a_gateway_down_for_longer_than_after_is_posted_once_and_its_end_twice() {
    let mut sim = alerting();
    // At start the link is not up yet: an incident opens, due in `after`.
    sim.check(expect![[r#"
        arm +60000ms: alert Gateway #0
    "#]]);
    sim.link_up();
    sim.advance(1_000);
    sim.link_down("connect failed: connection refused");
    sim.check(expect![[r#"
        read history after - from 0
        arm +60000ms: alert Gateway #1
    "#]]);
    // The first incident's timer finds nothing to do; retries do not start new incidents.
    for _ in 0..5 {
        sim.advance(5_000);
        sim.link_down("connect failed: connection refused");
    }
    sim.fire_timer();
    sim.nothing();
    sim.fire_timer();
    sim.check(expect![[r#"
        post mem:42: ⚠️ Approvals cannot reach you: since 00:00 UTC, the bridge cannot reach the OpenClaw gateway (connect failed: connection refused).
        While this lasts, commands that need your approval are denied without asking you.
        Fix: check that the gateway runs (`openclaw gateway status` on its host) and that gateway.url points at it.
    "#]]);
    let alert = sim.posted();
    sim.advance(132_000);
    sim.link_down("connect failed: connection refused");
    sim.link_up();
    sim.check(expect![[r#"
        emit posted gateway_down mem:42: Ok("101")
        read history after - from 0
        edit post mem:42#101: ✅ Resolved after 3 min 12 s: since 00:00 UTC, the bridge cannot reach the OpenClaw gateway (connect failed: connection refused).
        post mem:42: ✅ Back: approvals reach you again (the problem lasted 3 min 12 s).
    "#]]);
    assert_eq!(alert.message, "101");
    sim.posted();
    assert_eq!(
        sim.audit_kinds(),
        vec!["posted", "posted"],
        "the alert and the back line are audited"
    );
}

#[test]
fn an_outage_shorter_than_after_is_never_posted() {
    let mut sim = alerting();
    sim.link_up();
    sim.link_down("connect failed: connection reset");
    sim.advance(AFTER - 1);
    sim.link_up();
    sim.take();
    sim.fire_timer();
    sim.fire_timer();
    sim.nothing();
    assert!(sim.waiting.is_empty(), "{:?}", sim.waiting);
}

#[test]
fn a_problem_that_changes_kind_is_posted_again_with_its_fix_and_ends_once() {
    let mut sim = alerting();
    sim.gateway(GatewayEvent::PairingRequired {
        request_id: Some("req-9".into()),
    });
    sim.fire_timer();
    sim.take();
    sim.posted();
    // Paired, but without operator.admin: blind, a new kind with its own fix, at once.
    sim.gateway(GatewayEvent::Connected {
        scopes: vec!["operator.read".into()],
        missing: vec!["operator.admin".into()],
    });
    sim.gateway(GatewayEvent::Snapshot(vec![]));
    sim.check(expect![[r#"
        emit posted gateway_pairing mem:42: Ok("101")
        post mem:42: ⚠️ Approvals cannot reach you: since 00:00 UTC, the bridge is connected to the gateway without the scope operator.admin, so it cannot see the approvals agents raise.
        While this lasts, commands that need your approval are denied without asking you.
        Fix: on the gateway host run `openclaw devices rotate --device dev1 --role operator --scope operator.admin` (or approve the device's scope upgrade in `openclaw devices list`).
        read history after - from 0
    "#]]);
    sim.posted();
    sim.advance(10_000);
    sim.link_up();
    sim.check(expect![[r#"
        emit posted gateway_blind mem:42: Ok("102")
        read history after - from 0
        edit post mem:42#101: ✅ Resolved after 1 min 10 s: since 00:00 UTC, the gateway waits for you to pair the bridge's device.
        edit post mem:42#102: ✅ Resolved after 1 min 10 s: since 00:00 UTC, the bridge is connected to the gateway without the scope operator.admin, so it cannot see the approvals agents raise.
        post mem:42: ✅ Back: approvals reach you again (the problem lasted 1 min 10 s).
    "#]]);
}

#[test]
fn a_channel_that_is_down_is_told_on_the_others_only() {
    let mut sim = two_channels();
    sim.link_up();
    sim.take();
    sim.fire_timer();
    sim.input(Input::ChannelReach {
        channel: "mem".into(),
        reach: Reach::Down {
            reason: "another program polls this bot's updates".into(),
            fix: "give the bridge its own bot".into(),
        },
    });
    sim.fire_timer();
    sim.check(expect![[r#"
        arm +60000ms: alert Channel("mem") #1
        post other:7: ⚠️ Approvals cannot reach you: since 00:01 UTC, mem cannot reach you (another program polls this bot's updates).
        Fix: give the bridge its own bot.
    "#]]);
    sim.posted();
    // Up again: the edit and the back line go where the alert went, not to the chat
    // that was cut off.
    sim.input(Input::ChannelReach {
        channel: "mem".into(),
        reach: Reach::Up,
    });
    sim.check(expect![[r#"
        emit posted channel_down:mem other:7: Ok("101")
        edit post other:7#101: ✅ Resolved after 1 min: since 00:01 UTC, mem cannot reach you (another program polls this bot's updates).
        post other:7: ✅ Back: mem reaches you again (the problem lasted 1 min).
    "#]]);
}

#[test]
fn a_chat_that_refuses_prompts_is_an_incident_until_a_prompt_gets_through() {
    let mut sim = two_channels();
    sim.link_up();
    sim.fire_timer();
    sim.input(Input::Gateway(GatewayEvent::Requested(approval(
        "a1",
        &["allow-once", "deny"],
    ))));
    sim.take();
    let mem = sim
        .take_waiting(|e| matches!(e, Effect::Deliver { target, .. } if target.channel == "mem"))
        .expect("a delivery to mem");
    let Effect::Deliver {
        target, approvals, ..
    } = mem
    else {
        unreachable!()
    };
    sim.input(Input::Delivered {
        target,
        ids: approvals.into_iter().map(|a| a.id).collect(),
        result: Err(ChannelError::Permanent(
            "Forbidden: bot was blocked by the user".into(),
        )),
    });
    sim.take();
    sim.fire_timer();
    sim.check(expect![[r#"
        post other:7: ⚠️ Approvals cannot reach you: since 00:01 UTC, mem cannot reach you (chat 42: Forbidden: bot was blocked by the user).
        Fix: open a direct chat with the bot from 42 again (unblock it, press Start) and check that the bot may write there.
    "#]]);
    sim.posted();
    // The next prompt to that chat gets through: the incident is over.
    sim.input(Input::Gateway(GatewayEvent::Requested(approval(
        "a2",
        &["allow-once", "deny"],
    ))));
    while sim
        .take_waiting(|e| matches!(e, Effect::Deliver { target, .. } if target.channel == "other"))
        .is_some()
    {}
    sim.deliver();
    let log = sim.take();
    assert!(
        log.contains("post other:7: ✅ Back: mem reaches you again (the problem lasted 1 min)."),
        "{log}"
    );
}

#[test]
fn two_incidents_of_one_kind_alert_a_chat_at_most_once_per_after() {
    let mut sim = Sim::with_alerts(
        vec![
            MemoryChannel::new("mem", &[OWNER, "43"], &[OWNER, "43"]),
            MemoryChannel::new("other", &["7"], &["7"]),
        ],
        AFTER,
    );
    sim.link_up();
    sim.fire_timer();
    sim.take();
    sim.input(Input::Gateway(GatewayEvent::Requested(approval(
        "a1",
        &["allow-once", "deny"],
    ))));
    while let Some(Effect::Deliver {
        target, approvals, ..
    }) =
        sim.take_waiting(|e| matches!(e, Effect::Deliver { target, .. } if target.channel == "mem"))
    {
        sim.input(Input::Delivered {
            target,
            ids: approvals.into_iter().map(|a| a.id).collect(),
            result: Err(ChannelError::Permanent("chat not found".into())),
        });
    }
    sim.take();
    sim.fire_timer();
    let first = sim.take();
    assert_eq!(first.matches("post other:7: ⚠️").count(), 1, "{first}");
    sim.posted();
    // The second chat's incident (same kind) waits out the window on `other:7`.
    sim.fire_timer();
    sim.check(expect![[r#"
        emit posted channel_down:mem other:7: Ok("101")
        arm +60000ms: alert Target(Target { channel: "mem", chat: "43" }) #2
    "#]]);
    sim.fire_timer();
    let second = sim.take();
    assert!(second.contains("chat 43: chat not found"), "{second}");
}

#[test]
fn alerts_off_posts_nothing() {
    let mut sim = Sim::new();
    sim.link_down("connect failed");
    sim.advance(10 * AFTER);
    sim.link_up();
    sim.check(expect![[r#"
        read history after - from 0
    "#]]);
    assert!(sim.waiting.is_empty());
}
