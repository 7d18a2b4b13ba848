//! Real agent runs end to end: an `openclaw agent` turn on the real gateway, whose model
//! (testkit::fake_model, scripted) asks `exec` to create a marker file; the host approvals
//! document makes the exec wait for a human; the real bridge binary puts the prompt in the
//! owner's Telegram DM (the fake Bot API); the owner's tap decides whether the file appears.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bridge::approval::Decision;
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_model::{AgentTurn, FakeModel, TurnResult, require_approval_always};
use testkit::fake_telegram::{FakeTelegram, Message};
use testkit::openclaw::Gateway;

const OWNER: i64 = 111_111_111;
const BOT_TOKEN: &str = "123456:AGENT-token";
/// The first turn on a fresh gateway takes ~15 s to reach the approval on an idle machine.
const PROMPT_WAIT: Duration = Duration::from_secs(120);
const TURN_WAIT: Duration = Duration::from_secs(120);

struct Rig {
    model: FakeModel,
    gw: Gateway,
    tg: FakeTelegram,
    bridge: BridgeProcess,
    marker: PathBuf,
    _dir: tempfile::TempDir,
}

/// A gateway whose agent runs `touch <marker>` through an always-ask exec, and a healthy
/// bridge serving the owner.
async fn rig() -> Rig {
    let dir = tempfile::Builder::new()
        .prefix("agent-e2e-")
        .tempdir()
        .unwrap();
    let marker = dir.path().join("marker");
    let model = FakeModel::start().await;
    model.script_exec(&format!("touch {}", marker.display()));
    let (gw, tg) = tokio::join!(
        Gateway::start(model.gateway_config()),
        FakeTelegram::start(BOT_TOKEN)
    );
    let gw = gw.expect("start the OpenClaw gateway");
    require_approval_always(&gw)
        .await
        .expect("set the host approvals document");
    let setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
    let bridge =
        BridgeProcess::start_healthy(env!("CARGO_BIN_EXE_approval-bridge").as_ref(), setup)
            .await
            .unwrap();
    Rig {
        model,
        gw,
        tg,
        bridge,
        marker,
        _dir: dir,
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- bridge log ---\n{}", self.bridge.log());
            eprintln!("--- fake model requests ---\n{}", self.model.summary());
            let log = std::fs::read_to_string(self.gw.log_path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- gateway log {} (last 60 lines) ---",
                self.gw.log_path().display()
            );
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}

impl Rig {
    /// The bridge's prompt (the first owner DM with buttons).
    async fn prompt(&self) -> Message {
        self.tg
            .wait_for(PROMPT_WAIT, "an approval prompt in the owner's DM", |v| {
                v.bot_messages(OWNER)
                    .into_iter()
                    .find(|m| !m.buttons().is_empty())
                    .cloned()
            })
            .await
    }

    /// Taps the button deciding `decision` on `prompt` as the owner, as soon as the prompt
    /// is visible: a prompt the owner can see must accept the owner's answer.
    fn tap(&self, prompt: &Message, decision: Decision) -> String {
        let data = prompt
            .buttons()
            .into_iter()
            .find(|(_, data)| data.ends_with(&format!(":{}", decision.as_str())))
            .unwrap_or_else(|| panic!("no {decision} button on {:?}", prompt.buttons()))
            .1;
        self.tg.press(OWNER, OWNER, prompt.message_id, &data)
    }

    /// The bridge's answer to the owner's tap: accepted, not a refusal (those are alerts).
    async fn accepted(&self, query: &str) {
        let answer = self
            .tg
            .wait_callback_answer(query, Duration::from_secs(20))
            .await;
        assert_ne!(
            answer["show_alert"], true,
            "the bridge refused the owner's tap: {answer}"
        );
    }

    /// The prompt once the bridge finished it (buttons gone, outcome shown).
    async fn finished(&self, prompt: &Message) -> Message {
        self.tg
            .wait_message(
                OWNER,
                prompt.message_id,
                Duration::from_secs(20),
                "the prompt to show the outcome",
                |m| m.buttons().is_empty(),
            )
            .await
    }

    async fn finish(&self, turn: AgentTurn) -> TurnResult {
        let done = turn.finish(TURN_WAIT).await.expect("the agent turn ends");
        eprintln!(
            "agent turn: exit {:?} after {:?}\nstdout: {}\nstderr: {}",
            done.code, done.elapsed, done.stdout, done.stderr
        );
        done
    }

    /// The fake model saw the exec call's result: the turn went past the tool.
    fn model_saw_tool_result(&self) -> bool {
        self.model.requests().iter().any(|r| {
            r.body["messages"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["role"] == "tool"))
        })
    }
}

/// How long after `since` the file at `path` appeared; `None` if not within `limit` of it.
async fn wait_for_file(path: &Path, since: Instant, limit: Duration) -> Option<Duration> {
    while since.elapsed() < limit {
        if path.exists() {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_allows_agent_exec_and_the_command_runs() {
    let rig = rig().await;
    let turn = AgentTurn::start(&rig.gw, "Please create the marker file.").unwrap();
    let prompt = rig.prompt().await;
    let to_prompt = turn.started.elapsed();
    assert!(
        prompt.text.contains("touch"),
        "prompt shows the command: {}",
        prompt.text
    );
    assert!(
        !rig.marker.exists(),
        "the command ran before anyone approved it"
    );

    let pressed = Instant::now();
    let query = rig.tap(&prompt, Decision::AllowOnce);
    rig.accepted(&query).await;
    let to_marker = wait_for_file(&rig.marker, pressed, Duration::from_secs(60)).await;
    eprintln!(
        "TIMING allow: turn start -> prompt {to_prompt:?}; press -> marker file {to_marker:?}"
    );
    assert!(
        to_marker.is_some(),
        "marker file {} never appeared after allow-once",
        rig.marker.display()
    );

    let done = rig.finish(turn).await;
    eprintln!("TIMING allow: press -> turn end {:?}", pressed.elapsed());
    assert_eq!(done.code, Some(0), "the agent turn succeeded");
    assert!(
        rig.model_saw_tool_result(),
        "the model got the exec result back"
    );
    let shown = rig.finished(&prompt).await;
    eprintln!("finished prompt: {}", shown.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_denies_agent_exec_and_the_command_never_runs() {
    let rig = rig().await;
    let turn = AgentTurn::start(&rig.gw, "Please create the marker file.").unwrap();
    let prompt = rig.prompt().await;
    let to_prompt = turn.started.elapsed();
    assert!(
        prompt.text.contains("touch"),
        "prompt shows the command: {}",
        prompt.text
    );

    let pressed = Instant::now();
    let query = rig.tap(&prompt, Decision::Deny);
    rig.accepted(&query).await;
    let done = rig.finish(turn).await;
    eprintln!(
        "TIMING deny: turn start -> prompt {to_prompt:?}; press -> turn end {:?}",
        pressed.elapsed()
    );
    assert!(
        rig.model_saw_tool_result(),
        "the model got the refusal back and ended the turn"
    );
    assert!(
        !rig.marker.exists(),
        "marker file {} appeared although the owner denied",
        rig.marker.display()
    );
    assert_eq!(
        done.code,
        Some(0),
        "the turn itself ends normally after the denied tool call"
    );
    let shown = rig.finished(&prompt).await;
    eprintln!("finished prompt: {}", shown.text);
}
