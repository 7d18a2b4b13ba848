//! Path alerts against the real gateway: killed for longer than `[alerts] after`, the
//! owner's chat gets one alert with the fix, and once it is back one edit of the alert and
//! one "back" line. Records how long the owner waited for each.

use std::time::{Duration, Instant};

use bridge::store::{SqliteStore, Store};
use serde_json::json;
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_telegram::{FakeTelegram, Message};
use testkit::openclaw::{Gateway, GatewayConfig};

const OWNER: i64 = 111_111_111;
const BOT_TOKEN: &str = "123456:TEST-token";
const AFTER: Duration = Duration::from_secs(10);

fn alerts(tg: &FakeTelegram) -> Vec<Message> {
    let mine = |m: &Message| m.text.contains("Approvals cannot reach you");
    tg.bot_messages(OWNER).into_iter().filter(mine).collect()
}

fn back_lines(tg: &FakeTelegram) -> Vec<Message> {
    let mine = |m: &Message| m.text.starts_with("✅ Back:");
    tg.bot_messages(OWNER).into_iter().filter(mine).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_down_longer_than_after_alerts_once_and_says_when_it_is_back() {
    let (gw, tg) = tokio::join!(
        Gateway::start(GatewayConfig::default()),
        FakeTelegram::start(BOT_TOKEN)
    );
    let mut gw = gw.expect("start the OpenClaw gateway");
    let mut setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
    setup.extra_toml = format!("[alerts]\nafter = \"{}s\"\n", AFTER.as_secs());
    let exe = env!("CARGO_BIN_EXE_approval-bridge");
    let bridge = BridgeProcess::start_healthy(exe.as_ref(), setup)
        .await
        .unwrap();

    // (An outage shorter than `after` is not posted: the engine's tests cover it; a real
    // gateway restart here takes about as long as `after` itself.)
    let down = Instant::now();
    gw.stop();
    let alert = tg
        .wait_for(AFTER * 3, "the gateway-down alert", |v| {
            v.bot_messages(OWNER)
                .into_iter()
                .find(|m| m.text.contains("Approvals cannot reach you"))
                .cloned()
        })
        .await;
    let to_alert = down.elapsed();
    assert!(
        alert.text.contains("cannot reach the OpenClaw gateway")
            && alert.text.contains("Fix: check that the gateway runs"),
        "{}",
        alert.text
    );
    assert!(
        to_alert >= AFTER,
        "posted after {to_alert:?}, before alerts.after"
    );
    // Retries go on for a while longer: still one alert.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        alerts(&tg).len(),
        1,
        "one message per incident, not per retry"
    );

    gw.restart().await.unwrap();
    let up = Instant::now();
    let back = tg
        .wait_for(Duration::from_secs(40), "the back line", |v| {
            v.bot_messages(OWNER)
                .into_iter()
                .find(|m| m.text.starts_with("✅ Back:"))
                .cloned()
        })
        .await;
    let to_back = up.elapsed();
    assert!(
        back.text.contains("approvals reach you again"),
        "{}",
        back.text
    );
    let edited = tg
        .wait_message(
            OWNER,
            alert.message_id,
            Duration::from_secs(10),
            "the alert marked over",
            |m| m.text.starts_with("✅ Resolved after"),
        )
        .await;
    assert!(
        edited.text.contains("cannot reach the OpenClaw gateway"),
        "{}",
        edited.text
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let texts: Vec<String> = tg.bot_messages(OWNER).into_iter().map(|m| m.text).collect();
    assert_eq!(back_lines(&tg).len(), 1, "one back line: {texts:#?}");
    assert_eq!(alerts(&tg).len(), 0, "the alert now reads as resolved");

    let store = SqliteStore::open(&bridge.state_dir().join("bridge.sqlite")).unwrap();
    let posted: Vec<_> = store
        .audit_log(None)
        .unwrap()
        .into_iter()
        .filter(|r| r.event == "posted")
        .collect();
    assert_eq!(
        posted.len(),
        2,
        "the alert and the back line are audited: {posted:?}"
    );
    testkit::figures::record(
        "alerts",
        &json!({
            "after_s": AFTER.as_secs(),
            "gateway_down_to_alert_ms": to_alert.as_millis() as u64,
            "gateway_up_to_back_line_ms": to_back.as_millis() as u64,
        }),
    );
}
