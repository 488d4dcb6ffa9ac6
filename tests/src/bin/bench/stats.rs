//! Percentiles and the number formats of the report.

use std::time::Duration;

/// The latency figures the report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The slowest sample.
    pub max: Duration,
}

impl Summary {
    /// Summarises samples; an empty set summarises to zeros.
    pub fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort_unstable();
        Summary {
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample that at least
/// `p` percent of the samples do not exceed.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with one decimal below 100 ms and none above, e.g. `3.4` or `250`.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1_000.0;
    if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A rate rounded to a whole number with thousands separators, e.g. `12,345`.
pub fn rate(per_s: f64) -> String {
    thousands(per_s.round().max(0.0) as u64)
}

/// A count with thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Megabytes (10^6 bytes) from the kibibytes `/proc` reports, e.g. `23.4 MB`.
pub fn megabytes(kib: u64) -> f64 {
    (kib * 1024) as f64 / 1_000_000.0
}

/// A ratio as a whole percentage, e.g. `62%`.
pub fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.0}%", 100.0 * part / whole)
    } else {
        "—".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted = ms_list(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&sorted, 0.0), Duration::from_millis(1));
        let one = ms_list(&[7]);
        assert_eq!(percentile(&one, 99.0), Duration::from_millis(7));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn summary_sorts_first() {
        let s = Summary::of(ms_list(&[30, 10, 20]));
        assert_eq!(s.p50, Duration::from_millis(20));
        assert_eq!(s.p99, Duration::from_millis(30));
        assert_eq!(s.max, Duration::from_millis(30));
    }

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rate(12_345.6), "12,346");
        assert_eq!(ms(Duration::from_micros(3_460)), "3.5");
        assert_eq!(ms(Duration::from_millis(250)), "250");
        assert_eq!(percent(1.0, 4.0), "25%");
        assert_eq!(percent(1.0, 0.0), "—");
        assert!((megabytes(48_828) - 50.0).abs() < 0.01);
    }
}
