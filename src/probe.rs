//! `approval-bridge probe`: asks the running daemon, through its loopback `[http]`
//! listener, to follow a harmless approval through every hop, and prints each hop with
//! its time. Exits non-zero naming the first broken hop.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use bridge::engine::ProbeReport;

use crate::config::Config;

/// Longer than the engine's own wait for a tap, so the daemon's report always comes first.
const WAIT: Duration = Duration::from_secs(200);

pub async fn probe(config: &Path, tap: bool) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let Some(http) = &cfg.http else {
        bail!(
            "http: `probe` asks the running bridge through its [http] listener; add [http] listen = \"127.0.0.1:9464\" and restart it"
        );
    };
    let url = format!("http://{}/probe?tap={tap}", http.listen);
    if tap {
        println!(
            "probe    raised; answer its prompt in any chat to finish (allow or deny, nothing runs)"
        );
    }
    let response = reqwest::Client::new()
        .post(&url)
        .timeout(WAIT)
        .send()
        .await
        .with_context(|| format!("cannot reach the bridge at {url}: is `approval-bridge run` running with this config?"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("the bridge answered {status}: {body}");
    }
    let report: ProbeReport = response
        .json()
        .await
        .context("the bridge's probe report could not be read")?;
    println!("{}", report.text());
    match &report.broken {
        None => Ok(()),
        Some(hop) => bail!("probe failed at: {hop}"),
    }
}
