//! What was denied while nobody could see it, against the real gateway: with the bridge
//! stopped an agent's exec is refused for want of an approval route; once the bridge is
//! back the owner's chat gets one report naming that command, and a restart does not
//! repeat it. Records the time from the bridge's reconnect to the report.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_model::{AgentTurn, FakeModel, require_approval_always};
use testkit::fake_telegram::{FakeTelegram, Message};
use testkit::openclaw::Gateway;

const OWNER: i64 = 111_111_111;
const BOT_TOKEN: &str = "123456:TEST-token";
/// The first agent turn on a fresh gateway takes ~15 s on an idle machine.
const TURN_WAIT: Duration = Duration::from_secs(120);

fn reports(tg: &FakeTelegram) -> Vec<Message> {
    let mine = |m: &Message| m.text.contains("ended without asking you");
    tg.bot_messages(OWNER).into_iter().filter(mine).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_denied_while_the_bridge_was_down_is_reported_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let model = FakeModel::start().await;
    let command = format!("touch {}", marker.display());
    model.script_exec(&command);
    let (gw, tg) = tokio::join!(
        Gateway::start(model.gateway_config()),
        FakeTelegram::start(BOT_TOKEN)
    );
    let gw = gw.expect("start the OpenClaw gateway");
    require_approval_always(&gw)
        .await
        .expect("set the host approvals document");
    let exe = env!("CARGO_BIN_EXE_approval-bridge");
    let setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
    // The first start is where a fresh state directory's history begins.
    let mut bridge = BridgeProcess::start_healthy(exe.as_ref(), setup)
        .await
        .unwrap();
    assert!(bridge.terminate(Duration::from_secs(10)).await.unwrap());

    // Nobody can see it: the gateway denies the exec at once; the agent's turn goes on.
    let turn = AgentTurn::start(&gw, "Please create the marker file.").unwrap();
    let done = turn.finish(TURN_WAIT).await.expect("the agent turn ends");
    assert!(!marker.exists(), "the command ran although nobody approved");
    eprintln!("agent turn: exit {:?} after {:?}", done.code, done.elapsed);

    bridge.restart().await.unwrap();
    bridge.wait_healthy(Duration::from_secs(30)).await.unwrap();
    let healthy = Instant::now();
    let report = tg
        .wait_for(
            Duration::from_secs(10),
            "the report of the denied exec",
            |v| {
                v.bot_messages(OWNER)
                    .into_iter()
                    .find(|m| m.text.contains("ended without asking you"))
                    .cloned()
            },
        )
        .await;
    let to_report = healthy.elapsed();
    assert!(
        report.text.contains(&command)
            && report.text.contains("agent main")
            && report
                .text
                .contains("Denied: no approval route reached anyone"),
        "{}",
        report.text
    );
    assert!(
        report.text.contains("1 command ended without asking you"),
        "{}",
        report.text
    );

    // `/missed` lists it with its id.
    tg.send_text(OWNER, OWNER, "/missed");
    let listed = tg
        .wait_for(Duration::from_secs(10), "the /missed answer", |v| {
            v.bot_messages(OWNER)
                .into_iter()
                .find(|m| m.text.contains("ended without reaching you, newest first"))
                .cloned()
        })
        .await;
    assert!(listed.text.contains(&command), "{}", listed.text);

    // A restart reads on from the stored mark: no second report.
    assert!(bridge.terminate(Duration::from_secs(10)).await.unwrap());
    bridge.restart().await.unwrap();
    bridge.wait_healthy(Duration::from_secs(30)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(reports(&tg).len(), 1, "reported once, not at every restart");

    testkit::figures::record(
        "missed",
        &json!({ "bridge_healthy_to_report_ms": to_report.as_millis() as u64 }),
    );
}
