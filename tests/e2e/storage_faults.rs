//! The database on a full disk (issue 6): the bridge's state directory is a small tmpfs
//! that the test fills up while the real bridge runs against the real gateway. An answer
//! the audit log cannot hold must not be acted on: the owner is told why, `/healthz`
//! names the store, the log says so, and the approval stays pending until there is room
//! again — then the same button decides it. Figures go to `faults-storage`.
//!
//! A read-only state directory (remounted read-only while the bridge was stopped) stops the
//! bridge from starting, with an error naming `state.dir`; a press made meanwhile waits at
//! Telegram and is recorded, then decided, once the directory is writable again. (A tmpfs
//! cannot be remounted read-only under a running bridge: its open files make the remount
//! EBUSY; a write failing at run time takes the full-disk path above.)
//!
//! Needs root (CI and the dev machine run as root) to mount the tmpfs: file modes cannot
//! make an already-open SQLite file read-only, and root ignores them anyway.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bridge::approval::Decision;
use bridge::store::Store;
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_telegram::{FakeTelegram, Message};
use testkit::openclaw::{Gateway, GatewayConfig, Operator};

const OWNER: i64 = 111_111_111;
const BOT_TOKEN: &str = "123456:STORAGE-token";
const WAIT: Duration = Duration::from_secs(20);
const ROUNDS: usize = 3;

