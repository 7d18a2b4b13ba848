//! The whole bridge, as users run it: the real binary with a TOML config, the real
//! OpenClaw gateway, and the fake Telegram Bot API on 127.0.0.1 standing in for the owner's
//! phone. Each test gets its own gateway, bot server and state directory.

use std::time::{Duration, Instant};

use bridge::approval::{ApprovalId, Decision};
use bridge::store::{SqliteStore, Store};
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_telegram::{FakeTelegram, Message};
use testkit::openclaw::{Gateway, GatewayConfig, Operator};

const OWNER: i64 = 111_111_111;
const STRANGER: i64 = 222_222_222;
const BOT_TOKEN: &str = "123456:TEST-token";
const WAIT: Duration = Duration::from_secs(20);

struct World {
    gw: Gateway,
    tg: FakeTelegram,
    op: Operator,
    bridge: BridgeProcess,
}

async fn world() -> World {
    let (gw, tg) = tokio::join!(
        Gateway::start(GatewayConfig::default()),
        FakeTelegram::start(BOT_TOKEN)
    );
    let gw = gw.expect("start the OpenClaw gateway");
    let setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
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
    /// The prompt for approval `id` in the owner's DM.
    async fn prompt(&self, id: &ApprovalId) -> Message {
        let needle = id.as_str().to_owned();
        self.tg
            .wait_for(WAIT, &format!("prompt for {needle}"), |v| {
                v.bot_messages(OWNER)
                    .into_iter()
                    .find(|m| m.raw.contains(&needle) && m.document.is_none())
                    .cloned()
            })
            .await
    }

    fn press(&self, m: &Message, user: i64, data: &str) -> String {
        self.tg.press(user, user, m.message_id, data)
    }

    /// Presses the button for `decision` on prompt `m` as the owner.
    fn tap(&self, m: &Message, decision: Decision) -> String {
        let data = m
            .buttons()
            .into_iter()
            .find(|(_, d)| d.ends_with(decision.as_str()))
            .unwrap_or_else(|| panic!("no {decision} button on {:?}", m.buttons()))
            .1;
        self.press(m, OWNER, &data)
    }

    async fn answer_text(&self, query: &str) -> String {
        let a = self.tg.wait_callback_answer(query, WAIT).await;
        a.get("text")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned()
    }

    async fn finished(&self, m: &Message, what: &str) -> Message {
        self.tg
            .wait_message(OWNER, m.message_id, WAIT, what, |m| m.buttons().is_empty())
            .await
    }

    fn audit(&self) -> Vec<bridge::store::AuditRecord> {
        SqliteStore::open(&self.bridge.state_dir().join("bridge.sqlite"))
            .unwrap()
            .audit_log(None)
            .unwrap()
    }

    fn prompts_for(&self, id: &ApprovalId) -> usize {
        self.tg
            .bot_messages(OWNER)
            .iter()
            .filter(|m| m.raw.contains(id.as_str()) && m.document.is_none())
            .count()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_taps_decide_each_way() {
    let w = world().await;
    for decision in [Decision::AllowOnce, Decision::Deny, Decision::AllowAlways] {
        let req =
            w.op.request_exec(&format!("echo {decision}"), 60_000)
                .await
                .unwrap();
        let prompt = w.prompt(&req.id).await;
        let labels: Vec<String> = prompt.buttons().into_iter().map(|(l, _)| l).collect();
        // The default `[trust] durations = ["1h"]` adds its row below the decisions.
        assert_eq!(
            labels,
            ["Allow once", "Allow always", "Deny", "Allow for 1 h"],
            "buttons for {decision}"
        );
        for (_, data) in prompt.buttons() {
            assert!(
                data.starts_with(&format!("exec_approve:{}:", req.id)) && data.len() <= 64,
                "{data}"
            );
        }
        let query = w.tap(&prompt, decision);
        assert_eq!(req.outcome(WAIT).await.unwrap(), Some(decision));
        let done = w.finished(&prompt, "prompt finished").await;
        assert!(done.text.contains(decision.past()), "{}", done.text);
        assert!(
            done.text.contains(&OWNER.to_string()),
            "names who decided: {}",
            done.text
        );
        assert!(w.answer_text(&query).await.contains(decision.past()));
    }
    assert_eq!(
        w.tg.calls_to("sendChatAction").len(),
        0,
        "no typing action before prompts"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stranger_cannot_approve() {
    let w = world().await;
    let req =
        w.op.request_exec("rm -rf /important", 60_000)
            .await
            .unwrap();
    let prompt = w.prompt(&req.id).await;
    let data = prompt.buttons()[0].1.clone();
    let q = w.press(&prompt, STRANGER, &data);
    assert!(w.answer_text(&q).await.contains("not allowed"));
    // Still pending: the prompt keeps its buttons and the owner can still decide.
    assert!(
        !w.tg
            .message(OWNER, prompt.message_id)
            .unwrap()
            .buttons()
            .is_empty()
    );
    let refused = w
        .audit()
        .into_iter()
        .find(|r| r.event == "refused")
        .expect("refusal audited");
    assert_eq!(
        refused.actor.as_deref(),
        Some(STRANGER.to_string().as_str())
    );
    assert_eq!(refused.detail["reason"], "not_allowed");
    w.tap(&prompt, Decision::Deny);
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_callback_data_is_refused_without_harm() {
    let w = world().await;
    let req = w.op.request_exec("echo forged", 60_000).await.unwrap();
    let prompt = w.prompt(&req.id).await;
    let other = uuid::Uuid::new_v4();
    let forged = [
        format!("exec_approve:{other}:allow-once"), // unknown approval
        format!("exec_approve:{}:yolo", req.id),    // unknown decision
        "hello".to_owned(),                         // garbage
        format!("exec_approve:{}:allow-once{}", req.id, "x".repeat(40)), // over 64 bytes
    ];
    for data in &forged {
        let q = w.press(&prompt, OWNER, data);
        let text = w.answer_text(&q).await;
        assert!(
            !text.is_empty(),
            "callback for {data:?} answered with a reason"
        );
    }
    assert_eq!(w.bridge.healthz().await.unwrap().0, 200, "still healthy");
    assert!(
        !w.tg
            .message(OWNER, prompt.message_id)
            .unwrap()
            .buttons()
            .is_empty(),
        "still pending"
    );
    let refusals = w
        .audit()
        .into_iter()
        .filter(|r| r.event == "refused")
        .count();
    assert_eq!(refusals, forged.len());
    w.tap(&prompt, Decision::AllowOnce);
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
}

#[tokio::test(flavor = "multi_thread")]
async fn decision_by_another_operator_finishes_the_prompt() {
    let w = world().await;
    let req = w.op.request_exec("echo elsewhere", 60_000).await.unwrap();
    let prompt = w.prompt(&req.id).await;
    w.op.resolve(&req.id, Decision::Deny).await.unwrap();
    let done = w
        .finished(&prompt, "prompt finished by another operator")
        .await;
    assert!(done.text.contains("Denied elsewhere"), "{}", done.text);
    // A late press learns the canonical outcome and does not degrade the prompt.
    let q = w.tap(&prompt, Decision::AllowOnce);
    assert!(w.answer_text(&q).await.contains("Denied elsewhere"));
    assert_eq!(
        w.tg.message(OWNER, prompt.message_id).unwrap().text,
        done.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_finishes_the_prompt() {
    let w = world().await;
    let req = w.op.request_exec("echo too late", 3_000).await.unwrap();
    let prompt = w.prompt(&req.id).await;
    assert_eq!(req.outcome(WAIT).await.unwrap(), None, "nobody decided");
    let done = w.finished(&prompt, "prompt marked expired").await;
    assert!(done.text.contains("Expired"), "{}", done.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_restart_finishes_forgotten_prompts_and_keeps_working() {
    let mut w = world().await;
    let req =
        w.op.request_exec("echo before restart", 120_000)
            .await
            .unwrap();
    let prompt = w.prompt(&req.id).await;
    w.gw.stop();
    let (code, body) = loop {
        let (code, body) = w.bridge.healthz().await.unwrap();
        if code != 200 {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, 503);
    assert!(
        body["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("gateway: link down"),
        "{body}"
    );
    w.gw.restart().await.unwrap();
    let done = w.finished(&prompt, "forgotten approval finished").await;
    assert!(done.text.contains("No longer pending"), "{}", done.text);
    w.bridge
        .wait_healthy(Duration::from_secs(60))
        .await
        .unwrap();
    let op = Operator::connect(&w.gw, "requester-2").await.unwrap();
    let req2 = op.request_exec("echo after restart", 60_000).await.unwrap();
    let prompt2 = w.prompt(&req2.id).await;
    w.tap(&prompt2, Decision::AllowOnce);
    let id2 = req2.id.clone();
    assert_eq!(req2.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
    assert_eq!(w.prompts_for(&req.id), 1, "no duplicate of the old prompt");
    assert_eq!(w.prompts_for(&id2), 1);
}

/// A suspended gateway (`openclaw gateway suspend`) lets an operator connect but answers
/// its calls with a retryable UNAVAILABLE ("… unavailable during gateway suspension"): a
/// bridge started then keeps retrying, says why on /healthz, warns once rather than per
/// attempt, and works soon after the gateway resumes.
#[tokio::test(flavor = "multi_thread")]
async fn suspended_gateway_answers_unavailable_and_the_bridge_waits_it_out() {
    let mut w = world().await;
    // As `openclaw gateway suspend --wait`: "busy" until the gateway's start-up work is done.
    let request = serde_json::json!({"requestId": uuid::Uuid::new_v4().to_string()});
    let deadline = Instant::now() + Duration::from_secs(90);
    let prepared = loop {
        let p =
            w.op.call("gateway.suspend.prepare", request.clone())
                .await
                .expect("gateway.suspend.prepare");
        if p["status"] == "ready" {
            break p;
        }
        assert!(Instant::now() < deadline, "gateway never idle: {p}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    w.bridge.kill9().await.unwrap();
    w.bridge.restart().await.unwrap();
    let deadline = Instant::now() + WAIT;
    let problem = loop {
        let (code, body) = w
            .bridge
            .healthz()
            .await
            .unwrap_or((0, serde_json::Value::Null));
        let p = body["problems"][0].as_str().unwrap_or_default().to_owned();
        if code == 503 && p.contains("gateway unavailable") {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz names the refusal: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Several attempts meet the suspension meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(w.bridge.healthz().await.unwrap().0, 503);
    let resumed = Instant::now();
    let answer =
        w.op.call(
            "gateway.suspend.resume",
            serde_json::json!({"suspensionId": prepared["suspensionId"]}),
        )
        .await
        .expect("gateway.suspend.resume");
    assert_eq!(answer["resumed"], true, "{answer}");
    w.bridge.wait_healthy(WAIT).await.unwrap();
    let back = resumed.elapsed();
    let log = w.bridge.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("gateway link down") && l.contains("gateway unavailable"))
        .count();
    assert_eq!(warned, 1, "one warning for the whole suspension:\n{log}");
    eprintln!("suspension: {problem:?}; healthy {back:?} after resume");

    let req =
        w.op.request_exec("echo after suspension", 60_000)
            .await
            .unwrap();
    let prompt = w.prompt(&req.id).await;
    w.tap(&prompt, Decision::AllowOnce);
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_bridge_restarts_without_duplicates_and_old_buttons_work() {
    let mut w = world().await;
    let req =
        w.op.request_exec("echo survive kill -9", 120_000)
            .await
            .unwrap();
    let prompt = w.prompt(&req.id).await;
    // Killed once the prompt is recorded: a kill between Telegram's answer and the record
    // leaves a prompt the restart sweep takes the buttons off (faults.rs covers that).
    w.bridge
        .wait_log(WAIT, &format!("event=\"delivered\" id={}", req.id))
        .await
        .unwrap();
    w.bridge.kill9().await.unwrap();
    w.bridge.restart().await.unwrap();
    w.bridge
        .wait_healthy(Duration::from_secs(60))
        .await
        .unwrap();
    w.tap(&prompt, Decision::AllowOnce);
    let id = req.id.clone();
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
    w.finished(&prompt, "old prompt edited after restart").await;
    assert_eq!(w.prompts_for(&id), 1, "no duplicate prompt after restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_long_command_is_shown_literally_and_cut_safely() {
    let w = world().await;
    let command = format!(
        "echo '<b>bold</b> </code> <a href=\"https://evil.example\">x</a> &amp;' {}",
        "y".repeat(5000)
    );
    let req = w.op.request_exec(&command, 60_000).await.unwrap();
    let prompt = w.prompt(&req.id).await;
    assert_eq!(prompt.parse_mode.as_deref(), Some("HTML"));
    assert!(
        prompt
            .text
            .contains("<b>bold</b> </code> <a href=\"https://evil.example\">x</a> &amp;"),
        "{}",
        prompt.text
    );
    assert!(prompt.text.encode_utf16().count() <= 4096);
    assert!(!prompt.raw.contains("<a href"), "no live link");
    assert_eq!(
        prompt.buttons().len(),
        4,
        "three decisions and the default 1 h allow"
    );
    let full =
        w.tg.wait_for(WAIT, "full command attached", |v| {
            v.bot_messages(OWNER)
                .into_iter()
                .find_map(|m| m.document.as_ref().map(|d| d.1.clone()))
        })
        .await;
    assert_eq!(full, command);
    w.tap(&prompt, Decision::Deny);
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_prompt_arrives_after_retry_after() {
    let w = world().await;
    w.tg.rate_limit_next(1, 2);
    let req = w.op.request_exec("echo throttled", 60_000).await.unwrap();
    let prompt = w.prompt(&req.id).await;
    let sends = w.tg.calls_to("sendMessage");
    let refused = sends
        .iter()
        .find(|c| c.status == 429)
        .expect("the fake answered 429");
    let accepted = sends
        .iter()
        .find(|c| c.status == 200)
        .expect("then accepted");
    assert!(
        accepted.at.duration_since(refused.at) >= Duration::from_secs(2),
        "waited retry_after"
    );
    assert_eq!(w.prompts_for(&req.id), 1);
    w.tap(&prompt, Decision::AllowOnce);
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_approval_is_prompted_and_resolved() {
    let w = world().await;
    let req =
        w.op.request_plugin("Send the weekly email", "to: team@example.org", 60_000)
            .await
            .unwrap();
    assert!(req.id.as_str().starts_with("plugin:"));
    let prompt = w.prompt(&req.id).await;
    assert!(
        prompt.text.contains("Send the weekly email"),
        "{}",
        prompt.text
    );
    for (_, data) in prompt.buttons() {
        assert!(data.len() <= 64, "{data}");
    }
    w.tap(&prompt, Decision::AllowOnce);
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
    w.finished(&prompt, "plugin prompt finished").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_commands_work_in_the_dm_and_sigterm_exits_cleanly() {
    let mut w = world().await;
    let req = w.op.request_exec("echo typed", 60_000).await.unwrap();
    let prompt = w.prompt(&req.id).await;
    w.tg.send_text(OWNER, OWNER, "/pending");
    w.tg.wait_for(WAIT, "/pending answer", |v| {
        v.bot_messages(OWNER)
            .into_iter()
            .find(|m| m.text.contains("1 pending") && m.text.contains(req.id.as_str()))
            .cloned()
    })
    .await;
    w.tg.send_text(
        STRANGER,
        STRANGER,
        &format!("/approve {} allow-once", req.id),
    );
    let told =
        w.tg.wait_for(WAIT, "stranger refused", |v| {
            v.bot_messages(STRANGER).first().map(|m| m.text.clone())
        })
        .await;
    assert!(told.contains("not allowed"), "{told}");
    w.tg.send_text(OWNER, OWNER, &format!("/approve {} deny", req.id));
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
    w.finished(&prompt, "prompt finished after /approve").await;
    let metrics = w.bridge.metrics().await.unwrap();
    assert!(
        metrics.contains("approval_bridge_approvals_ended_total"),
        "{metrics}"
    );
    assert!(
        w.bridge.terminate(Duration::from_secs(15)).await.unwrap(),
        "clean exit on SIGTERM:\n{}",
        w.bridge.log()
    );
    let log = w.bridge.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(" ready pending="))
            .count(),
        1,
        "one ready line: {log}"
    );
    assert!(
        !log.contains(w.gw.token()) && !log.contains(BOT_TOKEN),
        "a secret reached the log"
    );
}

/// SIGTERM while a resolve waits for the gateway's answer: the bridge stops taking answers
/// but keeps its gateway link until the engine drained, so the decision lands, is audited
/// `resolved` (not `resolve_failed`) and the prompt shows it.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_resolve_waits_for_the_gateways_answer() {
    let mut w = world().await;
    let req = w.op.request_exec("echo stopping", 60_000).await.unwrap();
    let prompt = w.prompt(&req.id).await;
    w.gw.freeze(true);
    w.tap(&prompt, Decision::AllowOnce);
    let deadline = Instant::now() + WAIT;
    while !w.audit().iter().any(|r| r.event == "answered") {
        assert!(Instant::now() < deadline, "the press was never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let thaw = async {
        // Long enough for the bridge to act on SIGTERM before the gateway answers.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        w.gw.freeze(false);
    };
    let (clean, ()) = tokio::join!(w.bridge.terminate(Duration::from_secs(15)), thaw);
    assert!(clean.unwrap(), "clean exit on SIGTERM:\n{}", w.bridge.log());
    let id = req.id.clone();
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
    let events: Vec<String> = w
        .audit()
        .into_iter()
        .filter(|r| r.approval_id.as_deref() == Some(id.as_str()))
        .map(|r| r.event)
        .collect();
    assert!(
        events.iter().any(|e| e == "resolved") && !events.iter().any(|e| e == "resolve_failed"),
        "{events:?}\n{}",
        w.bridge.log()
    );
    w.finished(&prompt, "prompt finished before the bridge exited")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_for_one_owner_goes_out_as_digests_within_telegrams_limits() {
    let w = world().await;
    // As Telegram does: a second write to a chat within a second answers 429.
    w.tg.enforce_chat_gap(Some(Duration::from_secs(1)));
    const N: usize = 12;
    let commands: Vec<String> = (0..N).map(|i| format!("echo burst-{i}")).collect();
    let reqs =
        futures_util::future::join_all(commands.iter().map(|c| w.op.request_exec(c, 120_000)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
    // Every approval gets buttons, wherever they are.
    let button_of = |msgs: &[Message], id: &ApprovalId| {
        let data = format!("exec_approve:{id}:allow-once");
        msgs.iter()
            .find(|m| m.buttons().iter().any(|(_, d)| *d == data))
            .map(|m| (m.clone(), data))
    };
    w.tg.wait_for(WAIT, "every approval actionable", |v| {
        let msgs: Vec<Message> = v.bot_messages(OWNER).into_iter().cloned().collect();
        reqs.iter()
            .all(|r| button_of(&msgs, &r.id).is_some())
            .then_some(())
    })
    .await;
    let sends = w.tg.calls_to("sendMessage");
    assert!(
        sends.len() < N / 2,
        "{N} approvals took {} messages",
        sends.len()
    );
    let msgs = w.tg.bot_messages(OWNER);
    let digest = msgs.iter().max_by_key(|m| m.buttons().len()).unwrap();
    assert!(digest.buttons().len() >= 6, "a digest holds several rows");
    assert!(
        digest.text.contains("exec approvals pending"),
        "{}",
        digest.text
    );
    // Two-minute requests, rendered within seconds of their arrival.
    assert!(
        digest.text.contains("expires in 1 min "),
        "each row says its time left: {}",
        digest.text
    );

    let presses: Vec<(Message, String)> = reqs
        .iter()
        .map(|r| button_of(&msgs, &r.id).unwrap())
        .collect();
    for (m, data) in &presses {
        w.press(m, OWNER, data);
    }
    for r in reqs {
        assert_eq!(r.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
    }
    let shown =
        w.tg.wait_message(
            OWNER,
            digest.message_id,
            WAIT,
            "digest shows every outcome",
            |m| m.buttons().is_empty(),
        )
        .await;
    assert!(shown.text.contains("all ended"), "{}", shown.text);
    assert!(!shown.text.contains("expires"), "{}", shown.text);
    assert!(shown.text.contains("Allowed once"), "{}", shown.text);
    let limited = w.tg.calls().iter().filter(|c| c.status == 429).count();
    assert_eq!(limited, 0, "the bridge kept within the chat's rate");
}

/// An agent floods 1,000 approvals at one owner: the bridge keeps within Telegram's per-chat
/// rate, every approval becomes actionable exactly once, the owner gets a few dozen digest
/// messages instead of a thousand, and every tap decides (1,000 taps at once: the bridge
/// queues its resolves rather than overrun the gateway's request queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_flooding_1000_approvals_stays_within_limits_and_loses_none() {
    const N: usize = 1000;
    const SETTLE: Duration = Duration::from_secs(300);
    let w = world().await;
    w.tg.enforce_chat_gap(Some(Duration::from_secs(1)));
    let t0 = std::time::Instant::now();
    let commands: Vec<String> = (0..N).map(|i| format!("echo spam-{i}")).collect();
    let mut reqs = Vec::with_capacity(N);
    for chunk in commands.chunks(100) {
        let batch =
            futures_util::future::join_all(chunk.iter().map(|c| w.op.request_exec(c, 900_000)))
                .await;
        for r in batch {
            reqs.push(r.expect("the gateway takes the request"));
        }
    }
    let requested = t0.elapsed();

    // Each approval's allow-once button, wherever it is: exactly one message carries it.
    // Polled on a copy of the chat: scanning 1,000 ids inside the fake's lock would stall
    // its HTTP handlers and time the bridge's calls out.
    let datas: Vec<String> = reqs
        .iter()
        .map(|r| format!("exec_approve:{}:allow-once", r.id))
        .collect();
    let wanted: std::collections::HashSet<&str> = datas.iter().map(String::as_str).collect();
    let carriers = |msgs: &[Message]| {
        let mut at: std::collections::HashMap<&str, Vec<i64>> = std::collections::HashMap::new();
        for m in msgs {
            for (_, d) in m.buttons() {
                if let Some(data) = wanted.get(d.as_str()) {
                    at.entry(*data).or_default().push(m.message_id);
                }
            }
        }
        at
    };
    let deadline = std::time::Instant::now() + SETTLE;
    let placed = loop {
        let at = carriers(&w.tg.bot_messages(OWNER));
        if at.len() == N {
            break at;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {N} approvals actionable",
            at.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let actionable = t0.elapsed();
    let duplicates = placed.values().filter(|m| m.len() > 1).count();
    assert_eq!(duplicates, 0, "an approval has buttons in two messages");
    let sends = w.tg.calls_to("sendMessage").len();
    assert!(
        sends <= N / 10,
        "{N} approvals took {sends} messages: the owner is buried"
    );

    for data in &datas {
        w.tg.press(OWNER, OWNER, placed[data.as_str()][0], data);
    }
    let mut decided = 0;
    for r in reqs {
        assert_eq!(
            r.outcome(SETTLE).await.unwrap(),
            Some(Decision::AllowOnce),
            "every tap decides"
        );
        decided += 1;
    }
    let all_decided = t0.elapsed();
    loop {
        let live =
            w.tg.bot_messages(OWNER)
                .iter()
                .filter(|m| !m.buttons().is_empty())
                .count();
        if live == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline + SETTLE,
            "{live} messages still have buttons after every approval was decided"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Within Telegram's per-chat rate: no 10-second window holds more than 11 writes to the
    // chat (the bridge spaces them 1.05 s apart; a loaded machine may bunch a few arrivals,
    // and the fake's 429s for those are counted, not treated as excess).
    let writes: Vec<std::time::Instant> =
        w.tg.calls()
            .iter()
            .filter(|c| {
                c.is("sendMessage") || c.is("editMessageText") || c.is("editMessageReplyMarkup")
            })
            .map(|c| c.at)
            .collect();
    let busiest = writes
        .iter()
        .map(|t0| {
            writes
                .iter()
                .filter(|t| **t >= *t0 && t.duration_since(*t0) < Duration::from_secs(10))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest <= 11,
        "{busiest} writes to one chat within 10 s: over Telegram's rate"
    );
    let limited = w.tg.calls().iter().filter(|c| c.status == 429).count();
    let edits = w.tg.calls_to("editMessageText").len();
    testkit::figures::record(
        "spam-telegram",
        &serde_json::json!({
            "approvals": N,
            "decided": decided,
            "lost": N - decided,
            "duplicate_prompts": duplicates,
            "messages_sent": sends,
            "edits": edits,
            "rate_limited_429": limited,
            "busiest_10s_writes": busiest,
            "requested_ms": requested.as_millis() as u64,
            "all_actionable_ms": actionable.as_millis() as u64,
            "all_decided_ms": all_decided.as_millis() as u64,
            "all_finished_ms": t0.elapsed().as_millis() as u64,
        }),
    );
}
