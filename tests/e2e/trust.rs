//! Owner-held trust against the real gateway: a time-boxed allow covers exactly the request
//! it was pressed on, until the window the gateway's clock measures ends or the owner revokes
//! it; it survives a restart, and nobody else can see, use or end it. The bridge is the real
//! binary, Telegram the fake Bot API.

use std::time::Duration;

use bridge::approval::{ApprovalId, Decision};
use bridge::store::{AuditRecord, SqliteStore, Store};
use serde_json::json;
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_telegram::{FakeTelegram, Message};
use testkit::openclaw::{Gateway, GatewayConfig, Operator, PendingRequest};

const OWNER: i64 = 555_000_001;
const STRANGER: i64 = 555_000_002;
const WAIT: Duration = Duration::from_secs(20);
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

struct World {
    gw: Gateway,
    tg: FakeTelegram,
    op: Operator,
    bridge: BridgeProcess,
}

/// A bridge whose `[trust]` section is `trust` and whose process gets `env`.
async fn world(token: &str, trust: &str, env: Vec<(String, String)>) -> World {
    let (gw, tg) = tokio::join!(
        Gateway::start(GatewayConfig::default()),
        FakeTelegram::start(token)
    );
    let gw = gw.expect("start the OpenClaw gateway");
    let mut setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
    setup.extra_toml = format!("\n[trust]\n{trust}\n");
    setup.env = env;
    let bridge =
        BridgeProcess::start_healthy(env!("CARGO_BIN_EXE_approval-bridge").as_ref(), setup)
            .await
            .unwrap();
    let op = Operator::connect(&gw, "requester").await.unwrap();
    World { gw, tg, op, bridge }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- bridge log ----\n{}\n---- gateway log: {} ----",
                self.bridge.log(),
                self.gw.log_path().display()
            );
            let calls: Vec<String> = self.tg.calls().iter().map(|c| c.line()).collect();
            eprintln!("---- telegram calls ----\n{}", calls.join("\n"));
        }
    }
}

impl World {
    async fn prompt(&self, id: &ApprovalId) -> Message {
        let data = format!("exec_approve:{id}:allow-once");
        self.tg
            .wait_for(WAIT, &format!("prompt for {id}"), |v| {
                v.bot_messages(OWNER)
                    .into_iter()
                    .find(|m| m.buttons().iter().any(|(_, d)| *d == data))
                    .cloned()
            })
            .await
    }

    fn prompted(&self, id: &ApprovalId) -> bool {
        let data = format!("exec_approve:{id}:allow-once");
        self.tg
            .bot_messages(OWNER)
            .iter()
            .any(|m| m.buttons().iter().any(|(_, d)| *d == data))
    }

    /// Presses the button whose payload ends in `:<token>` on `m` as `user`.
    fn press(&self, m: &Message, user: i64, token: &str) -> String {
        let data = m
            .buttons()
            .into_iter()
            .find(|(_, d)| d.ends_with(&format!(":{token}")))
            .unwrap_or_else(|| panic!("no {token} button on {:?}", m.buttons()))
            .1;
        self.tg.press(user, user, m.message_id, &data)
    }

    async fn answer_text(&self, query: &str) -> String {
        let a = self.tg.wait_callback_answer(query, WAIT).await;
        a["text"].as_str().unwrap_or_default().to_owned()
    }

    /// The bot's first message in `chat` after the first `after` ones that contains `needle`.
    async fn said(&self, chat: i64, after: usize, needle: &str) -> Message {
        self.tg
            .wait_for(WAIT, &format!("{needle:?} in {chat}"), |v| {
                v.bot_messages(chat)
                    .into_iter()
                    .skip(after)
                    .find(|m| m.text.contains(needle))
                    .cloned()
            })
            .await
    }

    fn sent_to(&self, chat: i64) -> usize {
        self.tg.bot_messages(chat).len()
    }

    fn audit(&self) -> Vec<AuditRecord> {
        SqliteStore::open(&self.bridge.state_dir().join("bridge.sqlite"))
            .unwrap()
            .audit_log(None)
            .unwrap()
    }

    fn events(&self, event: &str) -> Vec<AuditRecord> {
        self.audit()
            .into_iter()
            .filter(|r| r.event == event)
            .collect()
    }

    /// The one grant the owner made so far, from its `grant_created` record.
    fn grant(&self) -> String {
        let created = self.events("grant_created");
        assert_eq!(created.len(), 1, "one grant made: {created:?}");
        created[0].detail["grant"].as_str().unwrap().to_owned()
    }

