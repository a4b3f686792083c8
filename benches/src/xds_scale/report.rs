//! Owns the scale benchmark's numbers and their Markdown report: every
//! measurement is a (variant, phase, key, value) record, written to
//! `metrics.tsv`; the report shows medians over the repetitions of a phase
//! and checks them against the targets of issue §5.

use std::fmt::Write as _;

/// One measured number.
#[derive(Clone, Debug)]
pub struct Rec {
    /// `sotw` or `delta` (or `-` for what does not depend on it).
    pub variant: String,
    /// `initial`, `routes`, `endpoint`, `steady`, `storm`, `cost`...
    pub phase: String,
    /// What was measured, with its unit in the name (`converge_s`).
    pub key: String,
    /// The value.
    pub value: f64,
}

/// Every measurement of a run.
#[derive(Debug, Default)]
pub struct Records {
    rows: Vec<Rec>,
}

impl Records {
    /// Adds one measurement.
    pub fn add(&mut self, variant: &str, phase: &str, key: &str, value: f64) {
        self.rows.push(Rec {
            variant: variant.to_string(),
            phase: phase.to_string(),
            key: key.to_string(),
            value,
        });
    }

    /// Every value of (variant, phase, key), in order.
    pub fn all(&self, variant: &str, phase: &str, key: &str) -> Vec<f64> {
        self.rows
            .iter()
            .filter(|r| r.variant == variant && r.phase == phase && r.key == key)
            .map(|r| r.value)
            .collect()
    }

    /// The median of (variant, phase, key), if measured.
    pub fn median(&self, variant: &str, phase: &str, key: &str) -> Option<f64> {
        median(self.all(variant, phase, key))
    }

    /// The largest value of (variant, phase, key), if measured.
    pub fn max(&self, variant: &str, phase: &str, key: &str) -> Option<f64> {
        self.all(variant, phase, key).into_iter().reduce(f64::max)
    }

    /// `variant \t phase \t key \t value` lines.
    pub fn tsv(&self) -> String {
        let mut s = String::from("variant\tphase\tkey\tvalue\n");
        for r in &self.rows {
            let _ = writeln!(s, "{}\t{}\t{}\t{}", r.variant, r.phase, r.key, r.value);
        }
        s
    }
}

/// The median of `v` (mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A duration in seconds, in the unit that reads best.
pub fn fmt_secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.001 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// How a figure is compared with its target.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Must be below this.
    Below(f64),
    /// Must be at most this.
    AtMost(f64),
    /// Reported only.
    None,
}

impl Target {
    fn check(self, v: f64) -> Option<bool> {
        match self {
            Target::Below(t) => Some(v < t),
            Target::AtMost(t) => Some(v <= t),
            Target::None => None,
        }
    }
}

/// One row of the summary table.
pub struct Row<'a> {
    /// What is measured.
    pub figure: &'a str,
    /// `(phase, key)` to take the median of.
    pub source: (&'a str, &'a str),
    /// How to print a value.
    pub fmt: fn(f64) -> String,
    /// The target, as printed.
    pub target_text: &'a str,
    /// The target, as checked.
    pub target: Target,
}

/// The summary table: one column per variant, then target and verdict.
pub fn table(rec: &Records, variants: &[String], rows: &[Row<'_>]) -> String {
    let mut s = String::from("| figure |");
    for v in variants {
        let _ = write!(s, " {} |", variant_title(v));
    }
    s.push_str(" target | result |\n|---|");
    for _ in variants {
        s.push_str("---:|");
    }
    s.push_str("---|---|\n");
    for row in rows {
        let _ = write!(s, "| {} |", row.figure);
        let mut verdicts = Vec::new();
        for v in variants {
            match rec.median(v, row.source.0, row.source.1) {
                Some(x) => {
                    let _ = write!(s, " {} |", (row.fmt)(x));
                    if let Some(ok) = row.target.check(x) {
                        verdicts.push(format!(
                            "{} {}",
                            variant_title(v),
                            if ok { "pass" } else { "**FAIL**" }
                        ));
                    }
                }
                None => {
                    s.push_str(" - |");
                    if !matches!(row.target, Target::None) {
                        verdicts.push(format!("{} not measured", variant_title(v)));
                    }
                }
            }
        }
        let verdict = if verdicts.is_empty() {
            "-".to_string()
        } else {
            verdicts.join(", ")
        };
        let _ = writeln!(s, " {} | {} |", row.target_text, verdict);
    }
    s
}

/// `SotW` or `delta`.
pub fn variant_title(v: &str) -> &str {
    match v {
        "sotw" => "SotW",
        "-" => "value",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_table() {
        let mut r = Records::default();
        for v in [3.0, 1.0, 2.0] {
            r.add("sotw", "routes", "converge_s", v);
        }
        r.add("delta", "routes", "converge_s", 2.5);
        assert_eq!(r.median("sotw", "routes", "converge_s"), Some(2.0));
        assert_eq!(median(vec![1.0, 2.0, 3.0, 4.0]), Some(2.5));
        let t = table(
            &r,
            &["sotw".into(), "delta".into()],
            &[Row {
                figure: "converge",
                source: ("routes", "converge_s"),
                fmt: fmt_secs,
                target_text: "< 2 s",
                target: Target::Below(2.0),
            }],
        );
        assert!(
            t.contains("| converge | 2.00 s | 2.50 s | < 2 s | SotW **FAIL**, delta **FAIL** |"),
            "{t}"
        );
        assert!(r.tsv().lines().count() == 5);
        assert_eq!(fmt_secs(0.0123), "12.3 ms");
        assert_eq!(fmt_secs(0.000_5), "500 µs");
    }
}
