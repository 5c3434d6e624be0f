//! The benches' tables: p50/p99/max of a set of durations, in
//! milliseconds, and the machine they were measured on.

use std::time::Duration;

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One table row: p50/p99/max of `lags` (nearest rank), and how many of `expected`.
pub fn lag_row(label: &str, lags: &mut [Duration], expected: usize) -> String {
    lags.sort();
    if lags.is_empty() {
        return format!(
            "   {label:<44} {:>9} {:>9} {:>9} {:>7}\n",
            "-",
            "-",
            "-",
            format!("0/{expected}")
        );
    }
    let rank = |p: f64| lags[((p * lags.len() as f64).ceil() as usize).clamp(1, lags.len()) - 1];
    format!(
        "   {label:<44} {:>9.1} {:>9.1} {:>9.1} {:>7}\n",
        ms(rank(0.50)),
        ms(rank(0.99)),
        ms(*lags.last().unwrap_or(&Duration::ZERO)),
        format!("{}/{expected}", lags.len())
    )
}

/// "2 cores (AMD EPYC)": what a bench's first line says of the machine.
pub fn cores_and_cpu() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu})")
}
