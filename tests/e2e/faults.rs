//! Process-kill faults (issue 6): the real bridge binary and the real OpenClaw gateway are
//! SIGKILLed again and again while approvals flow, and afterwards nothing is lost, nothing is
//! prompted twice and nothing is decided other than the owner pressed. Figures (approvals,
//! faults, losses, duplicates, wrong decisions, recovery p50/max) go to
//! `testkit::figures` as `faults-bridge-kill` and `faults-gateway-kill`.
//!
//! The fault points come from a seeded PRNG (`FAULTS_SEED`, logged), so a failing run can be
//! replayed with the same choices; timing on a loaded machine still varies, which is the point.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use bridge::approval::{ApprovalId, Decision};
use bridge::store::{AuditRecord, SqliteStore, Store};
use serde_json::{Value, json};
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_telegram::{FakeTelegram, Message};
use testkit::figures;
use testkit::openclaw::{Gateway, GatewayConfig, Operator};
use tokio::task::JoinHandle;

const OWNER: i64 = 111_111_111;
const BOT_TOKEN: &str = "123456:TEST-token";
/// How long the bridge gets to be healthy / to show prompts again before we give up waiting.
const GIVE_UP: Duration = Duration::from_secs(60);
/// Approvals meant to be decided get a timeout no run reaches.
const LONG_MS: u64 = 900_000;

fn exe() -> &'static Path {
    env!("CARGO_BIN_EXE_approval-bridge").as_ref()
}

/// splitmix64: small, seeded, good enough to pick fault points reproducibly.
struct Rng(u64);

impl Rng {
    fn seed() -> u64 {
        std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x0b5e_55ed_fa17_u64)
    }

    fn from_env(test: &str) -> Rng {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x0b5e_55ed_fa17_u64);
        eprintln!("{test}: FAULTS_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn decision(&mut self) -> Decision {
        [Decision::AllowOnce, Decision::AllowAlways, Decision::Deny][self.below(3) as usize]
    }
}

/// Who is meant to end an approval.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    /// The owner presses this decision (and only this one) on the bridge's prompt.
    Owner(Decision),
    /// Another operator resolves it at the gateway.
    Elsewhere(Decision),
    /// Nobody answers; the gateway's timeout ends it.
    Expire,
}

impl Plan {
    fn decision(self) -> Option<Decision> {
        match self {
            Plan::Owner(d) | Plan::Elsewhere(d) => Some(d),
            Plan::Expire => None,
        }
    }
}

/// What the requester (the operator that raised the approval) finally saw.
type Seen = Result<Option<Decision>, String>;

struct Tracked {
    id: ApprovalId,
    plan: Plan,
    wait: Option<JoinHandle<Result<Option<Decision>>>>,
    seen: Option<Seen>,
    presses: u32,
}

impl Tracked {
    /// Collects the requester's result once the gateway answered it.
    async fn poll(&mut self) {
        if self.wait.as_ref().is_some_and(JoinHandle::is_finished) {
            let h = self.wait.take().unwrap();
            self.seen = Some(match h.await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            });
        }
    }

    async fn settle(&mut self, limit: Duration) {
        if let Some(h) = self.wait.take() {
            self.seen = Some(match tokio::time::timeout(limit, h).await {
                Ok(Ok(r)) => r.map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no decision within {limit:?}")),
            });
        }
    }

    fn ended(&self) -> bool {
        self.seen.is_some() || self.wait.as_ref().is_some_and(JoinHandle::is_finished)
    }
}

fn button_data(id: &ApprovalId, d: Decision) -> String {
    format!("exec_approve:{id}:{}", d.as_str())
}

/// Messages in the owner's DM that still carry buttons for `id` (its prompt or digest row).
fn live_prompts(msgs: &[Message], id: &ApprovalId) -> Vec<Message> {
    let needle = format!(":{id}:");
    msgs.iter()
        .filter(|m| m.buttons().iter().any(|(_, d)| d.contains(&needle)))
        .cloned()
        .collect()
}

/// How many prompts (plain or digest) the bridge ever sent with buttons for `id`.
fn prompts_sent(tg: &FakeTelegram, id: &ApprovalId) -> usize {
    let needle = format!(":{id}:");
    tg.calls_to("sendMessage")
        .iter()
        .filter(|c| {
            c.status == 200
                && c.params
                    .get("reply_markup")
                    .is_some_and(|m| m.to_string().contains(&needle))
        })
        .count()
}

