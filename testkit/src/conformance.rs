//! The channel conformance suite: the same behaviour checks for every chat adapter.
//!
//! A channel's test file implements [`Fixture`] (the adapter wired to its fake service)
//! and invokes [`channel_conformance!`](crate::channel_conformance) with an expression
//! that builds one; the macro generates one `#[tokio::test]` per check below.
//!
//! What is checked is the adapter's half of the contract: it renders the offered
//! decisions and nothing else, decodes every press into an `Answer` with the presser's
//! true stable id (authorization is the engine's job), turns forged data into
//! `Request::Malformed` instead of dropping it, finishes prompts on every outcome, copes
//! with stale messages, reports duplicates, answers the responder, keeps working with
//! prompts sent before a restart, and posts bulletins as new messages shown literally,
//! edited in place (also after a restart).

use std::sync::Arc;
use std::time::Duration;

use bridge::approval::{
    Approval, ApprovalId, Choice, Decider, Decision, Kind, Outcome, Responder, Window,
};
use bridge::bulletin::{Bulletin, Problem};
use bridge::channel::{
    Answer, Channel, ChannelError, MessageRef, Notice, Reach, Refusal, Request, Target, Via, action,
};
use bridge::grant::GrantId;
use tokio::sync::{broadcast, mpsc};

use crate::service_faults::{Faults, Moment};

/// How long a check waits for one answer or fake-side effect.
pub const WAIT: Duration = Duration::from_secs(10);

/// What a prompt looks like to its reader right now.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptState {
    /// The visible text (markup already interpreted).
    pub text: String,
    /// The choices its live buttons/reactions offer, in display order.
    pub decisions: Vec<Choice>,
    /// The grants its Revoke buttons end, in display order.
    pub revokes: Vec<GrantId>,
    /// Sent so that the phone shows it without a sound.
    pub silent: bool,
}

/// An adapter wired to a fake of its service.
#[allow(async_fn_in_trait)]
pub trait Fixture {
    /// The adapter under test (one instance per fixture; shared by every call).
    fn channel(&self) -> Arc<dyn Channel>;
    /// A fresh adapter instance with the same configuration, as after a bridge restart.
    fn restarted(&self) -> Arc<dyn Channel>;
    /// A stable user id in `allowFrom`, whose DM is [`Fixture::dm`].
    fn owner(&self) -> String;
    /// A stable user id not in `allowFrom`.
    fn stranger(&self) -> String;
    /// The owner's direct chat with the bot.
    fn dm(&self) -> Target;
    /// Whether a press names the approval's kind (a button payload's tag, which the engine
    /// checks against the approval's); a reaction names none.
    fn press_carries_kind(&self) -> bool {
        true
    }
    /// Whether messages can carry buttons (Matrix has reactions on prompts only).
    fn has_buttons(&self) -> bool {
        true
    }
    /// Whether a message can be sent without a notification (Slack cannot).
    fn sends_silently(&self) -> bool {
        true
    }
    /// `user` presses the button (or reaction) for `decision` on `prompt`.
    async fn press(&self, prompt: &MessageRef, user: &str, choice: Choice);
    /// `user` sends `raw` as the button payload of `prompt` (forged data).
    async fn press_raw(&self, prompt: &MessageRef, user: &str, raw: &str);
    /// `user` types `text` in their direct chat with the bot.
    async fn type_in_dm(&self, user: &str, text: &str);
    /// Payloads the adapter must decode as `Request::Malformed`.
    fn forged_payloads(&self) -> Vec<String>;
    /// The prompt as its reader sees it now.
    async fn prompt_state(&self, prompt: &MessageRef) -> PromptState;
    /// Deletes the prompt on the service side.
    async fn delete(&self, prompt: &MessageRef);
    /// The text the responder behind `answer` was told (waits for it).
    async fn told(&self, answer: &Answer) -> String;
}

/// A fixture whose service can inject faults (5xx storms, slow answers, dropped
/// connections): a fake's own, or a [`FaultProxy`](crate::fault_proxy::FaultProxy) in
/// front of a real server (Synapse).
#[allow(async_fn_in_trait)]
pub trait FaultyFixture: Fixture {
    fn faults(&self) -> &Faults;
    /// How many messages in the owner's DM show live buttons (reactions, an unfinished
    /// prompt) for approval `id`.
    async fn live_prompts(&self, id: &ApprovalId) -> usize;
}