    /// A request the bridge must allow under a grant: decided allow-once with no prompt,
    /// and the owner told in one line naming the grant.
    async fn allowed_by(&self, grant: &str, req: PendingRequest) -> Message {
        let id = req.id.clone();
        let before = self.sent_to(OWNER);
        assert_eq!(
            req.outcome(WAIT).await.unwrap(),
            Some(Decision::AllowOnce),
            "{id} allowed under {grant}"
        );
        let line = self
            .said(OWNER, before, &format!("Allowed by your grant {grant}"))
            .await;
        assert!(line.silent, "the line is sent without a notification");
        assert_eq!(
            line.buttons(),
            [(format!("Revoke {grant}"), format!("grant_revoke:{grant}"))]
        );
        assert!(!self.prompted(&id), "{id} was prompted although covered");
        let used: Vec<AuditRecord> = self
            .events("grant_used")
            .into_iter()
            .filter(|r| r.approval_id.as_deref() == Some(id.as_str()))
            .collect();
        assert_eq!(used.len(), 1, "{id}: one grant_used record");
        assert_eq!(used[0].detail["grant"], grant);
        assert_eq!(used[0].actor.as_deref(), Some(OWNER.to_string().as_str()));
        let note = used[0].detail["note"].as_str().unwrap();
        assert!(
            note.starts_with(&format!("allowed by grant {grant} of ")),
            "{note}"
        );
        line
    }

