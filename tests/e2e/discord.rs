//! Discord: the adapter against the fake Discord (REST + gateway WebSocket on 127.0.0.1):
//! the conformance suite and the Discord specifics of issue 4 (buttons and custom_id,
//! escaping and mentions, the 3-second acknowledgement, 429s, reconnect and resume); then
//! the whole bridge, as users run it: the real binary, the real OpenClaw gateway and the
//! fake Discord standing in for the owner's client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge::approval::{Approval, ApprovalId, Choice, Decision, Kind};
use bridge::bulletin::Bulletin;
use bridge::channel::{Answer, Channel, MessageRef, Notice, Reach, Request, Target};
use channels::discord::{Discord, DiscordConfig, Options, Reply, codec};
use testkit::conformance::{
    FaultyFixture, Fixture, PromptState, ReachLog, Running, approval, controls, down,
    hostile_bulletin,
};
use testkit::fake_discord::{FakeDiscord, User};
use testkit::service_faults::Faults;

const TOKEN: &str = "MTIwMDAwMDAwMDAwMDAwMDA0Mg.fake.discord-test-token";
const OWNER: &str = "111111111111111111";
const STRANGER: &str = "999999999999999999";
const WAIT: Duration = Duration::from_secs(10);

pub struct DiscordFixture {
    pub fake: FakeDiscord,
    config: DiscordConfig,
    channel: Arc<Discord>,
}

impl DiscordFixture {
    pub async fn start() -> DiscordFixture {
        let fake = FakeDiscord::start(TOKEN).await;
        let config: DiscordConfig = serde_json::from_value(serde_json::json!({
            "bot_token": "env:DISCORD_BOT_TOKEN",
            "api_url": fake.api_url(),
            "allow_from": [OWNER],
        }))
        .expect("config");
        let channel = Arc::new(Self::build(&config));
        DiscordFixture {
            fake,
            config,
            channel,
        }
    }

    fn build(config: &DiscordConfig) -> Discord {
        let options = Options {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..Options::default()
        };
        Discord::with_options(config, TOKEN, options).expect("discord channel")
    }
}

impl FaultyFixture for DiscordFixture {
    fn faults(&self) -> &Faults {
        self.fake.faults()
    }
    async fn live_prompts(&self, id: &ApprovalId) -> usize {
        self.fake
            .bot_dms(OWNER)
            .iter()
            .filter(|m| m.buttons().iter().any(|(_, c, _)| c.contains(id.as_str())))
            .count()
    }
}

impl Fixture for DiscordFixture {
    fn channel(&self) -> Arc<dyn Channel> {
        self.channel.clone()
    }

    fn restarted(&self) -> Arc<dyn Channel> {
        Arc::new(Self::build(&self.config))
    }

    fn owner(&self) -> String {
        OWNER.to_owned()
    }

    fn stranger(&self) -> String {
        STRANGER.to_owned()
    }

    fn dm(&self) -> Target {
        Target {
            channel: "discord".into(),
            chat: OWNER.to_owned(),
        }
    }

    async fn press(&self, prompt: &MessageRef, user: &str, choice: Choice) {
        let m = self.fake.message(&prompt.message).expect("prompt exists");
        let (_, id, _) = m
            .buttons()
            .into_iter()
            .find(|(label, _, _)| *label == choice.label())
            .unwrap_or_else(|| panic!("no {choice} button on {:?}", m.buttons()));
        self.fake.press(&User::new(user), &prompt.message, &id);
    }

    async fn press_raw(&self, prompt: &MessageRef, user: &str, raw: &str) {
        self.fake.press(&User::new(user), &prompt.message, raw);
    }

    async fn type_in_dm(&self, user: &str, text: &str) {
        self.fake.send_dm(&User::new(user), text);
    }

    fn forged_payloads(&self) -> Vec<String> {
        let id = uuid::Uuid::new_v4();
        vec![
            String::new(),
            "hello".into(),
            format!("exec_approve:{id}:allow"),
            format!("exec_approve:{id}:yes-please"),
            format!("exec_approve:{id}:allow-once:{}", "x".repeat(70)), // over 100 characters
            format!("evil_approve:{id}:allow-once"),
            "exec_approve:<@111111111111111111>:deny".into(),
            "plugin_approve::deny".into(),
        ]
    }