/// The kind a press on `a`'s prompt must carry in its `Request::Decide`.
fn pressed_kind<F: Fixture>(f: &F, a: &Approval) -> Option<Kind> {
    f.press_carries_kind().then_some(a.kind)
}

/// A sample exec approval with a fresh id.
pub fn approval(allowed: &[Decision]) -> Approval {
    Approval {
        id: ApprovalId(uuid::Uuid::new_v4().to_string()),
        kind: Kind::Exec,
        command: "rm -rf /tmp/conformance && echo '<b>done</b> & ok'".into(),
        cwd: Some("/srv".into()),
        host: Some("gateway".into()),
        node_id: None,
        agent_id: Some("main".into()),
        session_key: Some("agent:main:conformance".into()),
        description: None,
        severity: None,
        warnings: vec!["deletes files".into()],
        risk_kinds: vec!["destructive".into()],
        cron: false,
        allowed_decisions: allowed.to_vec(),
        windows: Vec::new(),
        created_at_ms: bridge::approval::now_ms(),
        expires_at_ms: Some(bridge::approval::now_ms() + 120_000),
    }
}

/// A running receive loop.
pub struct Running {
    pub answers: mpsc::Receiver<Answer>,
    shutdown: broadcast::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn start(channel: Arc<dyn Channel>) -> Running {
        let (tx, answers) = mpsc::channel(64);
        let (shutdown, rx) = broadcast::channel(1);
        let task = tokio::spawn(async move { channel.run(tx, rx).await });
        Running {
            answers,
            shutdown,
            task,
        }
    }

    /// The next answer, or a panic naming `what` after [`WAIT`].
    pub async fn next(&mut self, what: &str) -> Answer {
        self.next_within(WAIT, what).await
    }

    /// The next answer, or a panic naming `what` after `limit`.
    pub async fn next_within(&mut self, limit: Duration, what: &str) -> Answer {
        match tokio::time::timeout(limit, self.answers.recv()).await {
            Ok(Some(a)) => a,
            Ok(None) => panic!("receive loop ended while waiting for {what}"),
            Err(_) => panic!("no answer within {limit:?} for {what}"),
        }
    }

    /// Stops the loop and checks it ends promptly.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run() must return soon after shutdown")
            .expect("run() must not panic");
    }
}

fn owner_responder<F: Fixture>(f: &F, a: &Answer) {
    assert_eq!(a.responder.channel, f.channel().name());
    assert_eq!(
        a.responder.user_id,
        f.owner(),
        "responder must carry the owner's stable id"
    );
}

fn outcomes(owner: &str, channel: &str) -> Vec<Outcome> {
    let r = Responder {
        channel: channel.into(),
        user_id: owner.into(),
        display: Some("Owner <&>".into()),
    };
    let now = bridge::approval::now_ms();
    let mut v: Vec<Outcome> = Decision::ALL
        .iter()
        .map(|d| Outcome::Decided {
            decision: *d,
            by: Decider::Responder(r.clone()),
            at_ms: now,
        })
        .collect();
    v.push(Outcome::Decided {
        decision: Decision::Deny,
        by: Decider::Elsewhere {
            resolved_by: Some("cli".into()),
        },
        at_ms: now,
    });
    v.push(Outcome::Expired { at_ms: now });
    v.push(Outcome::Gone { at_ms: now });
    v.push(Outcome::NoRoute { at_ms: now });
    v.push(Outcome::Cancelled {
        reason: bridge::approval::CancelReason::GatewayRestart,
        at_ms: now,
    });
    v
}

pub async fn health_reports_the_bot<F: Fixture>(f: &F) {
    let h = f
        .channel()
        .health()
        .await
        .expect("health check against the fake must pass");
    assert!(!h.is_empty());
}

pub async fn targets_and_allow_from_are_stable_ids<F: Fixture>(f: &F) {
    let ch = f.channel();
    assert!(
        ch.targets().contains(&f.dm()),
        "the owner's DM must be a target"
    );
    assert!(ch.allows(&f.owner()));
    assert!(!ch.allows(&f.stranger()));
    assert!(!ch.allows(""));
    assert!(!ch.allows(&format!(" {}", f.owner())), "ids match exactly");
}