/// Ids the gateway holds pending right now.
async fn gateway_pending(op: &Operator) -> Result<HashSet<String>> {
    let v = op
        .call("exec.approval.list", json!({}))
        .await
        .map_err(|e| anyhow::anyhow!("exec.approval.list: {e}"))?;
    let list = v
        .as_array()
        .or_else(|| v.get("approvals").and_then(Value::as_array))
        .or_else(|| v.get("items").and_then(Value::as_array))
        .cloned()
        .unwrap_or_default();
    Ok(list
        .iter()
        .filter_map(|e| e.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect())
}

/// Audit sequence numbers, straight from SQLite (the store API does not expose them).
fn audit_seqs(state: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        state.join("bridge.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn.prepare("SELECT seq FROM audit ORDER BY seq").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// (approval, message id) of every prompt the bridge recorded as delivered.
fn recorded_prompts(state: &Path) -> HashSet<(String, String)> {
    audit(state)
        .into_iter()
        .filter(|r| r.event == "delivered")
        .filter_map(|r| {
            let m = match &r.detail["message"] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            Some((r.approval_id?, m))
        })
        .collect()
}

/// Live prompts for `id` that the bridge knows it sent (not orphans of a kill that landed
/// after Telegram accepted a message and before the bridge recorded it).
fn live_recorded(
    msgs: &[Message],
    id: &ApprovalId,
    recorded: &HashSet<(String, String)>,
) -> Vec<Message> {
    live_prompts(msgs, id)
        .into_iter()
        .filter(|m| recorded.contains(&(id.to_string(), m.message_id.to_string())))
        .collect()
}

fn audit(state: &Path) -> Vec<AuditRecord> {
    SqliteStore::open(&state.join("bridge.sqlite"))
        .unwrap()
        .audit_log(None)
        .unwrap()
}

fn dump(bridge: &BridgeProcess, gw: &Gateway, tg: &FakeTelegram) {
    let log = bridge.log();
    let tail: Vec<&str> = log.lines().rev().take(400).collect();
    eprintln!(
        "---- bridge log (last 400 lines) ----\n{}\n---- gateway log: {} ----",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        gw.log_path().display()
    );
    let calls: Vec<String> = tg
        .calls()
        .iter()
        .rev()
        .take(200)
        .map(|c| c.line())
        .collect();
    eprintln!(
        "---- telegram calls (last 200, newest first) ----\n{}",
        calls.join("\n")
    );
}

/// Everything the bridge logged and the fake recorded about the approvals named in `problems`.
fn dump_ids(bridge: &BridgeProcess, tg: &FakeTelegram, problems: &[&Vec<String>]) {
    let ids: HashSet<&str> = problems
        .iter()
        .flat_map(|v| v.iter())
        .filter_map(|p| p.split(':').next())
        .filter(|id| id.len() == 36)
        .collect();
    let log = bridge.log();
    for id in ids {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(id) || l.starts_with("--- restart"))
            .collect();
        eprintln!("---- bridge log for {id} ----\n{}", lines.join("\n"));
        let calls: Vec<String> = tg
            .calls()
            .iter()
            .filter(|c| c.params.to_string().contains(id))
            .map(|c| c.line())
            .collect();
        eprintln!("---- telegram calls for {id} ----\n{}", calls.join("\n"));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn p50_max_json(v: &[f64]) -> Value {
    match figures::p50_max(v) {
        Some((p50, max)) => json!({"p50": p50.round(), "max": max.round(), "n": v.len()}),
        None => json!(null),
    }
}

/// Waits until every approval pending at the gateway has a live prompt in the owner's DM.
/// Returns false when it gave up.
async fn prompts_live_again(op: &Operator, tg: &FakeTelegram, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(pending) = gateway_pending(op).await {
            let msgs = tg.bot_messages(OWNER);
            if pending
                .iter()
                .all(|id| !live_prompts(&msgs, &ApprovalId(id.clone())).is_empty())
            {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no message in the owner's DM shows buttons; false when it gave up.
async fn no_buttons_left(tg: &FakeTelegram, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if tg
            .bot_messages(OWNER)
            .iter()
            .all(|m| m.buttons().is_empty())
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Presses `id`'s planned button on its live prompt (the recorded one when `recorded` is
/// given); false when no live prompt shows it.
fn press(tg: &FakeTelegram, t: &mut Tracked, recorded: Option<&HashSet<(String, String)>>) -> bool {
    let Plan::Owner(d) = t.plan else {
        return false;
    };
    let msgs = tg.bot_messages(OWNER);
    let live = match recorded {
        Some(r) => live_recorded(&msgs, &t.id, r),
        None => live_prompts(&msgs, &t.id),
    };
    let Some(m) = live.into_iter().next() else {
        return false;
    };
    tg.press(OWNER, OWNER, m.message_id, &button_data(&t.id, d));
    t.presses += 1;
    true
}

#[derive(Debug, Default)]
struct Tally {
    lost: Vec<String>,
    duplicates: Vec<String>,
    wrong: Vec<String>,
    live_after_end: Vec<String>,
    audit_gaps: Vec<String>,
}

impl Tally {
    fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicates.is_empty()
            && self.wrong.is_empty()
            && self.live_after_end.is_empty()
            && self.audit_gaps.is_empty()
    }
}

/// Checks the audit log against what happened: sequence numbers without holes, every
/// approval requested and (if it ended) ended in it, the owner's decisions written ahead of
/// their resolve, never two resolves or a resolve with another decision.
fn check_audit(state: &Path, tracked: &[Tracked], tally: &mut Tally) -> (usize, usize) {
    let seqs = audit_seqs(state);
    for (i, s) in seqs.iter().enumerate() {
        if *s != i as i64 + 1 {
            tally
                .audit_gaps
                .push(format!("audit seq #{i} is {s}, expected {}", i + 1));
            break;
        }
    }
    let log = audit(state);
    let mut by_id: BTreeMap<&str, Vec<&AuditRecord>> = BTreeMap::new();
    for r in &log {
        if let Some(id) = &r.approval_id {
            by_id.entry(id.as_str()).or_default().push(r);
        }
    }
    let mut resolved_recorded = 0;
    for t in tracked {
        let recs = by_id.get(t.id.as_str()).cloned().unwrap_or_default();
        let has = |ev: &str| recs.iter().any(|r| r.event == ev);
        if !has("requested") {
            tally
                .audit_gaps
                .push(format!("{}: no 'requested' record", t.id));
        }
        if matches!(t.seen, Some(Ok(_))) && !has("ended") {
            tally
                .audit_gaps
                .push(format!("{}: ended, no 'ended' record", t.id));
        }
        let resolved: Vec<&&AuditRecord> = recs.iter().filter(|r| r.event == "resolved").collect();
        resolved_recorded += resolved.len();
        if resolved.len() > 1 {
            tally
                .wrong
                .push(format!("{}: resolved {} times", t.id, resolved.len()));
        }
        for r in &resolved {
            if r.detail["decision"].as_str() != t.plan.decision().map(Decision::as_str) {
                tally.wrong.push(format!(
                    "{}: audit resolved {} but the plan was {:?}",
                    t.id, r.detail["decision"], t.plan
                ));
            }
        }
        if let (Plan::Owner(d), Some(Ok(Some(seen)))) = (t.plan, &t.seen)
            && *seen == d
            && !recs.iter().any(|r| {
                r.event == "answered"
                    && r.actor.as_deref() == Some(&OWNER.to_string())
                    && r.detail["decision"].as_str() == Some(d.as_str())
            })
        {
            tally.audit_gaps.push(format!(
                "{}: decided {d} by the owner's press, but no 'answered' record",
                t.id
            ));
        }
    }
    (log.len(), resolved_recorded)
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_killed_50_times_with_approvals_flowing_loses_nothing() {
    const KILLS: usize = 52;
    let started = Instant::now();
    let mut rng = Rng::from_env("bridge_killed_50_times");
    let (gw, tg) = tokio::join!(
        Gateway::start(GatewayConfig::default()),
        FakeTelegram::start(BOT_TOKEN)
    );
    let gw = gw.expect("start the OpenClaw gateway");
    let setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
    let mut bridge = BridgeProcess::start_healthy(exe(), setup).await.unwrap();
    let op = Operator::connect(&gw, "requester").await.unwrap();
    let other = Operator::connect(&gw, "other-operator").await.unwrap();
    let state = bridge.state_dir();

    let mut tracked: Vec<Tracked> = Vec::new();
    let mut ready_ms = Vec::new();
    let mut recover_ms = Vec::new();
    let mut gave_up = Vec::new();
    let mut kill_points: BTreeMap<&str, u32> = BTreeMap::new();
    let mut presses_before_kill = 0u32;

    for round in 0..KILLS {
        for t in tracked.iter_mut() {
            t.poll().await;
        }
        let point = [
            "after-request",
            "after-press",
            "after-resolve",
            "random-delay",
        ][rng.below(4) as usize];
        *kill_points.entry(point).or_default() += 1;

        let new = if point == "after-request" {
            1 + rng.below(2)
        } else {
            rng.below(3)
        };
        let mut requests = Vec::new();
        for j in 0..new {
            let plan = match rng.below(100) {
                0..70 => Plan::Owner(rng.decision()),
                70..85 => Plan::Elsewhere(rng.decision()),
                _ => Plan::Expire,
            };
            let timeout = match plan {
                Plan::Expire => 6_000 + rng.below(10_000),
                _ => LONG_MS,
            };
            requests.push((format!("echo fault-{round}-{j}"), plan, timeout));
        }
        let mut raise = async |tracked: &mut Vec<Tracked>| {
            for (command, plan, timeout) in requests.drain(..) {
                let r = op.request_exec(&command, timeout).await.unwrap();
                tracked.push(Tracked {
                    id: r.id,
                    plan,
                    wait: Some(r.decision),
                    seen: None,
                    presses: 0,
                });
            }
        };
        // Presses on live prompts of approvals still open; sometimes another operator decides.
        let act = |tracked: &mut Vec<Tracked>, rng: &mut Rng| -> Vec<usize> {
            let mut pressed = Vec::new();
            for (i, t) in tracked.iter_mut().enumerate() {
                if t.ended() || !rng.chance(45) {
                    continue;
                }
                if press(&tg, t, None) {
                    pressed.push(i);
                }
            }
            pressed
        };
        if point == "after-request" {
            act(&mut tracked, &mut rng);
            raise(&mut tracked).await;
        } else {
            raise(&mut tracked).await;
            let msgs = tg.bot_messages(OWNER);
            for t in tracked.iter() {
                if let Plan::Elsewhere(d) = t.plan
                    && !t.ended()
                    && !live_prompts(&msgs, &t.id).is_empty()
                    && rng.chance(40)
                {
                    let _ = other.resolve(&t.id, d).await;
                }
            }
            let pressed = act(&mut tracked, &mut rng);
            presses_before_kill += pressed.len() as u32;
            match point {
                "after-resolve" => {
                    // Kill as soon as the requester saw one of the pressed decisions.
                    let deadline = Instant::now() + Duration::from_secs(3);
                    while Instant::now() < deadline
                        && !pressed.is_empty()
                        && !pressed
                            .iter()
                            .any(|i| tracked[*i].wait.as_ref().is_none_or(|w| w.is_finished()))
                    {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                "random-delay" => {
                    tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
                }
                _ => {}
            }
        }
        eprintln!(
            "round {round}: kill {point} at {:?}, {} approvals so far",
            started.elapsed(),
            tracked.len()
        );
        bridge.kill9().await.unwrap();
        bridge.restart().await.unwrap();
        let t0 = Instant::now();
        if let Err(e) = bridge.wait_healthy(GIVE_UP).await {
            dump(&bridge, &gw, &tg);
            panic!("round {round}: bridge not healthy after restart: {e}");
        }
        ready_ms.push(ms(t0.elapsed()));
        if prompts_live_again(&op, &tg, GIVE_UP).await {
            recover_ms.push(ms(t0.elapsed()));
        } else {
            gave_up.push(round);
        }
    }
    let loop_time = started.elapsed();
    // One more approval, so the owner's chat gets a prompt after the last restart: a prompt a
    // kill left unrecorded loses its buttons with the first prompt after the restart.
    let last = op
        .request_exec("echo after-the-last-restart", LONG_MS)
        .await
        .unwrap();
    tracked.push(Tracked {
        id: last.id,
        plan: Plan::Owner(Decision::AllowOnce),
        wait: Some(last.decision),
        seen: None,
        presses: 0,
    });

    // Settle: whatever is pending at the gateway has a live prompt, nothing else has one.
    let deadline = Instant::now() + GIVE_UP;
    let settled = loop {
        for t in tracked.iter_mut() {
            t.poll().await;
        }
        let pending = gateway_pending(&op).await.unwrap();
        let msgs = tg.bot_messages(OWNER);
        let recorded = recorded_prompts(&state);
        let ok = tracked.iter().all(|t| {
            let live = live_recorded(&msgs, &t.id, &recorded).len();
            if pending.contains(t.id.as_str()) {
                live == 1
            } else {
                live == 0 && t.ended()
            }
        });
        if ok || Instant::now() > deadline {
            break ok;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let mut tally = Tally::default();
    let pending = gateway_pending(&op).await.unwrap();
    let msgs = tg.bot_messages(OWNER);
    let recorded = recorded_prompts(&state);
    let (mut decided, mut still_pending, mut finished) = (0, 0, 0);
    let mut orphans = Vec::new();
    for t in &tracked {
        let live = live_recorded(&msgs, &t.id, &recorded).len();
        let sent = recorded
            .iter()
            .filter(|(a, _)| a.as_str() == t.id.as_str())
            .count();
        // Prompts Telegram accepted that the bridge never recorded: a kill between the two.
        for _ in sent..prompts_sent(&tg, &t.id) {
            orphans.push(t.id.to_string());
        }
        if sent > 1 {
            tally
                .duplicates
                .push(format!("{}: {sent} prompts sent", t.id));
        }
        if pending.contains(t.id.as_str()) {
            still_pending += 1;
            match live {
                1 => {}
                0 => tally
                    .lost
                    .push(format!("{}: pending at the gateway, no live prompt", t.id)),
                n => tally
                    .duplicates
                    .push(format!("{}: pending with {n} live prompts", t.id)),
            }
        } else {
            if live > 0 {
                tally.live_after_end.push(format!(
                    "{}: no longer pending, {live} prompts still show buttons",
                    t.id
                ));
            }
            match &t.seen {
                Some(Ok(Some(_))) => decided += 1,
                _ => finished += 1,
            }
        }
    }
    let invariants_at_settle = tally.clean();

    // Then end everything: the owner presses what is left (old buttons must still work after
    // all those kills), the other operator decides its share, the short ones expire.
    for t in tracked.iter_mut() {
        if !pending.contains(t.id.as_str()) {
            continue;
        }
        match t.plan {
            Plan::Owner(_) => {
                if !press(&tg, t, Some(&recorded)) {
                    tally
                        .lost
                        .push(format!("{}: no live prompt to press at the end", t.id));
                }
            }
            Plan::Elsewhere(d) => {
                let _ = other.resolve(&t.id, d).await;
            }
            Plan::Expire => {}
        }
    }
    for t in tracked.iter_mut() {
        t.settle(Duration::from_secs(30)).await;
        match (&t.seen, t.plan) {
            (Some(Ok(Some(d))), Plan::Owner(p) | Plan::Elsewhere(p)) if *d == p => {}
            (Some(Ok(Some(d))), Plan::Owner(_)) if t.presses == 0 => tally.wrong.push(format!(
                "{}: decided {d} though the owner never pressed",
                t.id
            )),
            (Some(Ok(Some(d))), plan) => tally
                .wrong
                .push(format!("{}: decided {d}, plan {plan:?}", t.id)),
            (Some(Ok(None)), Plan::Expire) => {}
            (Some(Ok(None)), plan) => tally
                .lost
                .push(format!("{}: expired though planned {plan:?}", t.id)),
            (other, plan) => tally
                .lost
                .push(format!("{}: requester saw {other:?}, plan {plan:?}", t.id)),
        }
    }
    // Every prompt now shows its outcome, and every orphan has lost its buttons.
    if !no_buttons_left(&tg, Duration::from_secs(30)).await {
        let left: Vec<i64> = tg
            .bot_messages(OWNER)
            .iter()
            .filter(|m| !m.buttons().is_empty())
            .map(|m| m.message_id)
            .collect();
        tally.live_after_end.push(format!(
            "buttons left on messages {left:?} after every approval ended"
        ));
    }
    let (audit_records, resolved_recorded) = check_audit(&state, &tracked, &mut tally);

    let (p50_ready, max_ready) = figures::p50_max(&ready_ms).unwrap_or_default();
    let fig = json!({
        "seed": Rng::seed(),
        "approvals_flowed": tracked.len(),
        "faults_injected": KILLS,
        "kill_points": kill_points,
        "presses_just_before_a_kill": presses_before_kill,
        "owner_presses": tracked.iter().map(|t| t.presses).sum::<u32>(),
        "at_settle": {"decided": decided, "still_pending": still_pending, "finished_otherwise": finished, "invariants_hold": invariants_at_settle && settled},
        "approvals_lost": tally.lost.len(),
        "duplicates": tally.duplicates.len(),
        "orphan_prompts_kill_between_send_and_record": orphans.len(),
        "wrong_decisions": tally.wrong.len(),
        "live_buttons_after_end": tally.live_after_end.len(),
        "audit_gaps": tally.audit_gaps.len(),
        "audit_records": audit_records,
        "resolves_recorded": resolved_recorded,
        "recovery_ms": {
            "restart_to_healthy": p50_max_json(&ready_ms),
            "restart_to_prompts_live": p50_max_json(&recover_ms),
            "gave_up": gave_up.len(),
        },
        "wall_s": started.elapsed().as_secs(),
        "loop_s": loop_time.as_secs(),
    });
    figures::record("faults-bridge-kill", &fig);
    eprintln!("restart to healthy: p50 {p50_ready} ms, max {max_ready} ms");
    if !tally.clean() || !gave_up.is_empty() || !settled {
        dump(&bridge, &gw, &tg);
        eprintln!("{tally:#?}");
        dump_ids(
            &bridge,
            &tg,
            &[
                &tally.lost,
                &tally.duplicates,
                &tally.wrong,
                &tally.live_after_end,
            ],
        );
    }
    assert!(
        gave_up.is_empty(),
        "prompts not live again after restarts in rounds {gave_up:?}"
    );
    assert_eq!(tally.lost, Vec::<String>::new(), "approvals lost");
    assert_eq!(tally.duplicates, Vec::<String>::new(), "duplicate prompts");
    assert_eq!(tally.wrong, Vec::<String>::new(), "wrong decisions");
    assert_eq!(
        tally.live_after_end,
        Vec::<String>::new(),
        "live buttons for approvals no longer pending"
    );
    assert_eq!(tally.audit_gaps, Vec::<String>::new(), "audit gaps");
    assert!(settled, "the state did not settle (see above)");
    assert!(
        decided > 0 && tracked.len() >= KILLS,
        "approvals flowed and were decided"
    );
}

/// The first live prompt for `id`, waiting for it; `None` when it gave up.
async fn wait_live(tg: &FakeTelegram, id: &ApprovalId, limit: Duration) -> Option<Message> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(m) = live_prompts(&tg.bot_messages(OWNER), id).into_iter().next() {
            return Some(m);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until none of `ids` shows buttons; returns those that still do when it gave up.
async fn wait_finished(tg: &FakeTelegram, ids: &[ApprovalId], limit: Duration) -> Vec<ApprovalId> {
    let deadline = Instant::now() + limit;
    loop {
        let msgs = tg.bot_messages(OWNER);
        let live: Vec<ApprovalId> = ids
            .iter()
            .filter(|id| !live_prompts(&msgs, id).is_empty())
            .cloned()
            .collect();
        if live.is_empty() || Instant::now() > deadline {
            return live;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of the bridge's answer to callback query `qid`; `None` when it gave up.
async fn callback_text(tg: &FakeTelegram, qid: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(a) = tg.callback_answers(qid).first() {
            return Some(a["text"].as_str().unwrap_or_default().to_owned());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const UNREACHABLE: &str = "could not be reached; nothing was decided";

#[tokio::test(flavor = "multi_thread")]
async fn gateway_killed_repeatedly_during_delivery_and_resolution() {
    const KILLS: usize = 10;
    // "Unreachable for minutes": two of them.
    const OUTAGE: Duration = Duration::from_secs(120);
    let started = Instant::now();
    let mut rng = Rng::from_env("gateway_killed_repeatedly");
    let (gw, tg) = tokio::join!(
        Gateway::start(GatewayConfig::default()),
        FakeTelegram::start(BOT_TOKEN)
    );
    let mut gw = gw.expect("start the OpenClaw gateway");
    let setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
    let mut bridge = BridgeProcess::start_healthy(exe(), setup).await.unwrap();
    let state = bridge.state_dir();

    let mut tally = Tally::default();
    let mut all: Vec<ApprovalId> = Vec::new();
    let mut decided = 0usize;
    let mut scenarios: BTreeMap<&str, u32> = BTreeMap::new();
    // Gateway ready again -> bridge healthy (reconnected and replayed).
    let mut recovery_ms = Vec::new();
    // Presses the bridge could not pass on (gateway down): (approval, what the owner pressed).
    let mut refused_presses: Vec<(ApprovalId, Decision)> = Vec::new();
    // Presses that raced the kill: (approval, decision, what the bridge answered).
    let mut raced_presses: Vec<(ApprovalId, Decision, String)> = Vec::new();

    for cycle in 0..KILLS {
        let op = Operator::connect(&gw, &format!("requester-{cycle}"))
            .await
            .unwrap();
        // The link works end to end after every restart: one approval decided by a press.
        let d = rng.decision();
        let r = op
            .request_exec(&format!("echo gw-{cycle}-decided"), LONG_MS)
            .await
            .unwrap();
        all.push(r.id.clone());
        let Some(p) = wait_live(&tg, &r.id, GIVE_UP).await else {
            dump(&bridge, &gw, &tg);
            panic!("cycle {cycle}: no prompt for {}", r.id);
        };
        tg.press(OWNER, OWNER, p.message_id, &button_data(&r.id, d));
        let id = r.id.clone();
        match r.outcome(GIVE_UP).await {
            Ok(Some(seen)) if seen == d => decided += 1,
            other => tally
                .wrong
                .push(format!("{id}: pressed {d}, requester saw {other:?}")),
        }

        // Pending when the gateway dies.
        let mut doomed = Vec::new();
        for j in 0..2 {
            let r = op
                .request_exec(&format!("echo gw-{cycle}-{j}"), LONG_MS)
                .await
                .unwrap();
            all.push(r.id.clone());
            if wait_live(&tg, &r.id, GIVE_UP).await.is_none() {
                tally.lost.push(format!("{}: never prompted", r.id));
            }
            doomed.push(r);
        }
        let scenario =
            ["during-delivery", "during-resolution", "answer-while-down"][rng.below(3) as usize];
        *scenarios.entry(scenario).or_default() += 1;
        let mut pressed: Option<(ApprovalId, Decision)> = None;
        let mut qid = None;
        match scenario {
            "during-delivery" => {
                // Requested, and the gateway dies while the bridge is (maybe) prompting.
                for j in 0..1 + rng.below(3) {
                    let r = op
                        .request_exec(&format!("echo gw-{cycle}-late-{j}"), LONG_MS)
                        .await
                        .unwrap();
                    all.push(r.id.clone());
                    doomed.push(r);
                }
                tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
                gw.stop();
            }
            "during-resolution" => {
                let d = rng.decision();
                let m = wait_live(&tg, &doomed[0].id, GIVE_UP).await.unwrap();
                qid = Some(tg.press(OWNER, OWNER, m.message_id, &button_data(&doomed[0].id, d)));
                pressed = Some((doomed[0].id.clone(), d));
                tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
                gw.stop();
            }
            _ => {
                gw.stop();
                let deadline = Instant::now() + GIVE_UP;
                while bridge.healthz().await.map(|h| h.0).unwrap_or(0) == 200
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let d = rng.decision();
                let m = wait_live(&tg, &doomed[0].id, GIVE_UP).await.unwrap();
                let q = tg.press(OWNER, OWNER, m.message_id, &button_data(&doomed[0].id, d));
                match callback_text(&tg, &q, GIVE_UP).await {
                    Some(t) if t.contains(UNREACHABLE) => {
                        refused_presses.push((doomed[0].id.clone(), d))
                    }
                    other => tally.wrong.push(format!(
                        "{}: pressed {d} while the gateway was down, bridge answered {other:?}",
                        doomed[0].id
                    )),
                }
            }
        }
        // What the requesters saw before their gateway died: only the pressed decision, if any.
        for r in doomed {
            let id = r.id.clone();
            let seen = r.outcome(Duration::from_secs(10)).await;
            if let Ok(Some(seen)) = seen {
                match &pressed {
                    Some((p, d)) if *p == id && *d == seen => decided += 1,
                    _ => tally
                        .wrong
                        .push(format!("{id}: decided {seen} though pressed {pressed:?}")),
                }
            }
        }
        if let (Some((id, d)), Some(q)) = (pressed, qid) {
            let text = callback_text(&tg, &q, GIVE_UP).await.unwrap_or_default();
            raced_presses.push((id, d, text));
        }

        gw.restart().await.unwrap();
        let up = Instant::now();
        if let Err(e) = bridge.wait_healthy(GIVE_UP * 2).await {
            dump(&bridge, &gw, &tg);
            panic!("cycle {cycle}: bridge not healthy after the gateway restarted: {e}");
        }
        recovery_ms.push(ms(up.elapsed()));
        eprintln!(
            "cycle {cycle}: {scenario}; gateway ready at {:?}, bridge healthy {:?} later",
            started.elapsed() - up.elapsed(),
            up.elapsed()
        );
        // The restarted gateway forgot everything pending: no prompt may keep live buttons.
        for id in wait_finished(&tg, &all, GIVE_UP).await {
            tally.live_after_end.push(format!(
                "{id}: gateway forgot it (cycle {cycle}), prompt still live"
            ));
        }
    }

    // Unreachable for a while: /healthz says so the whole time, a press is refused with a
    // notice, and after the restart the bridge reconnects by itself.
    let op = Operator::connect(&gw, "requester-outage").await.unwrap();
    let r = op
        .request_exec("echo across the outage", LONG_MS)
        .await
        .unwrap();
    all.push(r.id.clone());
    let m = wait_live(&tg, &r.id, GIVE_UP).await.unwrap();
    gw.stop();
    let down = Instant::now();
    let mut samples = 0;
    let mut healthy_while_down = Vec::new();
    let mut first_503: Option<Value> = None;
    let mut outage_press = None;
    while down.elapsed() < OUTAGE {
        let (code, body) = bridge.healthz().await.unwrap();
        if code == 200 {
            // The link may take a moment to notice; after that it must stay down.
            if first_503.is_some() {
                healthy_while_down.push(format!("{:?}: {body}", down.elapsed()));
            }
        } else {
            samples += 1;
            first_503.get_or_insert(body);
            if outage_press.is_none() {
                let d = rng.decision();
                let q = tg.press(OWNER, OWNER, m.message_id, &button_data(&r.id, d));
                outage_press = Some((q, d));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first_503 = first_503.expect("/healthz reported the gateway down");
    assert!(
        first_503["problems"][0]
            .as_str()
            .is_some_and(|p| p.starts_with("gateway: link down")),
        "{first_503}"
    );
    assert_eq!(
        healthy_while_down,
        Vec::<String>::new(),
        "healthy while the gateway was down"
    );
    let (q, d) = outage_press.unwrap();
    match callback_text(&tg, &q, GIVE_UP).await {
        Some(t) if t.contains(UNREACHABLE) => refused_presses.push((r.id.clone(), d)),
        other => tally.wrong.push(format!(
            "{}: pressed {d} during the outage, bridge answered {other:?}",
            r.id
        )),
    }
    drop(r);
    gw.restart().await.unwrap();
    let up = Instant::now();
    bridge.wait_healthy(GIVE_UP * 2).await.unwrap();
    let outage_recovery = ms(up.elapsed());
    for id in wait_finished(&tg, &all, GIVE_UP).await {
        tally.live_after_end.push(format!(
            "{id}: gateway forgot it (outage), prompt still live"
        ));
    }
    // And it works again.
    let op = Operator::connect(&gw, "requester-after").await.unwrap();
    let r = op
        .request_exec("echo after the outage", LONG_MS)
        .await
        .unwrap();
    all.push(r.id.clone());
    let m = wait_live(&tg, &r.id, GIVE_UP).await.unwrap();
    tg.press(
        OWNER,
        OWNER,
        m.message_id,
        &button_data(&r.id, Decision::Deny),
    );
    let id = r.id.clone();
    match r.outcome(GIVE_UP).await {
        Ok(Some(Decision::Deny)) => decided += 1,
        other => tally
            .wrong
            .push(format!("{id}: pressed deny, saw {other:?}")),
    }

    // No prompt twice; a press the bridge refused never became a decision later.
    for id in &all {
        let sent = prompts_sent(&tg, id);
        if sent > 1 {
            tally.duplicates.push(format!("{id}: {sent} prompts sent"));
        }
    }
    let seqs = audit_seqs(&state);
    if seqs.iter().enumerate().any(|(i, s)| *s != i as i64 + 1) {
        tally
            .audit_gaps
            .push(format!("audit seqs not contiguous: {seqs:?}"));
    }
    let log = audit(&state);
    for id in &all {
        if !log
            .iter()
            .any(|r| r.event == "requested" && r.approval_id.as_deref() == Some(id.as_str()))
        {
            // Requested just before a kill, the bridge may never have heard of it; then it
            // also never prompted it.
            if prompts_sent(&tg, id) > 0 {
                tally
                    .audit_gaps
                    .push(format!("{id}: prompted, no 'requested' record"));
            }
        }
    }
    for (id, d) in &refused_presses {
        let recs: Vec<&AuditRecord> = log
            .iter()
            .filter(|r| r.approval_id.as_deref() == Some(id.as_str()))
            .collect();
        if recs.iter().any(|r| r.event == "resolved") {
            tally
                .wrong
                .push(format!("{id}: refused press {d} was resolved later"));
        }
        if !recs.iter().any(|r| r.event == "resolve_failed") {
            tally
                .audit_gaps
                .push(format!("{id}: refused press, no 'resolve_failed' record"));
        }
        if recs
            .iter()
            .any(|r| r.event == "ended" && r.detail.get("decision").is_some_and(|v| !v.is_null()))
        {
            tally
                .wrong
                .push(format!("{id}: refused press, yet recorded as decided"));
        }
    }
    for (id, d, answer) in &raced_presses {
        for r in log
            .iter()
            .filter(|r| r.event == "resolved" && r.approval_id.as_deref() == Some(id.as_str()))
        {
            if r.detail["decision"].as_str() != Some(d.as_str()) {
                tally
                    .wrong
                    .push(format!("{id}: pressed {d}, resolved {}", r.detail));
            }
        }
        eprintln!("press racing the kill on {id}: bridge answered {answer:?}");
    }

    let fig = json!({
        "seed": Rng::seed(),
        "approvals_flowed": all.len(),
        "decided_by_owner": decided,
        "faults_injected": KILLS + 1,
        "gateway_kills": scenarios,
        "outage_s": OUTAGE.as_secs(),
        "healthz_503_samples_during_outage": samples,
        "presses_refused_while_down": refused_presses.len(),
        "presses_racing_a_kill": raced_presses.len(),
        "approvals_lost": tally.lost.len(),
        "duplicates": tally.duplicates.len(),
        "wrong_decisions": tally.wrong.len(),
        "live_buttons_after_end": tally.live_after_end.len(),
        "audit_gaps": tally.audit_gaps.len(),
        "recovery_ms": {
            "gateway_ready_to_bridge_healthy": p50_max_json(&recovery_ms),
            "after_outage": outage_recovery.round(),
        },
        "wall_s": started.elapsed().as_secs(),
    });
    figures::record("faults-gateway-kill", &fig);
    if !tally.clean() {
        dump(&bridge, &gw, &tg);
        eprintln!("{tally:#?}");
        dump_ids(
            &bridge,
            &tg,
            &[
                &tally.lost,
                &tally.duplicates,
                &tally.wrong,
                &tally.live_after_end,
            ],
        );
    }
    assert_eq!(tally.lost, Vec::<String>::new(), "approvals lost");
    assert_eq!(tally.duplicates, Vec::<String>::new(), "duplicate prompts");
    assert_eq!(tally.wrong, Vec::<String>::new(), "wrong decisions");
    assert_eq!(
        tally.live_after_end,
        Vec::<String>::new(),
        "live buttons for approvals no longer pending"
    );
    assert_eq!(tally.audit_gaps, Vec::<String>::new(), "audit gaps");
    assert!(!refused_presses.is_empty(), "presses while down were tried");
}