    async fn prompt_state(&self, prompt: &MessageRef) -> PromptState {
        let m = self.fake.message(&prompt.message).expect("prompt exists");
        let (decisions, revokes) = controls(
            m.buttons()
                .into_iter()
                .map(|(label, id, _)| (label, codec::decode(&id).expect("our buttons decode"))),
        );
        PromptState {
            text: m.text(),
            decisions,
            revokes,
            // SUPPRESS_NOTIFICATIONS
            silent: m.flags & (1 << 12) != 0,
        }
    }

    async fn delete(&self, prompt: &MessageRef) {
        self.fake.delete_message(&prompt.message);
    }

    async fn told(&self, answer: &Answer) -> String {
        let reply = answer.reply.handle::<Reply>().expect("a Discord reply");
        let (channel, mid) = match reply {
            Reply::Interaction { token, .. } => {
                let m = self
                    .fake
                    .wait_for(WAIT, "a follow-up to the press", |v| {
                        v.interaction_by_token(token)?.followups.first().cloned()
                    })
                    .await;
                assert_eq!(m.flags & 64, 64, "the notice is ephemeral");
                assert!(!m.can_ping());
                return m.text();
            }
            // A reply to a command; without `reply_to` a plain message (a press whose
            // interaction could not be acknowledged is answered in the DM).
            Reply::Channel { channel, reply_to } => (channel.clone(), reply_to.clone()),
        };
        let m = self
            .fake
            .wait_for(WAIT, "reply to the command or press", |v| {
                v.bot_dms(OWNER)
                    .into_iter()
                    .rev()
                    .find(|m| {
                        m.channel_id == channel
                            && m.reply_to == mid
                            && m.embeds.as_array().is_none_or(|e| e.is_empty())
                    })
                    .cloned()
            })
            .await;
        assert!(!m.can_ping());
        m.text()
    }
}

mod conformance {
    testkit::channel_conformance!(super::DiscordFixture::start());
    testkit::channel_fault_conformance!(super::DiscordFixture::start());
}

fn exec(command: &str, allowed: &[Decision]) -> Approval {
    Approval {
        command: command.to_owned(),
        ..approval(allowed)
    }
}

// Buttons: one per offered decision, styled, custom_id within 100 characters; the prompt
// is one message with mentions disabled, sent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_has_styled_buttons_and_pings_nobody() {
    let f = DiscordFixture::start().await;
    let a = exec("ls -la", &Decision::ALL);
    let t0 = Instant::now();
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let took = t0.elapsed();
    let m = f.fake.message(&prompt.message).unwrap();
    assert_eq!(
        m.buttons(),
        vec![
            (
                "Allow once".to_owned(),
                format!("exec_approve:{}:allow-once", a.id),
                3
            ),
            (
                "Allow always".to_owned(),
                format!("exec_approve:{}:allow-always", a.id),
                1
            ),
            ("Deny".to_owned(), format!("exec_approve:{}:deny", a.id), 4),
        ]
    );
    assert_eq!(
        m.allowed_mentions,
        serde_json::json!({"parse": [], "replied_user": false})
    );
    assert_eq!(
        f.fake.calls_to("POST /channels/{id}/messages").len(),
        1,
        "one message per prompt"
    );
    eprintln!("measured: deliver (open DM + create message) on loopback in {took:?}");
    assert!(
        took < Duration::from_millis(1000),
        "prompt sent at once, took {took:?}"
    );
}

// Delivering the same approval to the same user again (a bridge killed between Discord's
// answer and its store write) yields the same message, not a duplicate prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_is_idempotent_by_nonce() {
    let f = DiscordFixture::start().await;
    let a = approval(&Decision::ALL);
    let first = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let again = f.restarted().deliver(&f.dm(), &a).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(f.fake.bot_dms(OWNER).len(), 1);
    let other = f
        .channel
        .deliver(&f.dm(), &approval(&Decision::ALL))
        .await
        .unwrap();
    assert_ne!(other, first);
}