pub async fn deliver_offers_exactly_the_allowed_decisions<F: Fixture>(f: &F) {
    let ch = f.channel();
    let hours = ["1h", "8h"]
        .map(|w| Window::parse(w).expect("window"))
        .to_vec();
    for (allowed, windows) in [
        (vec![Decision::AllowOnce, Decision::Deny], Vec::new()),
        (Decision::ALL.to_vec(), Vec::new()),
        (vec![Decision::Deny], Vec::new()),
        (vec![Decision::AllowOnce, Decision::Deny], hours.clone()),
        // Without allow-once there is nothing to time-box.
        (vec![Decision::Deny], hours.clone()),
    ] {
        let a = Approval {
            windows: windows.clone(),
            ..approval(&allowed)
        };
        let prompt = ch.deliver(&f.dm(), &a).await.expect("deliver");
        assert_eq!(prompt.target, f.dm());
        let s = f.prompt_state(&prompt).await;
        let mut got = s.decisions.clone();
        got.sort_by_key(|d| d.token());
        let mut want: Vec<Choice> = allowed.iter().copied().map(Choice::from).collect();
        if allowed.contains(&Decision::AllowOnce) {
            want.extend(windows.iter().copied().map(Choice::AllowFor));
        }
        want.sort_by_key(|d| d.token());
        assert_eq!(
            got, want,
            "buttons must be exactly allowedDecisions and the time-boxed allows"
        );
        assert!(
            s.text.contains(&a.command),
            "the prompt shows the command literally: {}",
            s.text
        );
        // `expires in 1 min 59 s (11:06 UTC)`; Discord's `<t:…:R>` its client renders.
        assert!(
            s.text.contains("expires") && s.text.contains(" UTC)"),
            "the prompt says the time left and the instant: {}",
            s.text
        );
    }
}

pub async fn each_decision_decodes_from_a_press<F: Fixture>(f: &F) {
    let ch = f.channel();
    let mut run = Running::start(ch.clone());
    // Every choice a prompt can offer: the three decisions and time-boxed allows.
    let mut offered = approval(&Decision::ALL);
    offered.windows = ["15m", "1h", "8h"]
        .map(|w| Window::parse(w).expect("window"))
        .to_vec();
    for d in offered.choices() {
        let a = Approval {
            id: ApprovalId(uuid::Uuid::new_v4().to_string()),
            ..offered.clone()
        };
        let prompt = ch.deliver(&f.dm(), &a).await.expect("deliver");
        f.press(&prompt, &f.owner(), d).await;
        let ans = run.next(&format!("press {d}")).await;
        assert_eq!(
            ans.request,
            Request::Decide {
                id: a.id.clone(),
                choice: d,
                kind: pressed_kind(f, &a)
            }
        );
        assert_eq!(ans.via, Via::Prompt(prompt.clone()));
        assert!(ans.in_dm, "a press in the owner's DM is in_dm");
        owner_responder(f, &ans);
        assert_eq!(ans.reply.channel, ch.name());
        f.channel()
            .notify(
                &ans.reply,
                &Notice::Accepted {
                    id: a.id.clone(),
                    decision: d.decision(),
                },
            )
            .await
            .expect("notify");
    }
    run.stop().await;
}

pub async fn stranger_press_carries_the_strangers_id<F: Fixture>(f: &F) {
    let ch = f.channel();
    let mut run = Running::start(ch.clone());
    let a = approval(&Decision::ALL);
    let prompt = ch.deliver(&f.dm(), &a).await.expect("deliver");
    f.press(&prompt, &f.stranger(), Decision::AllowAlways.into())
        .await;
    let ans = run.next("stranger's press").await;
    assert_eq!(ans.responder.user_id, f.stranger());
    assert!(
        !ch.allows(&ans.responder.user_id),
        "the engine will refuse it"
    );
    assert_eq!(
        ans.request,
        Request::Decide {
            id: a.id.clone(),
            choice: Decision::AllowAlways.into(),
            kind: pressed_kind(f, &a)
        }
    );
    ch.notify(&ans.reply, &Notice::Refused(Refusal::NotAllowed))
        .await
        .expect("notify refusal");
    let told = f.told(&ans).await;
    assert!(
        told.contains(Refusal::NotAllowed.message()),
        "stranger is told why: {told}"
    );
    // The prompt is untouched.
    assert_eq!(f.prompt_state(&prompt).await.decisions.len(), 3);
    run.stop().await;
}