    /// A request a grant must not cover: it prompts, and the owner's deny decides it.
    async fn prompts_as_usual(&self, req: PendingRequest) {
        let prompt = self.prompt(&req.id).await;
        self.press(&prompt, OWNER, "deny");
        assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_allow_covers_exactly_its_request_until_the_owner_revokes_it() {
    let mut w = world("5550:TRUST-grant", "durations = [\"15m\", \"1h\"]", vec![]).await;
    let command = "ls -la /srv/app";
    let first = w.op.request_exec(command, 60_000).await.unwrap();
    let prompt = w.prompt(&first.id).await;
    let labels: Vec<String> = prompt.buttons().into_iter().map(|(l, _)| l).collect();
    assert_eq!(
        labels,
        [
            "Allow once",
            "Allow always",
            "Deny",
            "Allow for 15 min",
            "Allow for 1 h"
        ]
    );

    // A stranger's timed press makes nothing.
    let refused = w.press(&prompt, STRANGER, "allow-1h");
    assert!(
        w.answer_text(&refused).await.contains("not allowed"),
        "stranger told"
    );
    let query = w.press(&prompt, OWNER, "allow-1h");
    assert_eq!(
        first.outcome(WAIT).await.unwrap(),
        Some(Decision::AllowOnce)
    );
    let told = w.answer_text(&query).await;
    let grant = w.grant();
    assert!(
        told.contains(&format!("grant {grant}")) && told.contains("for 1 h"),
        "{told}"
    );
    let created = &w.events("grant_created")[0];
    assert_eq!(created.actor.as_deref(), Some(OWNER.to_string().as_str()));
    assert_eq!(created.detail["minutes"], 60);
    assert_eq!(created.detail["scope"]["command"], command);
    assert_eq!(
        created.detail["until_ms"].as_i64().unwrap() - created.detail["from_ms"].as_i64().unwrap(),
        3_600_000
    );

    // The same request is allowed on the owner's behalf, quietly.
    let again = w.op.request_exec(command, 60_000).await.unwrap();
    w.allowed_by(&grant, again).await;

    // One byte off, another cwd, another agent: each prompts as usual.
    let byte_off = w.op.request_exec("ls -la /srv/app ", 60_000).await.unwrap();
    w.prompts_as_usual(byte_off).await;
    let other_cwd =
        w.op.request_exec_with(command, 60_000, json!({"cwd": "/tmp"}))
            .await
            .unwrap();
    w.prompts_as_usual(other_cwd).await;
    let other_agent =
        w.op.request_exec_with(command, 60_000, json!({"agentId": "ops"}))
            .await
            .unwrap();
    w.prompts_as_usual(other_agent).await;

    // The grant survives a restart.
    assert!(w.bridge.terminate(WAIT).await.unwrap(), "clean SIGTERM");
    w.bridge.restart().await.unwrap();
    w.bridge.wait_healthy(WAIT).await.unwrap();
    let after_restart = w.op.request_exec(command, 60_000).await.unwrap();
    w.allowed_by(&grant, after_restart).await;

    // /grants lists it for the owner, and tells a stranger nothing.
    let n = w.sent_to(OWNER);
    w.tg.send_text(OWNER, OWNER, "/grants");
    let list = w.said(OWNER, n, "1 open").await;
    assert!(
        list.text.contains(&grant) && list.text.contains(command),
        "{}",
        list.text
    );
    assert_eq!(
        list.buttons(),
        [(format!("Revoke {grant}"), format!("grant_revoke:{grant}"))]
    );
    let s = w.sent_to(STRANGER);
    w.tg.send_text(STRANGER, STRANGER, "/grants");
    let told = w.said(STRANGER, s, "not allowed").await;
    assert!(!told.text.contains(&grant), "{}", told.text);
    // A stranger cannot end it, neither typed nor with the Revoke payload.
    w.tg.send_text(STRANGER, STRANGER, &format!("/revoke {grant}"));
    w.said(STRANGER, s + 1, "not allowed").await;
    let forged = w.tg.press(
        STRANGER,
        STRANGER,
        list.message_id,
        &format!("grant_revoke:{grant}"),
    );
    assert!(w.answer_text(&forged).await.contains("not allowed"));
    let still = w.op.request_exec(command, 60_000).await.unwrap();
    let line = w.allowed_by(&grant, still).await;

    // The owner revokes it with the line's button: the next such request prompts again.
    let press = w.press(&line, OWNER, &grant);
    let told = w.answer_text(&press).await;
    assert!(told.contains(&format!("Revoked {grant}")), "{told}");
    let revoked = w.op.request_exec(command, 60_000).await.unwrap();
    w.prompts_as_usual(revoked).await;
    let n = w.sent_to(OWNER);
    w.tg.send_text(OWNER, OWNER, &format!("/revoke {grant}"));
    w.said(OWNER, n, "already revoked").await;

    // The audit trail: one grant, three uses, one revocation by the owner; every refusal.
    assert_eq!(w.events("grant_created").len(), 1);
    assert_eq!(w.events("grant_used").len(), 3);
    let revocations = w.events("grant_revoked");
    assert_eq!(revocations.len(), 1, "{revocations:?}");
    assert_eq!(
        revocations[0].actor.as_deref(),
        Some(OWNER.to_string().as_str())
    );
    let strangers = w
        .events("refused")
        .into_iter()
        .filter(|r| r.actor.as_deref() == Some(STRANGER.to_string().as_str()))
        .count();
    assert!(
        strangers >= 4,
        "{strangers} of the stranger's 4 attempts audited"
    );
}

/// The window is the gateway's: a bridge whose wall clock is three days behind cannot keep a
/// grant open past it, and a timed button replayed after the window makes no new grant.
#[tokio::test(flavor = "multi_thread")]
async fn a_grant_ends_on_the_gateways_clock_whatever_the_bridges_says() {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's libfaketime (.ci/run does)"
    );
    let behind = vec![
        ("LD_PRELOAD".into(), LIBFAKETIME.into()),
        ("FAKETIME".into(), "-3d".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    let w = world("5551:TRUST-clock", "durations = [\"1m\"]", behind).await;
    let command = "echo within the minute";
    let first = w.op.request_exec(command, 120_000).await.unwrap();
    let first_id = first.id.clone();
    let prompt = w.prompt(&first.id).await;
    let query = w.press(&prompt, OWNER, "allow-1m");
    assert_eq!(
        first.outcome(WAIT).await.unwrap(),
        Some(Decision::AllowOnce)
    );
    w.answer_text(&query).await;
    let grant = w.grant();
    let created = &w.events("grant_created")[0];
    let from = created.detail["from_ms"].as_i64().unwrap();
    let now = bridge::approval::now_ms();
    assert!(
        (now - from).abs() < 60_000,
        "the window starts on the gateway's clock ({from}), not the bridge's (3 days behind)"
    );
    let inside = w.op.request_exec(command, 120_000).await.unwrap();
    w.allowed_by(&grant, inside).await;

    // Past the window on the gateway's clock (the bridge's still says three days before it).
    let until = created.detail["until_ms"].as_i64().unwrap();
    let wait = (until - bridge::approval::now_ms()).max(0) as u64 + 1_000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let outside = w.op.request_exec(command, 120_000).await.unwrap();
    let late = w.prompt(&outside.id).await;
    // The old timed button replayed on the finished prompt: no second grant.
    let replay = w.tg.press(
        OWNER,
        OWNER,
        prompt.message_id,
        &format!("exec_approve:{first_id}:allow-1m"),
    );
    let told = w.answer_text(&replay).await;
    assert!(!told.contains("grant g-"), "{told}");
    w.press(&late, OWNER, "deny");
    assert_eq!(outside.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
    assert_eq!(w.events("grant_created").len(), 1, "no grant from a replay");
    assert_eq!(w.events("grant_used").len(), 1);
}