// Hostile request text: shown literally, no fence break-out, no live mention or link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_command_is_literal_and_cannot_ping() {
    let f = DiscordFixture::start().await;
    let command = "echo ```\n@everyone <@111111111111111111> <@&222> **bold** [click](https://evil.example) `x`\n``` ||spoiler||";
    let mut a = exec(command, &Decision::ALL);
    a.cwd = Some("/tmp/@here/[x](https://evil.example)".into());
    a.warnings = vec!["<@111111111111111111> ```".into()];
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let m = f.fake.message(&prompt.message).unwrap();
    let text = m.text();
    assert!(text.contains(command), "command shown literally:\n{text}");
    assert!(
        text.contains("cwd: /tmp/@here/[x](https://evil.example)"),
        "{text}"
    );
    assert!(!m.can_ping());
    let desc = m.embeds[0]["description"].as_str().unwrap();
    assert_eq!(
        desc.matches("```").count(),
        2,
        "only our own fences: {desc}"
    );
    for f in m.embeds[0]["fields"].as_array().unwrap() {
        let v = f["value"].as_str().unwrap();
        assert!(
            !v.contains("<@1") && !v.contains("](") && !v.contains("``"),
            "raw markup in field: {v}"
        );
    }
    // A long command is cut within Discord's limits (the fake refuses anything over).
    let long = exec(&format!("{command} {}", "`@x".repeat(3000)), &Decision::ALL);
    let p2 = f.channel.deliver(&f.dm(), &long).await.unwrap();
    let t2 = f.fake.message(&p2.message).unwrap().text();
    assert!(t2.contains("✂️ Cut: showing"), "{}", &t2[t2.len() - 200..]);
}

// The press is acknowledged (deferred update) within Discord's 3 s, before the engine is
// involved; the notice is an ephemeral follow-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn press_is_acknowledged_before_the_answer_and_fast() {
    let f = DiscordFixture::start().await;
    let a = approval(&Decision::ALL);
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let mut run = Running::start(f.channel.clone());
    f.fake.wait_ready(WAIT).await;
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let custom = codec::encode(Kind::Exec, &a.id, Decision::Deny.into()).unwrap();
        let ix = f.fake.press(&User::new(OWNER), &prompt.message, &custom);
        let ans = run.next("press").await;
        let got = f.fake.interaction(&ix).unwrap();
        let (_, body) = got
            .callback
            .clone()
            .expect("acknowledged before the answer was handed on");
        assert_eq!(body["type"], 6, "DEFERRED_UPDATE_MESSAGE");
        latencies.push(got.ack_latency().unwrap());
        f.channel
            .notify(
                &ans.reply,
                &Notice::Accepted {
                    id: a.id.clone(),
                    decision: Decision::Deny,
                },
            )
            .await
            .unwrap();
        let fu = f.fake.wait_followup(&ix, WAIT).await;
        assert_eq!(fu.flags, 64);
        assert_eq!(fu.text(), "Denied.");
    }
    latencies.sort();
    eprintln!(
        "measured: gateway dispatch -> interaction callback: min {:?}, median {:?}, max {:?}",
        latencies[0], latencies[2], latencies[4]
    );
    assert!(latencies[4] < Duration::from_secs(1), "{latencies:?}");
    run.stop().await;
}

// 429s: per-route and global, honoured by waiting retry_after, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out() {
    let f = DiscordFixture::start().await;
    f.fake.rate_limit_next(2, 0.3, false);
    let t0 = Instant::now();
    let p = f
        .channel
        .deliver(&f.dm(), &approval(&Decision::ALL))
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(550),
        "waited twice retry_after: {:?}",
        t0.elapsed()
    );
    assert!(f.fake.message(&p.message).is_some());
    f.fake.rate_limit_next(1, 0.5, true);
    let t0 = Instant::now();
    let a = approval(&Decision::ALL);
    let dm = f.dm();
    let (r1, r2) = tokio::join!(f.channel.deliver(&dm, &a), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        f.channel.deliver(&dm, &a).await
    });
    r1.unwrap();
    r2.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(450),
        "global limit held both: {:?}",
        t0.elapsed()
    );
    let statuses: Vec<u16> = f
        .fake
        .calls_to("POST /channels/{id}/messages")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
}

