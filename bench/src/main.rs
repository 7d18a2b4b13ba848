//! approval-bench: one run, two subjects, the same workload. Subject A is approval-bridge
//! (release build) serving a real OpenClaw gateway; subject B is that gateway's own
//! built-in Telegram exec approvals. Both talk to the same kind of fake Bot API, which
//! timestamps every call. Prints a markdown table (p50/p95/max, ratio B/A) and writes the
//! raw numbers as JSON. Timings are reported here, never asserted in tests.

mod subject;
mod table;
mod workload;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use crate::table::Report;

#[derive(Parser)]
#[command(
    about = "Side-by-side benchmark: approval-bridge vs OpenClaw's built-in Telegram approvals"
)]
struct Args {
    /// The approval-bridge binary (release build).
    #[arg(long, default_value = "target/release/approval-bridge")]
    bridge: PathBuf,
    /// Where to write the raw numbers.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// Sequential approvals per subject.
    #[arg(long, default_value_t = 20)]
    sequential: usize,
    /// Approvals in the burst.
    #[arg(long, default_value_t = 50)]
    burst: usize,
    /// Approvals kept pending at once for the memory-at-scale measurement (bridge only).
    #[arg(long, default_value_t = 10_000)]
    pending: usize,
    /// Skip subject B (OpenClaw's built-in Telegram client).
    #[arg(long)]
    only_bridge: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let bridge = std::fs::canonicalize(&args.bridge).with_context(|| {
        format!(
            "{} not found: build it with `cargo build --release`",
            args.bridge.display()
        )
    })?;
    let mut report = Report::default();
    let subjects: &[subject::Kind] = if args.only_bridge {
        &[subject::Kind::Bridge]
    } else {
        &[subject::Kind::Bridge, subject::Kind::Builtin]
    };
    for kind in subjects {
        eprintln!("== subject {}", kind.label());
        let s = subject::Subject::start(*kind, &bridge).await?;
        report.add(*kind, "start-up to ready (ms)", vec![s.startup_ms]);
        report.add(*kind, "RSS idle (MB)", vec![s.rss_mb()]);
        workload::sequential(&s, args.sequential, &mut report).await?;
        workload::overhead(&s, &mut report).await?;
        workload::burst(&s, args.burst, &mut report).await?;
        report.add(*kind, "RSS after burst (MB)", vec![s.rss_mb()]);
        drop(s);
    }
    eprintln!("== scale (bridge only)");
    workload::scale(&bridge, args.pending, &mut report).await?;
    let table = report.markdown();
    println!("{table}");
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report.raw())?)?;
    eprintln!("raw numbers written to {}", args.out.display());
    Ok(())
}
