//! The workloads, run identically against each subject.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bridge::approval::Decision;
use futures_util::future::join_all;
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_telegram::{FakeTelegram, Message};
use testkit::openclaw::{Gateway, GatewayConfig, Operator, PendingRequest};
use testkit::procfs;

use crate::subject::{Kind, OWNER, Subject};
use crate::table::Report;

const LONG: Duration = Duration::from_secs(300);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// One approval at a time: request -> prompt sent, tap -> decision at the requester.
pub async fn sequential(s: &Subject, n: usize, report: &mut Report) -> Result<()> {
    let (mut to_prompt, mut to_decision) = (Vec::new(), Vec::new());
    let run = nonce();
    for i in 0..n {
        let marker = format!("bench-seq-{run}-{i}-end");
        let t0 = Instant::now();
        let req =
            s.op.request_exec(&format!("echo {marker}"), LONG.as_millis() as u64)
                .await?;
        let prompt =
            s.tg.wait_for(Duration::from_secs(60), &marker, |v| {
                Subject::actionable(v, &marker)
            })
            .await;
        let at = s
            .actionable_at(prompt.message_id, &marker)
            .context("prompt send not recorded")?;
        to_prompt.push(ms(at.duration_since(t0)));
        let data = Subject::allow_once(&prompt, &req.id).context("no Allow once button")?;
        let t1 = Instant::now();
        s.tg.press(OWNER, OWNER, prompt.message_id, &data);
        let decision = req.outcome(Duration::from_secs(60)).await?;
        to_decision.push(ms(t1.elapsed()));
        if decision != Some(Decision::AllowOnce) {
            bail!(
                "{}: sequential #{i} ended with {decision:?}",
                s.kind.label()
            );
        }
        // Let the subject finish its edits so the next prompt starts from a free chat.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    report.add(s.kind, "sequential: request -> prompt sent (ms)", to_prompt);
    report.add(
        s.kind,
        "sequential: tap -> decision at requester (ms)",
        to_decision,
    );
    Ok(())
}

/// `n` approvals at once for one owner, then `n` taps at once.
pub async fn burst(s: &Subject, n: usize, report: &mut Report) -> Result<()> {
    let run = nonce();
    let markers: Vec<String> = (0..n)
        .map(|i| format!("bench-burst-{run}-{i}-end"))
        .collect();
    let t0 = Instant::now();
    let reqs: Vec<PendingRequest> = join_all(markers.iter().map(|m| async move {
        s.op.request_exec(&format!("echo {m}"), LONG.as_millis() as u64)
            .await
    }))
    .await
    .into_iter()
    .collect::<Result<_>>()?;
    // Not `wait_for`: a subject that never shows some prompts is a result, not a crash.
    let deadline = Instant::now() + Duration::from_secs(180);
    let prompts = loop {
        let msgs = s.tg.bot_messages(OWNER);
        let found: Vec<(usize, Message)> = markers
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                msgs.iter()
                    .find(|x| x.raw.contains(m.as_str()) && !x.buttons().is_empty())
                    .map(|x| (i, x.clone()))
            })
            .collect();
        if found.len() == n || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut actionable = Vec::new();
    for (i, p) in &prompts {
        let at = s
            .actionable_at(p.message_id, &markers[*i])
            .context("burst prompt send not recorded")?;
        actionable.push(ms(at.duration_since(t0)));
    }
    let t1 = Instant::now();
    for (i, p) in &prompts {
        let data = Subject::allow_once(p, &reqs[*i].id).context("no Allow once button")?;
        s.tg.press(OWNER, OWNER, p.message_id, &data);
    }
    let shown: std::collections::HashSet<usize> = prompts.iter().map(|(i, _)| *i).collect();
    let tapped = reqs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| shown.contains(i))
        .map(|(_, r)| async move {
            let d = r.outcome(Duration::from_secs(120)).await.ok().flatten();
            (d, ms(t1.elapsed()))
        });
    let decided: Vec<(Option<Decision>, f64)> = join_all(tapped).await;
    let lost = n - decided
        .iter()
        .filter(|(d, _)| *d == Some(Decision::AllowOnce))
        .count();
    report.add(
        s.kind,
        &format!("burst {n}: prompts never shown within 180 s"),
        vec![(n - prompts.len()) as f64],
    );
    let rate_limited = s.tg.calls().iter().filter(|c| c.status == 429).count();
    report.add(
        s.kind,
        &format!("burst {n}: prompt actionable after request (ms)"),
        actionable.clone(),
    );
    report.add(
        s.kind,
        &format!("burst {n}: all actionable (ms)"),
        vec![actionable.iter().copied().fold(0.0, f64::max)],
    );
    report.add(
        s.kind,
        &format!("burst {n}: decision after tap (ms)"),
        decided.iter().map(|d| d.1).collect(),
    );
    report.add(
        s.kind,
        &format!("burst {n}: all decided (ms)"),
        vec![decided.iter().map(|d| d.1).fold(0.0, f64::max)],
    );
    report.add(
        s.kind,
        &format!("burst {n}: approvals lost"),
        vec![lost as f64],
    );
    report.add(
        s.kind,
        "429s answered by the fake (whole run)",
        vec![rate_limited as f64],
    );
    Ok(())
}

