//! Path alerts against the real gateway: killed for longer than `[alerts] after`, the
//! owner's chat gets one alert with the fix, and once it is back one edit of the alert and
//! one "back" line; a channel that loses its owner (Telegram's token revoked) is told on
//! the other channel (Discord) and on `/healthz`. Records how long the owner waited.

use std::time::{Duration, Instant};

use bridge::store::{SqliteStore, Store};
use serde_json::json;
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_discord::FakeDiscord;
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

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_that_cannot_reach_the_owner_is_told_on_the_other_and_on_healthz() {
    const DISCORD_OWNER: &str = "555000111";
    const DISCORD_TOKEN: &str = "discord-alerts-token";
    let (gw, tg, dc) = tokio::join!(
        Gateway::start(GatewayConfig::default()),
        FakeTelegram::start(BOT_TOKEN),
        FakeDiscord::start(DISCORD_TOKEN)
    );
    let gw = gw.expect("start the OpenClaw gateway");
    let mut setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
    setup.extra_toml = format!(
        "[alerts]\nafter = \"{}s\"\n\n[discord]\nbot_token = \"env:AB_TEST_DISCORD_TOKEN\"\napi_url = \"{}\"\nallow_from = [\"{DISCORD_OWNER}\"]\n",
        AFTER.as_secs(),
        dc.api_url()
    );
    setup.env = vec![("AB_TEST_DISCORD_TOKEN".into(), DISCORD_TOKEN.into())];
    let exe = env!("CARGO_BIN_EXE_approval-bridge");
    let mut bridge = BridgeProcess::start_healthy(exe.as_ref(), setup)
        .await
        .unwrap();
    dc.wait_ready(Duration::from_secs(20)).await;

    // The owner revokes the bot's token with @BotFather: Telegram answers 401.
    let revoked = Instant::now();
    tg.revoke_token(true);
    let alert = dc
        .wait_for(AFTER * 4, "the telegram-down alert on Discord", |v| {
            v.bot_dms(DISCORD_OWNER)
                .into_iter()
                .find(|m| m.text().contains("Approvals cannot reach you"))
                .cloned()
        })
        .await;
    let to_alert = revoked.elapsed();
    let text = alert.text();
    assert!(
        text.contains("telegram cannot reach you")
            && text.contains("401")
            && text.contains("@BotFather"),
        "{text}\n---- bridge log ----\n{}",
        bridge.log()
    );
    assert!(
        to_alert >= AFTER,
        "posted after {to_alert:?}, before alerts.after"
    );
    let (status, body) = bridge.healthz().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("telegram cannot reach you")),
        "/healthz names the channel: {body}"
    );

    tg.revoke_token(false);
    let restored = Instant::now();
    let back = dc
        .wait_for(Duration::from_secs(60), "the back line on Discord", |v| {
            v.bot_dms(DISCORD_OWNER)
                .into_iter()
                .find(|m| m.text().starts_with("✅ Back:"))
                .cloned()
        })
        .await;
    let to_back = restored.elapsed();
    assert!(
        back.text().contains("telegram reaches you again"),
        "{}",
        back.text()
    );
    dc.wait_message(
        &alert.id,
        Duration::from_secs(10),
        "the alert marked over",
        |m| m.text().starts_with("✅ Resolved after"),
    )
    .await;
    bridge
        .wait_healthy(Duration::from_secs(10))
        .await
        .expect("/healthz is ok again");
    assert!(
        alerts(&tg).is_empty(),
        "nothing about Telegram was sent through Telegram"
    );
    testkit::figures::record(
        "channel_alerts",
        &json!({
            "after_s": AFTER.as_secs(),
            "telegram_revoked_to_discord_alert_ms": to_alert.as_millis() as u64,
            "telegram_restored_to_back_line_ms": to_back.as_millis() as u64,
        }),
    );
}
