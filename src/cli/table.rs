//! Aligned plain-text tables, like `kubectl get`, and short relative times.

use std::fmt;
use std::time::{Duration, SystemTime};

pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let headers = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i == last {
                    writeln!(f, "{cell}")?;
                } else {
                    // Pad by characters, not bytes, so names with accents line up.
                    let pad = w - cell.chars().count() + 3;
                    write!(f, "{cell}{:pad$}", "")?;
                }
            }
        }
        Ok(())
    }
}

/// A duration the way a person reads it at a glance: `45s`, `5m30s`, `29m`, `2h15m`, `3d4h`.
pub fn short(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match s {
        0..60 => format!("{secs}s"),
        60..600 if secs > 0 => format!("{mins}m{secs}s"),
        60..3600 => format!("{mins}m"),
        3600..86_400 if mins > 0 => format!("{hours}h{mins}m"),
        3600..86_400 => format!("{hours}h"),
        _ if hours > 0 => format!("{days}d{hours}h"),
        _ => format!("{days}d"),
    }
}

/// `in 29m` for a time ahead, `3m ago` for one past.
pub fn relative(at: SystemTime, now: SystemTime) -> String {
    match at.duration_since(now) {
        Ok(ahead) => format!("in {}", short(ahead)),
        Err(e) => format!("{} ago", short(e.duration())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_the_last_one_is_not_padded() {
        let mut t = Table::new(&["ID", "STATE", "REASON"]);
        t.row(vec!["r_1".into(), "pending".into(), "INC-42".into()]);
        t.row(vec!["r_12345".into(), "ok".into(), "x".into()]);
        assert_eq!(
            t.to_string(),
            "ID        STATE     REASON\n\
             r_1       pending   INC-42\n\
             r_12345   ok        x\n"
        );
    }

    #[test]
    fn short_durations_read_at_a_glance() {
        let cases = [
            (45, "45s"),
            (330, "5m30s"),
            (600, "10m"),
            (1799, "29m"),
            (3600, "1h"),
            (8100, "2h15m"),
            (86_400 * 3 + 3600 * 4, "3d4h"),
        ];
        for (secs, text) in cases {
            assert_eq!(short(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn relative_times_say_which_way() {
        let now = SystemTime::now();
        assert_eq!(relative(now + Duration::from_secs(90), now), "in 1m30s");
        assert_eq!(relative(now - Duration::from_secs(120), now), "2m ago");
    }
}
