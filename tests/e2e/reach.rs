//! Never miss the window, against the real gateway: reminders as new messages at the
//! points of `[alerts] remind` (and none in quiet hours) with the prompt's time left
//! rewritten in place, escalation to a second chat that
//! can then decide, and the end-to-end probe from the CLI and from `/probe` in the DM.
//! Records how long each took.

use std::time::{Duration, Instant};

use bridge::approval::Decision;
use serde_json::json;
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_telegram::{FakeTelegram, Message};
use testkit::openclaw::{Gateway, GatewayConfig, Operator};

const OWNER: i64 = 111_111_111;
const SECOND: i64 = 222_222_222;
const BOT_TOKEN: &str = "123456:TEST-token";
const WAIT: Duration = Duration::from_secs(20);
/// The test approvals' life at the gateway.
const LIFE: Duration = Duration::from_secs(40);

fn exe() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_approval-bridge").as_ref()
}

struct World {
    gw: Gateway,
    tg: FakeTelegram,
    op: Operator,
    bridge: BridgeProcess,
}

/// A gateway, the fake Bot API and a healthy bridge configured by `edit`.
async fn world(edit: impl FnOnce(&mut BridgeSetup)) -> World {
    let (gw, tg) = tokio::join!(
        Gateway::start(GatewayConfig::default()),
        FakeTelegram::start(BOT_TOKEN)
    );
    let gw = gw.expect("start the OpenClaw gateway");
    let mut setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
    edit(&mut setup);
    let bridge = BridgeProcess::start_healthy(exe(), setup).await.unwrap();
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
    /// The prompt (with buttons) in `chat` whose text contains `needle`.
    async fn prompt(&self, chat: i64, needle: &str) -> Message {
        self.tg
            .wait_for(WAIT, &format!("prompt with {needle:?} in {chat}"), |v| {
                v.bot_messages(chat)
                    .into_iter()
                    .find(|m| m.text.contains(needle) && !m.buttons().is_empty())
                    .cloned()
            })
            .await
    }

    fn reminders(&self) -> Vec<Message> {
        let mine = |m: &Message| m.text.starts_with("⏰");
        self.tg
            .bot_messages(OWNER)
            .into_iter()
            .filter(mine)
            .collect()
    }
}

/// Presses `decision`'s button on `m` as `user`, in the user's DM.
fn tap(tg: &FakeTelegram, user: i64, m: &Message, decision: Decision) -> String {
    let data = m
        .buttons()
        .into_iter()
        .find(|(_, d)| d.ends_with(decision.as_str()))
        .unwrap_or_else(|| panic!("no {decision} button on {:?}", m.buttons()))
        .1;
    tg.press(user, user, m.message_id, &data)
}