pub async fn forged_data_decodes_as_malformed<F: Fixture>(f: &F) {
    let ch = f.channel();
    let mut run = Running::start(ch.clone());
    let a = approval(&Decision::ALL);
    let prompt = ch.deliver(&f.dm(), &a).await.expect("deliver");
    for raw in f.forged_payloads() {
        f.press_raw(&prompt, &f.owner(), &raw).await;
        let ans = run.next(&format!("forged {raw:?}")).await;
        assert!(
            matches!(ans.request, Request::Malformed { .. }),
            "{raw:?} decoded as {:?}",
            ans.request
        );
        owner_responder(f, &ans);
        ch.notify(&ans.reply, &Notice::Refused(Refusal::Malformed))
            .await
            .expect("notify");
        assert!(f.told(&ans).await.contains(Refusal::Malformed.message()));
    }
    run.stop().await;
}

pub async fn unknown_id_decodes_for_the_engine_to_refuse<F: Fixture>(f: &F) {
    let ch = f.channel();
    let mut run = Running::start(ch.clone());
    let a = approval(&Decision::ALL);
    let prompt = ch.deliver(&f.dm(), &a).await.expect("deliver");
    let other = approval(&Decision::ALL);
    f.type_in_dm(&f.owner(), &format!("/approve {} deny", other.id))
        .await;
    let ans = run.next("/approve with an unknown id").await;
    assert_eq!(
        ans.request,
        Request::Decide {
            id: other.id.clone(),
            choice: Decision::Deny.into(),
            kind: None
        }
    );
    assert!(matches!(ans.via, Via::Command { .. }));
    assert!(ans.in_dm);
    owner_responder(f, &ans);
    ch.notify(&ans.reply, &Notice::Refused(Refusal::UnknownApproval))
        .await
        .expect("notify");
    assert!(
        f.told(&ans)
            .await
            .contains(Refusal::UnknownApproval.message())
    );
    assert_eq!(f.prompt_state(&prompt).await.decisions.len(), 3);
    run.stop().await;
}

pub async fn text_commands_decode<F: Fixture>(f: &F) {
    let ch = f.channel();
    let mut run = Running::start(ch.clone());
    let a = approval(&Decision::ALL);
    f.type_in_dm(&f.owner(), &format!("/approve {} always", a.id))
        .await;
    let ans = run.next("/approve").await;
    assert_eq!(
        ans.request,
        Request::Decide {
            id: a.id.clone(),
            choice: Decision::AllowAlways.into(),
            kind: None
        }
    );
    f.type_in_dm(&f.owner(), "/pending").await;
    let ans = run.next("/pending").await;
    assert_eq!(ans.request, Request::ListPending);
    ch.notify(&ans.reply, &Notice::Pending(vec![a.clone()]))
        .await
        .expect("notify pending");
    assert!(f.told(&ans).await.contains(a.id.as_str()));
    f.type_in_dm(&f.owner(), "/approve nonsense").await;
    let ans = run.next("bad /approve").await;
    assert!(
        matches!(ans.request, Request::Malformed { .. }),
        "{:?}",
        ans.request
    );
    run.stop().await;
}

pub async fn finish_shows_each_outcome_and_removes_buttons<F: Fixture>(f: &F) {
    let ch = f.channel();
    for (i, o) in outcomes(&f.owner(), ch.name()).into_iter().enumerate() {
        let a = approval(&Decision::ALL);
        let prompt = ch.deliver(&f.dm(), &a).await.expect("deliver");
        ch.finish(&prompt, &a, &o).await.expect("finish");
        let s = f.prompt_state(&prompt).await;
        assert!(s.decisions.is_empty(), "buttons gone after {o:?}");
        assert!(
            s.text.contains(&o.summary()),
            "finished prompt shows {:?}: {}",
            o.summary(),
            s.text
        );
        assert!(
            s.text.contains(&a.command),
            "finished prompt keeps the request: {}",
            s.text
        );
        assert!(
            !s.text.contains("expires"),
            "a finished prompt shows its outcome, not the time left: {}",
            s.text
        );
        if i == 0 {
            // Finishing again with the same outcome is harmless.
            ch.finish(&prompt, &a, &o)
                .await
                .expect("finish is idempotent");
            assert_eq!(f.prompt_state(&prompt).await, s);
        }
    }
}

