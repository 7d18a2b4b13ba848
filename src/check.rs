//! `approval-bridge check`: validates the config, reads the secrets, connects to the
//! gateway (auth, scopes, pairing) and checks every channel, printing each problem with
//! its fix. Any problem makes the exit code non-zero.

use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::run;

/// How long `check` waits for a gateway that is still starting.
const GATEWAY_WAIT: Duration = Duration::from_secs(20);

pub async fn check(path: &Path) -> anyhow::Result<()> {
    let mut problems: Vec<String> = Vec::new();
    let cfg = Config::load(path)?;
    println!("config   ok: {}", path.display());
    match cfg.alerts.after {
        Some(after) => println!(
            "alerts   after {}: a gateway link or channel broken that long is told on every working chat",
            bridge::time::span(after.as_millis() as i64)
        ),
        None => println!("alerts   off: a broken path shows only in the log and /healthz"),
    }
    match cfg.alerts.probe_every {
        Some(every) => println!(
            "alerts   probe every {}: a delivery-only probe, the first once the gateway link is ready",
            bridge::time::span(every.as_millis() as i64)
        ),
        None => println!("alerts   probe_every off: run `approval-bridge probe` after upgrades"),
    }
    // Validated at load: a bad list never gets here.
    let windows = cfg.trust.windows()?;
    if windows.is_empty() {
        println!("trust    time-boxed allows off");
    } else {
        let labels: Vec<String> = windows.iter().map(|w| w.label()).collect();
        println!(
            "trust    time-boxed allows offered on exec prompts: {} (grants: /grants, /revoke)",
            labels.join(", ")
        );
    }

    let dir = match run::state_dir(&cfg) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    match dir.as_deref().map(|d| run::gateway_options(&cfg, d)) {
        None => {}
        Some(Err(e)) => problems.push(format!("{e:#}")),
        Some(Ok(opts)) => match bridge::gateway::probe(&opts, GATEWAY_WAIT).await {
            Err(e) => problems.push(format!(
                "state.dir: cannot load or create the device key: {e}"
            )),
            Ok(r) => {
                println!("gateway  {} (device {})", r.url, r.device_id);
                if r.pairing_required {
                    let id = r.pairing_request_id.as_deref().unwrap_or("<requestId>");
                    problems.push(format!(
                        "gateway: this device is not paired yet. On the gateway host run: openclaw devices approve {id}"
                    ));
                } else if !r.auth_ok {
                    problems.push(format!(
                        "gateway: cannot connect: {} (check gateway.url and that gateway.token is the gateway's auth token)",
                        r.error.as_deref().unwrap_or("unknown error")
                    ));
                } else {
                    println!(
                        "gateway  ok: protocol {}, scopes {:?}",
                        r.protocol.unwrap_or_default(),
                        r.granted
                    );
                    if let Some(n) = r.pending {
                        println!("gateway  {n} approval(s) pending now");
                    }
                    if !r.missing.is_empty() {
                        problems.push(format!(
                            "gateway: BLIND: scopes {:?} not granted. Without operator.admin the bridge cannot see or resolve \
                             approvals raised by agent runs, and the gateway denies them at once. Grant them to device {} \
                             (openclaw devices list / rotate) and run check again",
                            r.missing, r.device_id
                        ));
                    }
                }
            }
        },
    }

    match run::build_channels(&cfg) {
        Err(e) => problems.push(format!("{e:#}")),
        Ok(channels) => {
            match run::reminder_policy(&cfg, &channels) {
                Ok(r) => {
                    let points: Vec<&str> = cfg.alerts.remind.iter().map(String::as_str).collect();
                    let quiet = cfg.alerts.quiet.as_deref().unwrap_or("none");
                    println!(
                        "alerts   reminders at [{}], quiet hours {quiet} ({})",
                        points.join(", "),
                        r.quiet
                            .as_ref()
                            .map_or("-", |q| q.zone.iana_name().unwrap_or("system zone"))
                    );
                    if !r.escalate_to.is_empty() {
                        let to: Vec<String> = r.escalate_to.iter().map(|t| t.to_string()).collect();
                        println!(
                            "alerts   escalation to {} at {}",
                            to.join(", "),
                            cfg.alerts.escalate_at
                        );
                    }
                }
                Err(e) => problems.push(format!("{e:#}")),
            }
            for c in channels {
                match c.health().await {
                    Ok(desc) => println!(
                        "{:<8} ok: {desc}, {} target(s)",
                        c.name(),
                        c.targets().len()
                    ),
                    Err(e) => problems.push(format!(
                        "{}: health check failed: {e} (check its bot token and api_url)",
                        c.name()
                    )),
                }
            }
        }
    }

    if problems.is_empty() {
        println!("all checks passed");
        return Ok(());
    }
    for p in &problems {
        println!("PROBLEM  {p}");
    }
    anyhow::bail!("{} problem(s) found", problems.len())
}