// The gateway drops: the adapter resumes its session and presses keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_drop_resumes_and_keeps_receiving() {
    let f = DiscordFixture::start().await;
    let a = approval(&Decision::ALL);
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let mut run = Running::start(f.channel.clone());
    f.fake.wait_ready(WAIT).await;
    assert_eq!(f.fake.identifies().len(), 1);
    let identify = &f.fake.identifies()[0].1;
    assert_eq!(identify["token"], TOKEN);
    assert_eq!(identify["intents"], 1 << 12, "DIRECT_MESSAGES only");
    f.fake.disconnect_all(4000);
    let custom = codec::encode(Kind::Exec, &a.id, Decision::AllowOnce.into()).unwrap();
    f.fake.press(&User::new(OWNER), &prompt.message, &custom);
    let ans = run.next("press after a reconnect").await;
    assert_eq!(
        ans.request,
        Request::Decide {
            id: a.id.clone(),
            choice: Decision::AllowOnce.into(),
            kind: Some(Kind::Exec)
        }
    );
    assert_eq!(f.fake.resumes(), 1, "resumed, not re-identified");
    assert_eq!(f.fake.identifies().len(), 1);
    run.stop().await;
}

// A wrong token fails health loudly; nothing is sent anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_fails_health_and_every_call_went_to_the_fake() {
    let f = DiscordFixture::start().await;
    let bad = Discord::with_options(&f.config, "wrong", Options::default()).unwrap();
    match bad.health().await {
        Err(bridge::channel::ChannelError::Permanent(m)) => {
            assert!(m.contains("discord.bot_token"), "{m}")
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
    assert!(
        f.channel
            .health()
            .await
            .unwrap()
            .contains("approval-bridge-test")
    );
    assert!(
        f.fake.calls().iter().all(|c| c.versioned),
        "every call under /api/v10"
    );
}

// Issue 14: a bulletin is new DM content, markdown-escaped, pinging nobody, no embed and
// no buttons; edit_post rewrites that message's content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulletin_is_escaped_content_that_pings_nobody() {
    let f = DiscordFixture::start().await;
    let alert = hostile_bulletin();
    let post = f.channel.post(&f.dm(), &alert).await.unwrap();
    let m = f.fake.message(&post.message).unwrap();
    assert_eq!(m.channel_id, f.fake.dm_channel(OWNER), "in the owner's DM");
    assert_eq!(m.text(), alert.text(), "reads literally");
    assert_ne!(m.content, alert.text(), "markdown is escaped on the wire");
    assert!(!m.can_ping(), "mentions nobody: {:?}", m.allowed_mentions);
    assert_eq!(m.embeds, serde_json::json!([]));
    assert!(m.buttons().is_empty());
    assert!(m.reply_to.is_none(), "a new message, not a reply");
    let Bulletin::Alert { problem, since_ms } = alert else {
        unreachable!()
    };
    let over = Bulletin::AlertOver {
        problem,
        since_ms,
        lasted_ms: 180_000,
    };
    f.channel.edit_post(&post, &over).await.unwrap();
    let edited = f.fake.message(&post.message).unwrap();
    assert_eq!((edited.edits, edited.text()), (1, over.text()));
    assert!(!edited.can_ping());
    let patches = f.fake.calls_to("PATCH /channels/{id}/messages/{id}");
    assert_eq!(patches.len(), 1);
}

// Issue 14: a reset token (the gateway closes with 4004, GET /gateway/bot answers 401)
// sets the channel down once; the READY after the token works again sets it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_down_until_the_next_ready() {
    let f = DiscordFixture::start().await;
    let log = ReachLog::start(&*f.channel);
    let run = Running::start(f.channel.clone());
    f.fake.wait_ready(WAIT).await;
    f.fake.revoke_token(true);
    f.fake.disconnect_all(4000);
    let seen = log.wait(1, WAIT).await;
    assert_eq!(
        seen[0],
        down(
            "Discord rejects the bot token",
            "reset the token in the Discord Developer Portal (your application → Bot → Reset Token) and update discord.bot_token"
        )
    );
    // The next try (after the fatal pause) fetches the gateway URL: 401, the same cause.
    f.fake
        .wait_for(Duration::from_secs(15), "GET /gateway/bot refused", |v| {
            v.calls()
                .iter()
                .any(|c| c.route() == "GET /gateway/bot" && c.status == 401)
                .then_some(())
        })
        .await;
    assert_eq!(log.values().len(), 1, "down once: {:?}", log.values());
    f.fake.revoke_token(false);
    let seen = log.wait(2, Duration::from_secs(15)).await;
    assert_eq!(seen[1], Reach::Up);
    f.fake.wait_ready(WAIT).await;
    run.stop().await;
    assert_eq!(log.values().len(), 2, "no flapping: {:?}", log.values());
}