/// Where the channel declares cheap edits ([`Channel::refresh`]), a pending prompt is
/// rewritten with the time left as of now and keeps its buttons. (Discord needs none: its
/// `<t:…:R>` timestamp counts down in the client by itself; Matrix declares none: an edit
/// there is a new event every client lists as "(edited)".)
pub async fn refresh_rewrites_the_time_left_and_keeps_the_buttons<F: Fixture>(f: &F) {
    let ch = f.channel();
    let Some(refresh) = ch.refresh() else {
        assert!(
            matches!(ch.name(), "matrix" | "discord"),
            "{} declares no refresh",
            ch.name()
        );
        return;
    };
    let mut a = approval(&Decision::ALL);
    a.expires_at_ms = Some(a.created_at_ms + 3 * 3_600_000);
    let prompt = ch.deliver(&f.dm(), &a).await.expect("deliver");
    let before = f.prompt_state(&prompt).await;
    assert!(before.text.contains("expires in 3 h"), "{}", before.text);
    // The same approval seen nearer its end (the adapter reads the clock itself).
    a.expires_at_ms = Some(a.created_at_ms + 25 * 60_000);
    refresh.refresh(&prompt, &a).await.expect("refresh");
    let after = f.prompt_state(&prompt).await;
    assert!(
        after.text.contains("expires in 25 min") && !after.text.contains("expires in 3 h"),
        "{}",
        after.text
    );
    assert_eq!(after.decisions, before.decisions, "the buttons stay");
    assert!(after.text.contains(&a.command), "{}", after.text);
}

pub async fn finish_survives_a_deleted_or_unknown_message<F: Fixture>(f: &F) {
    let ch = f.channel();
    let a = approval(&Decision::ALL);
    let o = Outcome::Expired {
        at_ms: bridge::approval::now_ms(),
    };
    let prompt = ch.deliver(&f.dm(), &a).await.expect("deliver");
    f.delete(&prompt).await;
    match ch.finish(&prompt, &a, &o).await {
        Ok(()) | Err(ChannelError::MessageGone(_)) => {}
        Err(e) => panic!("deleted prompt: expected Ok or MessageGone, got {e:?}"),
    }
    let stale = MessageRef {
        target: f.dm(),
        message: "987654".into(),
    };
    match ch.finish(&stale, &a, &o).await {
        Ok(()) | Err(ChannelError::MessageGone(_)) => {}
        Err(e) => panic!("unknown message: expected Ok or MessageGone, got {e:?}"),
    }
}

pub async fn duplicate_press_yields_two_answers<F: Fixture>(f: &F) {
    let ch = f.channel();
    let mut run = Running::start(ch.clone());
    let a = approval(&Decision::ALL);
    let prompt = ch.deliver(&f.dm(), &a).await.expect("deliver");
    // One press after the other, as a person double-tapping does. (On Matrix a second press
    // first takes the reaction back; if both reached the bot in one sync, the redacted
    // first reaction would rightly never count.)
    f.press(&prompt, &f.owner(), Decision::AllowOnce.into())
        .await;
    let first = run.next("first press").await;
    f.press(&prompt, &f.owner(), Decision::AllowOnce.into())
        .await;
    let second = run.next("second press").await;
    assert_eq!(first.request, second.request);
    assert_ne!(
        first.reply, second.reply,
        "each press gets its own reply handle"
    );
    ch.notify(
        &first.reply,
        &Notice::Accepted {
            id: a.id.clone(),
            decision: Decision::AllowOnce,
        },
    )
    .await
    .expect("notify");
    let o = Outcome::Decided {
        decision: Decision::AllowOnce,
        by: Decider::Responder(first.responder.clone()),
        at_ms: bridge::approval::now_ms(),
    };
    ch.notify(
        &second.reply,
        &Notice::AlreadyFinished {
            id: a.id.clone(),
            outcome: o.clone(),
        },
    )
    .await
    .expect("notify");
    assert!(
        f.told(&second).await.contains(&o.summary()),
        "the second presser learns who decided"
    );
    run.stop().await;
}

pub async fn prompts_survive_a_restart<F: Fixture>(f: &F) {
    let a = approval(&Decision::ALL);
    let prompt = f.channel().deliver(&f.dm(), &a).await.expect("deliver");
    let fresh = f.restarted();
    let mut run = Running::start(fresh.clone());
    f.press(&prompt, &f.owner(), Decision::Deny.into()).await;
    let ans = run.next("press on a prompt sent before the restart").await;
    assert_eq!(
        ans.request,
        Request::Decide {
            id: a.id.clone(),
            choice: Decision::Deny.into(),
            kind: pressed_kind(f, &a)
        }
    );
    assert_eq!(ans.via, Via::Prompt(prompt.clone()));
    let o = Outcome::Decided {
        decision: Decision::Deny,
        by: Decider::Responder(ans.responder.clone()),
        at_ms: 0,
    };
    fresh
        .notify(
            &ans.reply,
            &Notice::Accepted {
                id: a.id.clone(),
                decision: Decision::Deny,
            },
        )
        .await
        .expect("notify");
    fresh
        .finish(&prompt, &a, &o)
        .await
        .expect("finish after restart");
    assert!(f.prompt_state(&prompt).await.decisions.is_empty());
    run.stop().await;
}