/// The bridge alone under load: 1,000 approvals spread over 10 owners, then `pending`
/// approvals pending at once; resident memory and CPU time of the bridge process.
pub async fn scale(bridge_exe: &Path, pending: usize, report: &mut Report) -> Result<()> {
    const OWNERS: i64 = 10;
    let tg = FakeTelegram::start("777:SCALE-token").await;
    let gw = Gateway::start(GatewayConfig::default()).await?;
    let mut setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
    setup.allow_from = (0..OWNERS).map(|i| OWNER + i).collect();
    let b = BridgeProcess::start_healthy(bridge_exe, setup).await?;
    let pid = b.pid().context("bridge pid")?;
    let op = Operator::connect(&gw, "bench-scale").await?;
    let before = procfs::process(pid).unwrap_or_default();
    let mut held = Vec::new();
    let mut requested = 0usize;
    let phase = |target: usize| target.min(pending);
    for (label, target) in [
        ("1,000 approvals, 10 owners", phase(1000)),
        ("pending at once", phase(pending)),
    ] {
        let t0 = Instant::now();
        while requested < target {
            let batch = (target - requested).min(100);
            let op = &op;
            let reqs = join_all((0..batch).map(|i| async move {
                op.request_exec(&format!("echo scale-{}", requested + i), 3_600_000)
                    .await
            }))
            .await;
            for r in reqs {
                held.push(r?);
            }
            requested += batch;
        }
        wait_requested(&b, target).await?;
        let usage = procfs::process(pid).unwrap_or_default();
        report.add(
            Kind::Bridge,
            &format!("scale: RSS with {target} ({label}) (MB)"),
            vec![usage.rss_bytes as f64 / 1048576.0],
        );
        report.add(
            Kind::Bridge,
            &format!("scale: bridge CPU for {target} requested (ms)"),
            vec![ms(usage.cpu.saturating_sub(before.cpu))],
        );
        report.add(
            Kind::Bridge,
            &format!("scale: time to see {target} (ms)"),
            vec![ms(t0.elapsed())],
        );
    }
    drop(held);
    Ok(())
}

/// Waits until the bridge has seen `n` approvals (its own metrics).
async fn wait_requested(b: &BridgeProcess, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let text = b.metrics().await.unwrap_or_default();
        let seen: f64 = text
            .lines()
            .filter(|l| l.starts_with("approval_bridge_approvals_requested_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if seen as usize >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the bridge saw only {seen} of {n} approvals");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The bridge's own time on its hot paths, from its `overhead_seconds` histogram: p50 and
/// p95 as the upper bound of the bucket holding them (buckets double from 1 µs).
pub async fn overhead(s: &Subject, report: &mut Report) -> Result<()> {
    let Some(b) = &s.bridge else {
        return Ok(());
    };
    let text = b.metrics().await.context("bridge metrics")?;
    for path in ["prompt", "resolve"] {
        let mut buckets: Vec<(f64, f64)> = text
            .lines()
            .filter(|l| {
                l.starts_with("approval_bridge_overhead_seconds_bucket")
                    && l.contains(&format!("path=\"{path}\""))
            })
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
        if total == 0.0 {
            bail!("the bridge recorded no {path} overhead");
        }
        for (q, name) in [(0.5, "p50"), (0.95, "p95")] {
            let bound = buckets
                .iter()
                .find(|(_, n)| *n >= q * total)
                .map(|(le, _)| le * 1e6)
                .unwrap_or(f64::INFINITY);
            report.add(
                s.kind,
                &format!("bridge overhead, {path}: {name} at most (µs, {total} samples)"),
                vec![bound],
            );
        }
    }
    Ok(())
}