/// The whole bridge with only a `[discord]` section: the real binary, the real OpenClaw
/// gateway, the fake Discord.
mod daemon {
    use std::time::{Duration, Instant};

    use bridge::approval::{ApprovalId, Decision};
    use bridge::store::{SqliteStore, Store};
    use testkit::bridge::{BridgeProcess, BridgeSetup};
    use testkit::fake_discord::{FakeDiscord, Message, User};
    use testkit::openclaw::{Gateway, GatewayConfig, Operator};

    use super::{OWNER, STRANGER, TOKEN};

    const WAIT: Duration = Duration::from_secs(20);

    struct World {
        gw: Gateway,
        dc: FakeDiscord,
        op: Operator,
        bridge: BridgeProcess,
    }

    async fn world() -> World {
        let (gw, dc) = tokio::join!(
            Gateway::start(GatewayConfig::default()),
            FakeDiscord::start(TOKEN)
        );
        let gw = gw.expect("start the OpenClaw gateway");
        let setup = BridgeSetup {
            gateway_url: gw.url(),
            gateway_token: gw.token().to_owned(),
            telegram_api_url: String::new(),
            bot_token: String::new(),
            allow_from: Vec::new(),
            targets: None,
            extra_toml: format!(
                "[discord]\nbot_token = \"env:AB_TEST_DISCORD_TOKEN\"\napi_url = \"{}\"\nallow_from = [\"{OWNER}\"]\n",
                dc.api_url()
            ),
            env: vec![("AB_TEST_DISCORD_TOKEN".into(), TOKEN.into())],
        };
        let bridge =
            BridgeProcess::start_healthy(env!("CARGO_BIN_EXE_approval-bridge").as_ref(), setup)
                .await
                .unwrap();
        dc.wait_ready(WAIT).await;
        let op = Operator::connect(&gw, "requester").await.unwrap();
        World { gw, dc, op, bridge }
    }