/// Every value a channel's reach watch takes after [`ReachLog::start`], in order.
pub struct ReachLog(Arc<std::sync::Mutex<Vec<Reach>>>);

impl ReachLog {
    pub fn start(channel: &dyn Channel) -> ReachLog {
        let mut rx = channel.reach().expect("the channel tells its reach");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let r = rx.borrow_and_update().clone();
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            }
        });
        ReachLog(log)
    }

    pub fn values(&self) -> Vec<Reach> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The values once there are at least `n`; a panic naming them after `limit`.
    pub async fn wait(&self, n: usize, limit: Duration) -> Vec<Reach> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let v = self.values();
            if v.len() >= n {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "reach went through only {v:?} in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `Reach::Down` with `reason` and `fix`.
pub fn down(reason: &str, fix: &str) -> Reach {
    Reach::Down {
        reason: reason.into(),
        fix: fix.into(),
    }
}

/// A channel-down alert whose reason and fix carry markup of every service (HTML, mrkdwn
/// links and mentions, Discord mentions, backticks, a bare link): the owner must read it
/// literally.
pub fn hostile_bulletin() -> Bulletin {
    Bulletin::Alert {
        problem: Problem::ChannelDown {
            channel: "telegram".into(),
            reason: "<b>401</b> & <!channel> <@U0OWNER> <@&123> @everyone @room".into(),
            fix: "run `openclaw gateway status` & see <https://evil.example|here> https://evil.example/x"
                .into(),
        },
        since_ms: 1_795_000_005_999,
    }
}

pub async fn bulletins_are_posted_literally_and_edited_in_place<F: Fixture>(f: &F) {
    let ch = f.channel();
    let alert = hostile_bulletin();
    let post = ch.post(&f.dm(), &alert).await.expect("post");
    assert_eq!(post.target, f.dm(), "posted to the owner's DM");
    let shown = f.prompt_state(&post).await;
    assert_eq!(shown.text, alert.text(), "the bulletin reads literally");
    assert!(
        shown.decisions.is_empty(),
        "a bulletin offers nothing to press"
    );
    let second = ch.post(&f.dm(), &alert).await.expect("post again");
    assert_ne!(second.message, post.message, "each post is a new message");

    let Bulletin::Alert { problem, since_ms } = alert else {
        unreachable!()
    };
    let over = Bulletin::AlertOver {
        problem: problem.clone(),
        since_ms,
        lasted_ms: 180_000,
    };
    ch.edit_post(&post, &over).await.expect("edit_post");
    assert_eq!(f.prompt_state(&post).await.text, over.text());
    // The ref outlives the adapter: a restarted one edits it too.
    let back = Bulletin::Back {
        problem,
        lasted_ms: 192_000,
    };
    f.restarted()
        .edit_post(&post, &back)
        .await
        .expect("edit_post after a restart");
    assert_eq!(f.prompt_state(&post).await.text, back.text());
    let stale = MessageRef {
        target: f.dm(),
        message: "987654".into(),
    };
    match ch.edit_post(&stale, &back).await {
        Err(ChannelError::MessageGone(_)) => {}
        other => panic!("editing an unknown message: expected MessageGone, got {other:?}"),
    }
}

/// A grant's use is told in one quiet line with a Revoke button (where the channel has
/// them); pressing it, or typing `/revoke`, asks the engine to end that grant.
pub async fn a_grant_use_is_told_quietly_with_its_revoke_button<F: Fixture>(f: &F) {
    let ch = f.channel();
    let mut running = Running::start(ch.clone());
    let grant = GrantId::parse("g-1a2b3c4d").unwrap();
    let used = Bulletin::GrantUsed {
        grant: grant.clone(),
        id: ApprovalId(uuid::Uuid::new_v4().to_string()),
        command: "ls -la /srv/<b>app</b> @everyone".into(),
        until_ms: 1_795_000_005_999,
    };
    let post = ch.post(&f.dm(), &used).await.expect("post");
    let shown = f.prompt_state(&post).await;
    assert_eq!(shown.text, used.text(), "the line reads literally");
    assert!(shown.decisions.is_empty(), "it decides nothing");
    assert_eq!(shown.silent, f.sends_silently(), "quiet where it can be");
    let revokes = if f.has_buttons() {
        vec![grant.clone()]
    } else {
        Vec::new()
    };
    assert_eq!(
        shown.revokes, revokes,
        "a Revoke button where there are buttons"
    );
    let alert = ch
        .post(&f.dm(), &hostile_bulletin())
        .await
        .expect("post an alert");
    assert!(!f.prompt_state(&alert).await.silent, "an alert notifies");

    let revoke = Request::Revoke {
        grant: grant.clone(),
    };
    if f.has_buttons() {
        f.press_raw(&post, &f.owner(), &action::encode_revoke(&grant))
            .await;
        let a = running.next("the Revoke press").await;
        owner_responder(f, &a);
        assert_eq!(a.request, revoke);
    }
    f.type_in_dm(&f.owner(), &format!("/revoke {grant}")).await;
    let a = running.next("/revoke typed").await;
    owner_responder(f, &a);
    assert_eq!(a.request, revoke);
    running.stop().await;
}

/// How a call under an injected fault may end: done, or failed as transient (the engine
/// retries those). A permanent error would leave an approval without a prompt, or a prompt
/// with live buttons after it ended.
fn transient_or_done<T>(what: &str, r: &Result<T, ChannelError>) {
    if let Err(e) = r {
        assert!(
            e.is_transient(),
            "{what}: must fail as transient, got {e:?}"
        );
    }
}

/// A flaky service: 5xx answers (the service's JSON and a proxy's HTML page), a slow answer,
/// and connections dropped before or after the service handled the call. `deliver` and
/// `finish` either get through or fail as transient; once the fault is gone the same call
/// works and the prompt shows what it should.
pub async fn service_faults_fail_as_transient<F: FaultyFixture>(f: &F) {
    let ch = f.channel();
    let storm = Duration::from_millis(1500);
    type Arm = fn(&Faults, Duration);
    let cases: [(&str, Arm); 6] = [
        ("500 storm", |x, d| x.storm(500, d)),
        ("502 storm (HTML)", |x, d| x.storm(502, d)),
        ("503 storm (HTML)", |x, d| x.storm(503, d)),
        ("slow answer", |x, _| {
            x.slow_next(1, Duration::from_secs(2), Moment::AfterProcessing)
        }),
        ("dropped before handling", |x, _| {
            x.drop_next(1, Moment::BeforeProcessing)
        }),
        ("dropped after handling", |x, _| {
            x.drop_next(1, Moment::AfterProcessing)
        }),
    ];
    for (what, arm) in cases {
        let a = approval(&Decision::ALL);
        let before = f.faults().injected();
        arm(f.faults(), storm);
        let sent = ch.deliver(&f.dm(), &a).await;
        eprintln!("{what}: deliver -> {:?}", sent.as_ref().map(|p| &p.message));
        transient_or_done(&format!("{what}: deliver"), &sent);
        assert!(f.faults().injected() > before, "{what}: the fault acted");
        tokio::time::sleep(storm).await;
        let prompt = match sent {
            Ok(p) => p,
            Err(_) => ch
                .deliver(&f.dm(), &a)
                .await
                .unwrap_or_else(|e| panic!("{what}: deliver after the fault: {e}")),
        };
        let mut shown = f.prompt_state(&prompt).await.decisions;
        shown.sort_by_key(|d| d.token());
        let mut all = Decision::ALL.map(Choice::from).to_vec();
        all.sort_by_key(|d| d.token());
        assert_eq!(shown, all, "{what}: the prompt shows its buttons");
        // A send the service carried out although its answer was lost leaves no second
        // prompt with live buttons (Discord: nonce; Slack: adopted from the history;
        // Telegram: the orphan's buttons removed once the retry is out; Matrix: the retry
        // reuses the transaction id, and the homeserver answers with the first event).
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let live = f.live_prompts(&a.id).await;
            if live == 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {live} messages with live buttons for one approval"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let o = Outcome::Gone { at_ms: 0 };
        let before = f.faults().injected();
        arm(f.faults(), storm);
        let finished = ch.finish(&prompt, &a, &o).await;
        eprintln!("{what}: finish -> {finished:?}");
        transient_or_done(&format!("{what}: finish"), &finished);
        assert!(
            f.faults().injected() > before,
            "{what}: the fault acted on finish"
        );
        tokio::time::sleep(storm).await;
        if finished.is_err() {
            ch.finish(&prompt, &a, &o)
                .await
                .unwrap_or_else(|e| panic!("{what}: finish after the fault: {e}"));
        }
        assert!(
            f.prompt_state(&prompt).await.decisions.is_empty(),
            "{what}: finished prompt keeps no buttons"
        );
    }
}

/// A press while the service fails every call for a few seconds — the receive path too
/// (long polls, syncs, acknowledgements) — is not lost: it reaches the engine as the owner's
/// decision (once the service is back, where receiving needs it), and the owner is told.
pub async fn a_press_during_a_storm_is_not_lost<F: FaultyFixture>(f: &F) {
    let ch = f.channel();
    let mut run = Running::start(ch.clone());
    let a = approval(&Decision::ALL);
    let prompt = ch.deliver(&f.dm(), &a).await.expect("deliver");
    let storm = Duration::from_secs(4);
    let before = f.faults().injected();
    f.faults().storm(502, storm);
    let storm_over = tokio::time::Instant::now() + storm;
    f.press(&prompt, &f.owner(), Decision::AllowOnce.into())
        .await;
    // The receive loop backs off while the service fails; allow for its longest pause.
    let answer = run
        .next_within(
            storm + Duration::from_secs(30),
            "a press during a 502 storm",
        )
        .await;
    owner_responder(f, &answer);
    assert_eq!(
        answer.request,
        Request::Decide {
            id: a.id.clone(),
            kind: pressed_kind(f, &a),
            choice: Decision::AllowOnce.into(),
        }
    );
    // The engine answers at once, maybe still in the storm: that may fail as transient
    // only (the engine does not retry a notice, so the adapter should get it through).
    let notice = Notice::Accepted {
        id: a.id.clone(),
        decision: Decision::AllowOnce,
    };
    let told = ch.notify(&answer.reply, &notice).await;
    transient_or_done("notify in the storm", &told);
    if told.is_err() {
        tokio::time::sleep_until(storm_over).await;
        ch.notify(&answer.reply, &notice)
            .await
            .expect("notify once the storm is over");
    }
    assert!(
        f.faults().injected() > before,
        "the storm met the receive path or the answer"
    );
    assert!(!f.told(&answer).await.is_empty(), "the owner is told");
    run.stop().await;
}

/// Generates the service-fault checks for a channel whose service injects faults (a
/// [`FaultyFixture`]).
#[macro_export]
macro_rules! channel_fault_conformance {
    ($fixture:expr) => {
        $crate::channel_conformance!(@tests $fixture;
            service_faults_fail_as_transient,
            a_press_during_a_storm_is_not_lost,
        );
    };
}

/// Generates the conformance tests for one channel from a fixture-building expression
/// (an `async` expression, e.g. `TelegramFixture::start()`).
#[macro_export]
macro_rules! channel_conformance {
    ($fixture:expr) => {
        $crate::channel_conformance!(@tests $fixture;
            health_reports_the_bot,
            targets_and_allow_from_are_stable_ids,
            deliver_offers_exactly_the_allowed_decisions,
            each_decision_decodes_from_a_press,
            stranger_press_carries_the_strangers_id,
            forged_data_decodes_as_malformed,
            unknown_id_decodes_for_the_engine_to_refuse,
            text_commands_decode,
            finish_shows_each_outcome_and_removes_buttons,
            refresh_rewrites_the_time_left_and_keeps_the_buttons,
            finish_survives_a_deleted_or_unknown_message,
            duplicate_press_yields_two_answers,
            prompts_survive_a_restart,
            bulletins_are_posted_literally_and_edited_in_place,
            a_grant_use_is_told_quietly_with_its_revoke_button,
        );
    };
    (@tests $fixture:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture.await;
                $crate::conformance::$name(&fixture).await;
            }
        )*
    };
}

/// A message's decoded buttons, `(label, action)`, sorted into the choices they decide and
/// the grants they revoke; each label must say what its button does.
pub fn controls(
    buttons: impl IntoIterator<Item = (String, bridge::channel::action::Action)>,
) -> (Vec<Choice>, Vec<GrantId>) {
    use bridge::channel::action::Action;
    let (mut decisions, mut revokes) = (Vec::new(), Vec::new());
    for (label, action) in buttons {
        match action {
            Action::Decide { choice, .. } => {
                assert_eq!(label, choice.label(), "label matches the decision");
                decisions.push(choice);
            }
            Action::RevokeGrant(grant) => {
                assert_eq!(label, format!("Revoke {grant}"), "label names the grant");
                revokes.push(grant);
            }
        }
    }
    (decisions, revokes)
}
