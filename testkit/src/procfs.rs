//! Resident memory and CPU time of processes, read from /proc, for the benchmark's
//! side-by-side numbers (Linux only).

use std::time::Duration;

/// RSS and CPU time (user + system) of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub rss_bytes: u64,
    pub cpu: Duration,
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            rss_bytes: self.rss_bytes + o.rss_bytes,
            cpu: self.cpu + o.cpu,
        }
    }
}

fn ticks_per_second() -> u64 {
    // CLK_TCK is 100 on every Linux this runs on; `getconf` confirms it when present.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// `(pgrp, usage)` of `pid`, or `None` if it is gone.
fn read(pid: u32, tck: u64) -> Option<(u32, Usage)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may itself contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let pgrp: u32 = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpu = Duration::from_millis((utime + stime) * 1000 / tck);
    Some((
        pgrp,
        Usage {
            rss_bytes: rss_kb * 1024,
            cpu,
        },
    ))
}

/// Usage of one process.
pub fn process(pid: u32) -> Option<Usage> {
    read(pid, ticks_per_second()).map(|(_, u)| u)
}

/// Summed usage of every process in process group `pgid` (a gateway and its helpers).
pub fn group(pgid: u32) -> Usage {
    let tck = ticks_per_second();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Usage::default();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read(pid, tck))
        .filter(|(pgrp, _)| *pgrp == pgid)
        .fold(Usage::default(), |acc, (_, u)| acc + u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = process(std::process::id()).expect("own /proc entry");
        assert!(me.rss_bytes > 1 << 20, "{me:?}");
    }
}
