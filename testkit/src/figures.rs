//! Figures from the reliability suites (faults, attacks): each suite records one JSON object
//! per run under `$RELIABILITY_OUT` (default `$CARGO_TARGET_DIR/reliability`), and prints it,
//! so `docs/RELIABILITY.md` can quote the last run's numbers.

use std::path::PathBuf;

use serde_json::Value;

/// Where the figures go: `$RELIABILITY_OUT`, else `$CARGO_TARGET_DIR/reliability`, else
/// `target/reliability`.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RELIABILITY_OUT") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("reliability")
}

/// Writes `figures` as `<dir>/<suite>.json` and prints them to stderr. A failure to write is
/// reported, not fatal: the suite's own assertions decide whether it passed.
pub fn record(suite: &str, figures: &Value) {
    let text = serde_json::to_string_pretty(figures).unwrap_or_default();
    eprintln!("figures {suite}: {text}");
    let dir = dir();
    let path = dir.join(format!("{suite}.json"));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, text)) {
        eprintln!("figures {suite}: cannot write {}: {e}", path.display());
    }
}

/// p50 and max of durations in milliseconds (nearest rank); `None` when empty.
pub fn p50_max(ms: &[f64]) -> Option<(f64, f64)> {
    if ms.is_empty() {
        return None;
    }
    let mut v = ms.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    Some((v[(v.len() - 1) / 2], v[v.len() - 1]))
}