    impl Drop for World {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!(
                    "---- bridge log ----\n{}\n---- gateway log: {} ----",
                    self.bridge.log(),
                    self.gw.log_path().display()
                );
                let calls: Vec<String> = self
                    .dc
                    .calls()
                    .iter()
                    .map(|c| format!("{:?} {} {} {} {}", c.at, c.status, c.method, c.path, c.body))
                    .collect();
                eprintln!("---- discord calls ----\n{}", calls.join("\n"));
            }
        }
    }

    impl World {
        /// The prompt for approval `id` in the owner's DM.
        async fn prompt(&self, id: &ApprovalId) -> Message {
            let needle = id.as_str().to_owned();
            self.dc
                .wait_for(WAIT, &format!("prompt for {needle}"), |v| {
                    v.bot_dms(OWNER)
                        .into_iter()
                        .find(|m| {
                            m.text().contains(&needle) && !m.embeds.as_array().unwrap().is_empty()
                        })
                        .cloned()
                })
                .await
        }

        fn custom_id(m: &Message, decision: Decision) -> String {
            m.buttons()
                .into_iter()
                .find(|(_, id, _)| id.ends_with(&format!(":{}", decision.as_str())))
                .unwrap_or_else(|| panic!("no {decision} button on {:?}", m.buttons()))
                .1
        }

        /// The owner clicks the button for `decision`; returns the interaction id.
        fn click(&self, m: &Message, decision: Decision) -> String {
            self.dc
                .press(&User::new(OWNER), &m.id, &Self::custom_id(m, decision))
        }

        async fn told(&self, ix: &str) -> Message {
            self.dc.wait_followup(ix, WAIT).await
        }

        async fn finished(&self, m: &Message, what: &str) -> Message {
            self.dc
                .wait_message(&m.id, WAIT, what, |m| m.buttons().is_empty())
                .await
        }

        fn audit(&self) -> Vec<bridge::store::AuditRecord> {
            SqliteStore::open(&self.bridge.state_dir().join("bridge.sqlite"))
                .unwrap()
                .audit_log(None)
                .unwrap()
        }

        fn prompts_for(&self, id: &ApprovalId) -> usize {
            self.dc
                .bot_dms(OWNER)
                .iter()
                .filter(|m| {
                    m.text().contains(id.as_str()) && !m.embeds.as_array().unwrap().is_empty()
                })
                .count()
        }

        /// Nothing went anywhere but the fake: every REST call arrived here under
        /// `/api/v10`, and the bridge learned its gateway URL only from the fake.
        fn assert_everything_went_to_the_fake(&self) {
            let calls = self.dc.calls();
            assert!(calls.iter().all(|c| c.versioned), "unversioned call");
            assert!(calls.iter().any(|c| c.route() == "GET /gateway/bot"));
            assert!(self.dc.connections() >= 1);
            let log = self.bridge.log();
            assert!(
                !log.contains("discord.com") && !log.contains("gateway.discord.gg"),
                "a real Discord host in the log:\n{log}"
            );
            assert!(!log.contains(TOKEN), "the bot token reached the log");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn owner_clicks_decide_each_way_and_latency_is_measured() {
        let w = world().await;
        let mut latencies = Vec::new();
        for decision in [Decision::AllowOnce, Decision::Deny, Decision::AllowAlways] {
            let req =
                w.op.request_exec(&format!("echo {decision}"), 60_000)
                    .await
                    .unwrap();
            let prompt = w.prompt(&req.id).await;
            let labels: Vec<(String, u64)> = prompt
                .buttons()
                .into_iter()
                .map(|(l, _, s)| (l, s))
                .collect();
            assert_eq!(
                labels,
                [
                    ("Allow once".into(), 3),
                    ("Allow always".into(), 1),
                    ("Deny".into(), 4),
                    // The default `[trust] durations = ["1h"]`, in a row of its own.
                    ("Allow for 1 h".into(), 2)
                ]
            );
            assert!(!prompt.can_ping());
            let t0 = Instant::now();
            let ix = w.click(&prompt, decision);
            assert_eq!(req.outcome(WAIT).await.unwrap(), Some(decision));
            let decided = t0.elapsed();
            let done = w.finished(&prompt, "prompt finished").await;
            let edited = t0.elapsed();
            let text = done.text();
            assert!(text.contains(decision.past()), "{text}");
            assert!(text.contains(OWNER), "names who decided: {text}");
            let notice = w.told(&ix).await;
            assert_eq!(notice.flags, 64, "ephemeral");
            assert!(notice.text().contains(decision.past()), "{}", notice.text());
            let ack = w.dc.interaction(&ix).unwrap().ack_latency().unwrap();
            assert!(
                ack < Duration::from_secs(3),
                "acknowledged within Discord's deadline: {ack:?}"
            );
            latencies.push((decision, ack, decided, edited));
        }
        for (d, ack, decided, edited) in &latencies {
            eprintln!(
                "measured {d}: click -> ack {ack:?}; click -> requester has the decision {decided:?}; click -> prompt edited {edited:?}"
            );
        }
        w.assert_everything_went_to_the_fake();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stranger_is_refused_ephemerally_and_audited() {
        let w = world().await;
        let req =
            w.op.request_exec("rm -rf /important", 60_000)
                .await
                .unwrap();
        let prompt = w.prompt(&req.id).await;
        let ix = w.dc.press(
            &User::new(STRANGER),
            &prompt.id,
            &World::custom_id(&prompt, Decision::AllowAlways),
        );
        let told = w.told(&ix).await;
        assert_eq!(told.flags, 64, "only the stranger sees it");
        assert!(told.text().contains("not allowed"), "{}", told.text());
        assert!(
            !w.dc.message(&prompt.id).unwrap().buttons().is_empty(),
            "still pending"
        );
        let refused = w
            .audit()
            .into_iter()
            .find(|r| r.event == "refused")
            .expect("refusal audited");
        assert_eq!(refused.actor.as_deref(), Some(STRANGER));
        assert_eq!(refused.detail["reason"], "not_allowed");
        // A stranger's typed /approve in their own DM is refused too.
        w.dc.send_dm(
            &User::new(STRANGER),
            &format!("/approve {} allow-once", req.id),
        );
        let reply =
            w.dc.wait_for(WAIT, "reply to the stranger", |v| {
                v.bot_dms(STRANGER).first().map(|m| m.text())
            })
            .await;
        assert!(reply.contains("not allowed"), "{reply}");
        w.click(&prompt, Decision::Deny);
        assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn forged_custom_ids_are_refused_without_harm() {
        let w = world().await;
        let req = w.op.request_exec("echo forged", 60_000).await.unwrap();
        let prompt = w.prompt(&req.id).await;
        let other = uuid::Uuid::new_v4();
        let forged = [
            format!("exec_approve:{other}:allow-once"),
            format!("exec_approve:{}:yolo", req.id),
            "hello".to_owned(),
            format!("exec_approve:{}:allow-once{}", req.id, "x".repeat(80)),
        ];
        for data in &forged {
            let ix = w.dc.press(&User::new(OWNER), &prompt.id, data);
            let told = w.told(&ix).await;
            assert!(!told.text().is_empty(), "{data:?} answered with a reason");
        }
        assert_eq!(w.bridge.healthz().await.unwrap().0, 200, "still healthy");
        assert!(
            !w.dc.message(&prompt.id).unwrap().buttons().is_empty(),
            "still pending"
        );
        assert_eq!(
            w.audit()
                .into_iter()
                .filter(|r| r.event == "refused")
                .count(),
            forged.len()
        );
        w.click(&prompt, Decision::AllowOnce);
        assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn decided_elsewhere_and_expiry_edit_the_prompt() {
        let w = world().await;
        let req = w.op.request_exec("echo elsewhere", 60_000).await.unwrap();
        let prompt = w.prompt(&req.id).await;
        w.op.resolve(&req.id, Decision::Deny).await.unwrap();
        let done = w
            .finished(&prompt, "prompt finished by another operator")
            .await;
        assert!(done.text().contains("Denied elsewhere"), "{}", done.text());
        let ix = w.click(&prompt, Decision::AllowOnce);
        assert!(w.told(&ix).await.text().contains("Denied elsewhere"));
        let late = w.op.request_exec("echo too late", 3_000).await.unwrap();
        let p2 = w.prompt(&late.id).await;
        assert_eq!(late.outcome(WAIT).await.unwrap(), None, "nobody decided");
        let done = w.finished(&p2, "prompt marked expired").await;
        assert!(done.text().contains("Expired"), "{}", done.text());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn restart_without_duplicates_and_old_buttons_work() {
        let mut w = world().await;
        let req =
            w.op.request_exec("echo survive kill -9", 120_000)
                .await
                .unwrap();
        let prompt = w.prompt(&req.id).await;
        w.bridge.kill9().await.unwrap();
        w.bridge.restart().await.unwrap();
        w.bridge
            .wait_healthy(Duration::from_secs(60))
            .await
            .unwrap();
        w.dc.wait_ready(WAIT).await;
        w.click(&prompt, Decision::AllowOnce);
        let id = req.id.clone();
        assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
        w.finished(&prompt, "old prompt edited after restart").await;
        assert_eq!(w.prompts_for(&id), 1, "no duplicate prompt after restart");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn hostile_command_is_rendered_literally_and_pings_nobody() {
        let w = world().await;
        // (The gateway itself shows a newline as `\u{A}`, so the hostile text stays on one line.)
        let command = "echo ``` ; @everyone <@111111111111111111> <@&5> **bold** [x](https://evil.example) ``` ||done||";
        let req = w.op.request_exec(command, 60_000).await.unwrap();
        let prompt = w.prompt(&req.id).await;
        assert!(prompt.text().contains(command), "{}", prompt.text());
        assert!(!prompt.can_ping());
        assert_eq!(
            prompt.embeds[0]["description"]
                .as_str()
                .unwrap()
                .matches("```")
                .count(),
            2
        );
        w.dc.send_dm(&User::new(OWNER), &format!("/approve {} deny", req.id));
        assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
        w.finished(&prompt, "prompt finished after /approve").await;
        for c in w.dc.calls().iter().filter(|c| {
            c.method != "GET" && c.body.get("content").is_some() || c.body.get("embeds").is_some()
        }) {
            assert_eq!(
                c.body["allowed_mentions"]["parse"],
                serde_json::json!([]),
                "{} {}",
                c.method,
                c.path
            );
        }
        w.assert_everything_went_to_the_fake();
    }
}
