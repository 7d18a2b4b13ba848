//! Collects samples per (metric, subject) and prints them as one markdown table.

use serde_json::{Value, json};

use crate::subject::Kind;

#[derive(Default)]
pub struct Report {
    /// Metrics in the order first seen, each with samples for A and B.
    rows: Vec<(String, Vec<f64>, Vec<f64>)>,
}

impl Report {
    pub fn add(&mut self, kind: Kind, metric: &str, samples: Vec<f64>) {
        let i = match self.rows.iter().position(|r| r.0 == metric) {
            Some(i) => i,
            None => {
                self.rows.push((metric.to_owned(), Vec::new(), Vec::new()));
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[i];
        match kind {
            Kind::Bridge => row.1.extend(samples),
            Kind::Builtin => row.2.extend(samples),
        }
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| metric | n | A: bridge p50 | p95 | max | B: built-in p50 | p95 | max | B/A (p50) |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for (metric, a, b) in &self.rows {
            let (sa, sb) = (stats(a), stats(b));
            let ratio = match (sa, sb) {
                (Some(a), Some(b)) if a.0 > 0.0 => format!("{:.1}×", b.0 / a.0),
                _ => "–".into(),
            };
            let cells = |s: Option<(f64, f64, f64)>| match s {
                Some((p50, p95, max)) => format!("{} | {} | {}", num(p50), num(p95), num(max)),
                None => "– | – | –".into(),
            };
            s.push_str(&format!(
                "| {metric} | {} | {} | {} | {ratio} |\n",
                a.len().max(b.len()),
                cells(sa),
                cells(sb)
            ));
        }
        s
    }

    pub fn raw(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|(m, a, b)| json!({"metric": m, "bridge": a, "builtin": b}))
                .collect(),
        )
    }
}

fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// (p50, p95, max) by nearest rank.
fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some((rank(0.50), rank(0.95), v[v.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(stats(&v), Some((10.0, 19.0, 20.0)));
        assert_eq!(stats(&[7.0]), Some((7.0, 7.0, 7.0)));
        assert_eq!(stats(&[]), None);
    }

    #[test]
    fn table_shows_the_ratio() {
        let mut r = Report::default();
        r.add(Kind::Bridge, "x (ms)", vec![10.0]);
        r.add(Kind::Builtin, "x (ms)", vec![1000.0]);
        assert!(
            r.markdown()
                .contains("| x (ms) | 1 | 10.0 | 10.0 | 10.0 | 1000 | 1000 | 1000 | 100.0× |"),
            "{}",
            r.markdown()
        );
    }
}