/// `[alerts]` with `lines` in it.
fn alerts(lines: &str) -> String {
    format!("[alerts]\n{lines}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_approval_gets_reminders_as_new_messages_at_its_points() {
    // "28s" (28 s left: 12 s in) and "50%" (20 s in) of a 40 s life.
    let w = world(|s| s.extra_toml = alerts("remind = [\"50%\", \"28s\"]")).await;
    let asked = Instant::now();
    let req =
        w.op.request_exec("echo reach-remind", LIFE.as_millis() as u64)
            .await
            .unwrap();
    let prompt = w.prompt(OWNER, "echo reach-remind").await;
    let mut at = Vec::new();
    for n in 1..=2 {
        let m =
            w.tg.wait_for(LIFE, &format!("reminder #{n}"), |v| {
                let r: Vec<_> = v
                    .bot_messages(OWNER)
                    .into_iter()
                    .filter(|m| m.text.starts_with("⏰"))
                    .cloned()
                    .collect();
                r.get(n - 1).cloned()
            })
            .await;
        at.push((asked.elapsed(), m));
    }
    let (first_at, first) = &at[0];
    let (half_at, half) = &at[1];
    for (t, m) in &at {
        assert!(
            m.text.contains("left to decide") && m.text.contains("echo reach-remind"),
            "{}",
            m.text
        );
        assert!(
            m.message_id > prompt.message_id && m.edits == 0,
            "a new message, not an edit: {m:?}"
        );
        assert!(*t < LIFE, "reminded after the approval expired: {t:?}");
    }
    assert!(
        *first_at >= LIFE * 3 / 10 - Duration::from_secs(1),
        "the 28 s-left reminder came {first_at:?} after the request"
    );
    assert!(
        *half_at >= LIFE * 2 / 5,
        "the half-time reminder came {half_at:?} after the request, before 40% of the life"
    );
    assert!(first.text.contains("28"), "{}", first.text);
    assert!(half.text.contains("20"), "{}", half.text);
    // The prompt itself was rewritten in place at the points (an edit wakes nobody): the
    // time left it shows is current, its buttons are still there.
    let now = w.tg.message(OWNER, prompt.message_id).unwrap();
    let left = |text: &str| {
        let after = text.split("expires in ").nth(1)?;
        after.split(' ').next()?.parse::<u64>().ok()
    };
    assert!(now.edits >= 1, "the prompt was refreshed: {now:?}");
    assert_eq!(now.buttons(), prompt.buttons(), "the buttons stay");
    let (was, is) = (left(&prompt.text), left(&now.text));
    assert!(
        matches!((was, is), (Some(a), Some(b)) if b < a),
        "time left then {was:?}, now {is:?}:\n{}\n---\n{}",
        prompt.text,
        now.text
    );
    assert_eq!(w.reminders().len(), 2, "one reminder per point");

    // They decide nothing: the owner still does.
    tap(&w.tg, OWNER, &prompt, Decision::Deny);
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
    testkit::figures::record(
        "reminders",
        &json!({
            "life_ms": LIFE.as_millis() as u64,
            "request_to_28s_left_reminder_ms": first_at.as_millis() as u64,
            "request_to_half_time_reminder_ms": half_at.as_millis() as u64,
        }),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_reminder_in_quiet_hours() {
    // Quiet from an hour ago to an hour from now, in UTC: whatever time the test runs.
    let day_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86_400;
    let hhmm = |s: u64| format!("{:02}:{:02}", s % 86_400 / 3600, s % 3600 / 60);
    let quiet = format!("{}-{}", hhmm(day_s + 86_400 - 3600), hhmm(day_s + 3600));
    let life = Duration::from_secs(20);
    let w = world(|s| {
        s.extra_toml = alerts(&format!(
            "remind = [\"50%\"]\nquiet = \"{quiet}\"\ntimezone = \"UTC\""
        ))
    })
    .await;
    let req =
        w.op.request_exec("echo reach-quiet", life.as_millis() as u64)
            .await
            .unwrap();
    w.prompt(OWNER, "echo reach-quiet").await;
    // Past half time, and until the gateway expires it.
    assert_eq!(req.outcome(life + WAIT).await.unwrap(), None, "expired");
    assert!(
        w.reminders().is_empty(),
        "reminded in quiet hours {quiet}: {:?}",
        w.reminders()
    );
    assert!(
        w.bridge.log().contains("quiet hours: reminder not sent"),
        "the half-time point came and was held back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_approval_is_escalated_and_the_second_chat_can_deny_it() {
    let w = world(|s| {
        s.allow_from = vec![OWNER, SECOND];
        s.targets = Some(vec![OWNER]);
        s.extra_toml = alerts(&format!(
            "remind = []\nescalate_to = [\"telegram:{SECOND}\"]\nescalate_at = \"25%\""
        ));
    })
    .await;
    let asked = Instant::now();
    let req =
        w.op.request_exec("echo reach-escalate", LIFE.as_millis() as u64)
            .await
            .unwrap();
    let first = w.prompt(OWNER, "echo reach-escalate").await;
    assert!(
        w.tg.bot_messages(SECOND).is_empty(),
        "not a target: nothing before the escalation"
    );
    let line =
        w.tg.wait_for(LIFE, "the escalation line", |v| {
            v.bot_messages(SECOND)
                .into_iter()
                .find(|m| m.text.starts_with("🔔"))
                .cloned()
        })
        .await;
    let to_escalation = asked.elapsed();
    assert!(
        line.text.contains("Nobody has answered")
            && line.text.contains(&format!("also asked: telegram:{OWNER}"))
            && line.text.contains("echo reach-escalate"),
        "{}",
        line.text
    );
    assert!(
        to_escalation >= LIFE / 5 && to_escalation < LIFE / 2,
        "escalated {to_escalation:?} after the request, not at about 25% of {LIFE:?}"
    );
    // (The prompt is sent before the line: prompts go out first in each chat.)
    let second = w.prompt(SECOND, "echo reach-escalate").await;

    tap(&w.tg, SECOND, &second, Decision::Deny);
    assert_eq!(
        req.outcome(WAIT).await.unwrap(),
        Some(Decision::Deny),
        "the escalation chat's deny is the requester's outcome"
    );
    for (chat, m) in [(OWNER, &first), (SECOND, &second)] {
        let done =
            w.tg.wait_message(chat, m.message_id, WAIT, "the prompt finished", |m| {
                m.buttons().is_empty()
            })
            .await;
        assert!(
            done.text.contains("Denied by"),
            "chat {chat}: {}",
            done.text
        );
    }
    testkit::figures::record(
        "escalation",
        &json!({
            "life_ms": LIFE.as_millis() as u64,
            "request_to_escalation_ms": to_escalation.as_millis() as u64,
        }),
    );

    // An escalation chat that may not decide: `check` names it, and the bridge will not start.
    let mut bad = BridgeSetup::telegram_owner(&w.gw, &w.tg, OWNER);
    bad.extra_toml = alerts("escalate_to = [\"telegram:333333333\"]");
    let (ok, out) = BridgeProcess::configure(exe(), bad.clone())
        .unwrap()
        .check()
        .await
        .unwrap();
    assert!(!ok, "{out}");
    assert!(
        out.contains("PROBLEM  alerts.escalate_to") && out.contains("333333333"),
        "{out}"
    );
    let mut refused = BridgeProcess::start(exe(), bad).await.unwrap();
    let err = refused
        .wait_healthy(WAIT)
        .await
        .expect_err("started with an escalation chat outside allow_from");
    let err = format!("{err:#}");
    assert!(
        err.contains("exited") && err.contains("alerts.escalate_to"),
        "{err}"
    );
}

/// `approval-bridge probe` on the bridge's config: success, and stdout + stderr.
async fn probe_cli(b: &BridgeProcess, args: &[&str]) -> (bool, String) {
    let child = tokio::process::Command::new(exe())
        .args(["probe", "--config"])
        .arg(b.config_path())
        .args(args)
        .env("AB_TEST_GATEWAY_TOKEN", "unused-by-probe")
        .env("AB_TEST_BOT_TOKEN", BOT_TOKEN)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), child)
        .await
        .expect("the probe CLI ended")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Each `✅`/`❌` hop line's name and time: `✅ gateway accepted the request · 12 ms`.
fn hops(report: &str) -> Vec<(String, Option<u64>)> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix("✅ ").or_else(|| l.strip_prefix("❌ ")))
        .map(|l| match l.split_once(" · ") {
            Some((name, rest)) => (
                name.to_owned(),
                rest.split(' ').next().and_then(|n| n.parse().ok()),
            ),
            None => (l.to_owned(), None),
        })
        .collect()
}

fn hop_ms(report: &str) -> serde_json::Value {
    hops(report)
        .into_iter()
        .map(|(name, ms)| (name, json!(ms)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_follows_a_harmless_approval_through_every_hop() {
    let mut w = world(|s| s.extra_toml = alerts("probe_every = \"1h\"")).await;
    let delivered = format!("prompt delivered to telegram:{OWNER}");

    // The scheduled probe runs once the link is ready: a prompt, delivery only, and
    // nothing else said while it passes.
    let scheduled = w.prompt(OWNER, "approval-bridge probe").await;
    w.bridge
        .wait_log(WAIT, "probe passed")
        .await
        .expect("the scheduled probe passed");

    // Delivery only.
    let started = Instant::now();
    let (ok, out) = probe_cli(&w.bridge, &["--no-tap"]).await;
    let no_tap_wall = started.elapsed();
    assert!(ok, "{out}");
    assert!(
        out.contains("Probe passed:")
            && out.contains("✅ gateway accepted the request")
            && out.contains(&format!("✅ {delivered}")),
        "{out}"
    );
    let names: Vec<String> = hops(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["gateway accepted the request", delivered.as_str()],
        "{out}"
    );
    let no_tap_hops = hop_ms(&out);
    let no_tap_prompt =
        w.tg.wait_for(WAIT, "the --no-tap probe's prompt", |v| {
            v.bot_messages(OWNER)
                .into_iter()
                .find(|m| {
                    m.message_id > scheduled.message_id && m.text.contains("approval-bridge probe")
                })
                .cloned()
        })
        .await;
    assert!(
        w.tg.bot_messages(OWNER)
            .iter()
            .all(|m| !m.text.contains("Approvals cannot reach you")),
        "a passing scheduled probe tells nobody anything"
    );

    // With the owner's tap.
    let probe_prompt_after = |after: i64| {
        move |v: &testkit::fake_telegram::View<'_>| {
            v.bot_messages(OWNER)
                .into_iter()
                .find(|m| {
                    m.message_id > after
                        && m.text.contains("approval-bridge probe")
                        && !m.buttons().is_empty()
                })
                .cloned()
        }
    };
    let started = Instant::now();
    let cli = probe_cli(&w.bridge, &[]);
    let tg = &w.tg;
    let tapper = async {
        let p = tg
            .wait_for(
                WAIT,
                "the probe's prompt",
                probe_prompt_after(no_tap_prompt.message_id),
            )
            .await;
        tap(tg, OWNER, &p, Decision::AllowOnce);
        p
    };
    let ((ok, out), tapped) = tokio::join!(cli, tapper);
    let tap_wall = started.elapsed();
    assert!(ok, "{out}");
    assert!(
        out.contains("✅ gateway accepted the request")
            && out.contains(&format!("✅ {delivered}"))
            && out.contains(&format!(
                "✅ owner's tap received (@user{OWNER} ({OWNER}) via telegram)"
            ))
            && out.contains("✅ resolved at the gateway"),
        "{out}"
    );
    let tap_hops = hop_ms(&out);
    w.tg.wait_message(
        OWNER,
        tapped.message_id,
        WAIT,
        "the probe prompt finished",
        |m| m.buttons().is_empty(),
    )
    .await;

    // `/probe` typed by the owner: the report comes back in the DM.
    let asked = w.tg.send_text(OWNER, OWNER, "/probe");
    let p =
        w.tg.wait_for(
            WAIT,
            "the /probe prompt",
            probe_prompt_after(tapped.message_id),
        )
        .await;
    tap(&w.tg, OWNER, &p, Decision::AllowOnce);
    let report =
        w.tg.wait_for(WAIT, "the /probe report", |v| {
            v.bot_messages(OWNER)
                .into_iter()
                .find(|m| m.message_id > asked && m.text.starts_with("Probe passed:"))
                .cloned()
        })
        .await;
    for hop in [
        "gateway accepted the request",
        delivered.as_str(),
        "owner's tap received",
        "resolved at the gateway",
    ] {
        assert!(report.text.contains(hop), "{hop}: {}", report.text);
    }
    let chat_hops = hop_ms(&report.text);

    // The gateway gone: the first hop is named broken.
    w.gw.stop();
    let started = Instant::now();
    let (ok, out) = probe_cli(&w.bridge, &["--no-tap"]).await;
    let down_wall = started.elapsed();
    assert!(!ok, "{out}");
    assert!(
        out.contains("Probe FAILED at: gateway accepted the request")
            && out.contains("probe failed at: gateway accepted the request"),
        "{out}"
    );
    testkit::figures::record(
        "probe",
        &json!({
            "no_tap": {"cli_wall_ms": no_tap_wall.as_millis() as u64, "hops_ms": no_tap_hops},
            "tap_cli": {"cli_wall_ms": tap_wall.as_millis() as u64, "hops_ms": tap_hops},
            "tap_chat": {"hops_ms": chat_hops},
            "gateway_down": {"cli_wall_ms": down_wall.as_millis() as u64, "hops_ms": hop_ms(&out)},
        }),
    );
}
