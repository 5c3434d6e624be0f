//! What the two classifier oracles (`classifier_oracle_pg.rs`,
//! `classifier_oracle_mysql.rs`) share: reading a corpus, a small seeded
//! generator of texts built to disagree between readings, and the tally of
//! what the server changed against what jitgate said.

use jitgate::sql::StatementKind;

/// The statements of a corpus file: one a line; blank lines and lines
/// starting with `-- ` are left out.
pub fn statements(corpus: &str) -> Vec<String> {
    corpus
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("-- "))
        .map(str::to_owned)
        .collect()
}

/// How many generated texts, and the seed: `JITGATE_ORACLE_CASES` and
/// `JITGATE_ORACLE_SEED`, or the defaults.
pub fn cases_and_seed(default_cases: usize, default_seed: u64) -> (usize, u64) {
    let env = |name: &str| std::env::var(name).ok();
    (
        env("JITGATE_ORACLE_CASES")
            .and_then(|n| n.parse().ok())
            .unwrap_or(default_cases),
        env("JITGATE_ORACLE_SEED")
            .and_then(|n| n.parse().ok())
            .unwrap_or(default_seed),
    )
}

/// Small deterministic generator (xorshift), so a failing seed can be rerun.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick(&mut self, list: &[&'static str]) -> &'static str {
        list[self.below(list.len())]
    }
}

/// The parts of a text built to disagree: an opening that one reading takes
/// for the start or end of a literal or comment, a separator, a hidden
/// statement, and a closing that hides the rest from the other reading.
pub struct Parts {
    pub openings: &'static [&'static str],
    pub middles: &'static [&'static str],
    pub hidden: &'static [&'static str],
    pub closings: &'static [&'static str],
}

impl Parts {
    pub fn compose(&self, rng: &mut Rng) -> String {
        let opening = rng.pick(self.openings);
        let middle = rng.pick(self.middles);
        let hidden = rng.pick(self.hidden);
        let closing = rng.pick(self.closings);
        format!("{opening}{middle}{hidden}{closing}")
    }
}

/// Cases run, cases in which the server changed something, and those of
/// them that jitgate would have let through a read level.
#[derive(Default)]
pub struct Outcome {
    cases: usize,
    changed: usize,
    misses: Vec<String>,
}

impl Outcome {
    pub fn record(&mut self, reading: &str, sql: &str, changed: bool, verdict: StatementKind) {
        self.cases += 1;
        if !changed {
            return;
        }
        self.changed += 1;
        if matches!(verdict, StatementKind::Read | StatementKind::Session) {
            self.misses.push(format!(
                "[{reading}] jitgate says {} but the server changed something: {sql:?}",
                verdict.as_str()
            ));
        }
    }

    /// Print the tally and fail on any miss; `min_changed` guards against
    /// an oracle that sees no writes at all.
    pub fn report(&self, what: &str, min_changed: usize) {
        eprintln!(
            "{what}: {} cases, {} changed something on the server, {} classified as read/session",
            self.cases,
            self.changed,
            self.misses.len()
        );
        assert!(
            self.misses.is_empty(),
            "{what}: the classifier let writes through:\n{}",
            self.misses.join("\n")
        );
        assert!(
            self.changed >= min_changed,
            "{what}: only {} cases changed anything; the oracle sees no writes",
            self.changed
        );
    }
}
