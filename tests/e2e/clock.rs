//! Clock skew: expiry is the gateway's business, so a bridge whose wall clock is days off
//! still prompts, decides only on a tap and finishes what the gateway expires. The skew is
//! real: the bridge runs under libfaketime (LD_PRELOAD), monotonic time left alone. Each
//! bridge has its own bot, as Telegram requires of two pollers (one token, two pollers:
//! 409, and the updates split at random between them).

use std::path::Path;
use std::time::Duration;

use bridge::approval::{ApprovalId, Decision};
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_telegram::{FakeTelegram, Message};
use testkit::openclaw::{Gateway, GatewayConfig, Operator};

const AHEAD: i64 = 333_000_001;
const BEHIND: i64 = 333_000_002;
const WAIT: Duration = Duration::from_secs(30);
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The UTC date (YYYY-MM-DD) `days` from now, as `date` prints it.
fn date_in(days: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("{days} days"), "+%F"])
        .output()
        .expect("run date");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn skewed_bridge(gw: &Gateway, tg: &FakeTelegram, owner: i64, days: i64) -> BridgeProcess {
    let mut setup = BridgeSetup::telegram_owner(gw, tg, owner);
    setup.env = vec![
        ("LD_PRELOAD".into(), LIBFAKETIME.into()),
        ("FAKETIME".into(), format!("{days:+}d")),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    BridgeProcess::start_healthy(env!("CARGO_BIN_EXE_approval-bridge").as_ref(), setup)
        .await
        .expect("start the skewed bridge")
}

async fn prompt(tg: &FakeTelegram, owner: i64, id: &ApprovalId) -> Message {
    let data = format!("exec_approve:{id}:allow-once");
    tg.wait_for(WAIT, &format!("prompt for {id} in {owner}"), |v| {
        v.bot_messages(owner)
            .into_iter()
            .find(|m| m.buttons().iter().any(|(_, d)| *d == data))
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_local_clock_decides_nothing() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's libfaketime (.ci/run does)"
    );
    let (gw, tg_ahead, tg_behind) = tokio::join!(
        Gateway::start(GatewayConfig::default()),
        FakeTelegram::start("4242:CLOCK-ahead"),
        FakeTelegram::start("4243:CLOCK-behind")
    );
    let gw = gw.expect("start the OpenClaw gateway");
    let (ahead_date, behind_date) = (date_in(3), date_in(-3));
    let ahead = skewed_bridge(&gw, &tg_ahead, AHEAD, 3).await;
    let behind = skewed_bridge(&gw, &tg_behind, BEHIND, -3).await;
    let op = Operator::connect(&gw, "requester").await.unwrap();

    // A request the ahead bridge sees as three days expired, the behind one as far off:
    // both prompt it, and only the owner's tap decides it.
    let tapped = op
        .request_exec("echo decided by a tap", 120_000)
        .await
        .unwrap();
    let on_ahead = prompt(&tg_ahead, AHEAD, &tapped.id).await;
    let on_behind = prompt(&tg_behind, BEHIND, &tapped.id).await;
    tg_ahead.press(
        AHEAD,
        AHEAD,
        on_ahead.message_id,
        &format!("exec_approve:{}:allow-once", tapped.id),
    );
    assert_eq!(
        tapped.outcome(WAIT).await.unwrap(),
        Some(Decision::AllowOnce)
    );
    for (tg, owner, m) in [
        (&tg_ahead, AHEAD, &on_ahead),
        (&tg_behind, BEHIND, &on_behind),
    ] {
        let done = tg
            .wait_message(owner, m.message_id, WAIT, "tapped prompt finished", |m| {
                m.buttons().is_empty()
            })
            .await;
        assert!(done.text.contains("Allowed once"), "{}", done.text);
    }

    // Nobody taps: the gateway's expiry ends it, never a decision by either bridge.
    let untouched = op.request_exec("echo left alone", 4_000).await.unwrap();
    let on_ahead = prompt(&tg_ahead, AHEAD, &untouched.id).await;
    let on_behind = prompt(&tg_behind, BEHIND, &untouched.id).await;
    assert_eq!(
        untouched.outcome(WAIT).await.unwrap(),
        None,
        "nobody decided"
    );
    for (tg, owner, m) in [
        (&tg_ahead, AHEAD, &on_ahead),
        (&tg_behind, BEHIND, &on_behind),
    ] {
        let done = tg
            .wait_message(owner, m.message_id, WAIT, "expired prompt finished", |m| {
                m.buttons().is_empty()
            })
            .await;
        assert!(done.text.contains("Expired"), "{}", done.text);
    }

    // The skew was real: each bridge's log carries its own shifted date (either side of a
    // midnight the test may have crossed).
    for (b, days, early) in [(&ahead, 3, &ahead_date), (&behind, -3, &behind_date)] {
        let log = b.log();
        assert!(
            log.contains(early.as_str()) || log.contains(&date_in(days)),
            "the bridge ran with a clock {days} days off:\n{log}"
        );
    }
}