/// Runs `mount <args> <path>`; panics naming `why` with mount's complaint when it fails.
fn mount(args: &[&str], path: &Path, why: &str) {
    let out = std::process::Command::new("mount")
        .args(args)
        .arg(path)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "{why}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tmpfs mounted on `path` for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let options = format!("size={size},mode=0700");
        mount(
            &["-t", "tmpfs", "-o", &options, "tmpfs"],
            path,
            "this test mounts a small tmpfs to fill it up and needs root (CAP_SYS_ADMIN)",
        );
        Tmpfs(path.to_owned())
    }

    /// Fills the filesystem: writes `filler` until the disk says no.
    fn fill(&self) -> u64 {
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "ENOSPC, got {e}");
                    break;
                }
            }
        }
        let _ = f.sync_all();
        written
    }

    /// Remounts the filesystem read-only (or writable again).
    fn read_only(&self, on: bool) {
        let options = if on { "remount,ro" } else { "remount,rw" };
        mount(&["-o", options], &self.0, "remount");
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

async fn prompt(tg: &FakeTelegram, id: &str) -> Message {
    tg.wait_for(WAIT, &format!("prompt for {id}"), |v| {
        v.bot_messages(OWNER)
            .into_iter()
            .find(|m| m.raw.contains(id) && m.document.is_none())
            .cloned()
    })
    .await
}

fn allow_once(m: &Message) -> String {
    m.buttons()
        .into_iter()
        .find(|(_, d)| d.ends_with("allow-once"))
        .expect("allow-once button")
        .1
}

/// The gateway, the fake Telegram and a healthy bridge whose state dir is a tmpfs of `size`.
struct Rig {
    gw: Gateway,
    tg: FakeTelegram,
    bridge: BridgeProcess,
    disk: Tmpfs,
    op: Operator,
}

impl Rig {
    async fn start(size: &str) -> Rig {
        let (gw, tg) = tokio::join!(
            Gateway::start(GatewayConfig::default()),
            FakeTelegram::start(BOT_TOKEN)
        );
        let gw = gw.expect("start the OpenClaw gateway");
        let mut bridge = BridgeProcess::configure(
            env!("CARGO_BIN_EXE_approval-bridge").as_ref(),
            BridgeSetup::telegram_owner(&gw, &tg, OWNER),
        )
        .unwrap();
        let disk = Tmpfs::mount(&bridge.state_dir(), size);
        bridge.restart().await.unwrap();
        bridge.wait_healthy(Duration::from_secs(60)).await.unwrap();
        let op = Operator::connect(&gw, "requester").await.unwrap();
        Rig {
            gw,
            tg,
            bridge,
            disk,
            op,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_disk_stops_answers_says_why_and_recovers() {
    let Rig {
        gw: _gw,
        tg,
        mut bridge,
        disk,
        op,
    } = Rig::start("2m").await;

    let (mut refused, mut wrong, mut lost) = (0, 0, 0);
    let mut recovery_ms = Vec::new();
    for round in 0..ROUNDS {
        let req = op
            .request_exec(&format!("echo disk-full-{round}"), 120_000)
            .await
            .unwrap();
        let req_id = req.id.clone();
        let m = prompt(&tg, req.id.as_str()).await;
        let filled = disk.fill();
        assert!(filled > 0, "wrote a filler");

        // The owner answers while the disk is full: refused, and told why.
        let q = tg.press(OWNER, OWNER, m.message_id, &allow_once(&m));
        let told = tg.wait_callback_answer(&q, WAIT).await["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(told.contains("cannot write its database"), "{told}");
        refused += 1;
        let (code, body) = bridge.healthz().await.unwrap();
        assert_eq!(code, 503, "{body}");
        assert!(
            body["problems"].as_array().unwrap().iter().any(|p| p
                .as_str()
                .unwrap()
                .starts_with("store: cannot write the database")),
            "{body}"
        );
        assert!(
            !tg.message(OWNER, m.message_id)
                .unwrap()
                .buttons()
                .is_empty(),
            "the prompt stays actionable"
        );

        // Room again: the same button decides, and the answer is on record.
        disk.free();
        let freed = Instant::now();
        tg.press(OWNER, OWNER, m.message_id, &allow_once(&m));
        match req.outcome(WAIT).await.unwrap() {
            Some(Decision::AllowOnce) => {}
            None => lost += 1,
            Some(_) => wrong += 1,
        }
        recovery_ms.push(freed.elapsed().as_secs_f64() * 1000.0);
        // The bridge hears of the outcome too (a loaded gateway can be slow to say so).
        let ended = format!("event=\"ended\" id={}", req_id);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !bridge.log().contains(&ended) {
            assert!(
                Instant::now() < deadline,
                "bridge saw the outcome:\n{}",
                bridge.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bridge.wait_healthy(WAIT).await.unwrap();
    }
    // The gateway's answer to the last resolve can trail its resolved event.
    let deadline = Instant::now() + Duration::from_secs(40);
    while bridge.log().matches("approval resolved").count() < ROUNDS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = bridge.log();
    assert!(
        log.contains("cannot record the answer in the database"),
        "the log says why:\n{log}"
    );
    bridge.terminate(Duration::from_secs(15)).await.unwrap();
    let audit = bridge::store::SqliteStore::open(&bridge.state_dir().join("bridge.sqlite"))
        .unwrap()
        .audit_log(None)
        .unwrap();
    // Every decision made through the bridge follows its recorded answer.
    let mut unrecorded = 0;
    for (at, r) in audit.iter().enumerate().filter(|(_, r)| r.event == "ended") {
        let answered = audit
            .iter()
            .position(|a| a.event == "answered" && a.approval_id == r.approval_id);
        if answered.is_none_or(|a| a >= at) {
            unrecorded += 1;
        }
    }
    let ended = audit.iter().filter(|r| r.event == "ended").count();
    if unrecorded > 0 || ended != ROUNDS {
        eprintln!("---- bridge log ----\n{log}\n---- audit ----");
        for r in &audit {
            eprintln!("{r:?}");
        }
    }
    assert_eq!(ended, ROUNDS, "every decision is on record");
    assert_eq!((lost, wrong, unrecorded), (0, 0, 0));
    let (p50, max) = testkit::figures::p50_max(&recovery_ms).unwrap_or_default();
    testkit::figures::record(
        "faults-storage",
        &serde_json::json!({
            "scenario": "state dir on a full tmpfs while running; owner answers, then space is freed",
            "faults_injected": ROUNDS,
            "answers_refused_while_full": refused,
            "approvals_lost": lost,
            "wrong_decisions": wrong,
            "unrecorded_resolutions": unrecorded,
            "resolve_rpc_unanswered": audit.iter().filter(|r| r.event == "resolve_failed").count(),
            "recovery_ms_p50": p50,
            "recovery_ms_max": max,
        }),
    );
    drop(disk);
}

/// The state directory read-only at start (a filesystem the kernel remounted read-only after
/// errors, a wrong mount option): the bridge must not act on answers it cannot record.
#[tokio::test(flavor = "multi_thread")]
async fn read_only_state_dir_decides_nothing_and_says_why() {
    let Rig {
        gw: _gw,
        tg,
        mut bridge,
        disk,
        op,
    } = Rig::start("8m").await;
    let req = op.request_exec("echo read-only", 120_000).await.unwrap();
    let m = prompt(&tg, req.id.as_str()).await;
    assert!(bridge.terminate(Duration::from_secs(15)).await.unwrap());
    disk.read_only(true);
    bridge.restart().await.unwrap();
    let refused = bridge
        .wait_healthy(Duration::from_secs(30))
        .await
        .expect_err("the bridge must not run on a read-only state dir")
        .to_string();
    assert!(
        refused.contains("exited")
            && refused.contains("state.dir:")
            && refused.contains("is not writable")
            && refused.contains("Read-only file system"),
        "it says why: {refused}"
    );
    // The owner presses meanwhile: nothing can act on it while the bridge is down.
    tg.press(OWNER, OWNER, m.message_id, &allow_once(&m));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = op
        .call("exec.approval.list", serde_json::json!({}))
        .await
        .unwrap();
    assert!(
        pending.to_string().contains(req.id.as_str()),
        "still pending at the gateway: {pending}"
    );
    // Writable again: the bridge starts, picks up the waiting press, records it and decides.
    disk.read_only(false);
    bridge.restart().await.unwrap();
    bridge.wait_healthy(Duration::from_secs(60)).await.unwrap();
    let id = req.id.clone();
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
    assert!(bridge.terminate(Duration::from_secs(15)).await.unwrap());
    let events: Vec<String> =
        bridge::store::SqliteStore::open(&bridge.state_dir().join("bridge.sqlite"))
            .unwrap()
            .audit_log(Some(&id))
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect();
    let answered = events.iter().position(|e| e == "answered");
    let resolved = events.iter().position(|e| e == "resolved");
    assert!(
        answered.is_some() && answered < resolved,
        "answer recorded before it was acted on: {events:?}"
    );
    testkit::figures::record(
        "faults-storage-read-only",
        &serde_json::json!({
            "scenario": "state dir remounted read-only while the bridge was stopped; owner presses; made writable again",
            "start_refused": true,
            "decided_while_read_only": 0,
            "decided_after_recovery": 1,
        }),
    );
    drop(disk);
}
