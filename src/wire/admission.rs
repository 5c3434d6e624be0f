//! Statement admission, one home for both relays: whether a level may run a
//! statement of a kind, what a refusal says, and what a client is told when
//! the audit log cannot take a record. Each relay renders these words in its
//! own protocol's error message (PostgreSQL: message and hint; MySQL: one
//! message).

use crate::sql::StatementKind;

/// May a session of a level run a statement of `kind`? A read-only level
/// runs only reads and session housekeeping.
pub fn may_run(read_only: bool, kind: StatementKind) -> bool {
    !read_only || kind.allowed_read_only()
}

/// Why a read-only level refused a statement, and what to do instead.
pub struct Refusal {
    pub message: String,
    pub hint: &'static str,
}

impl Refusal {
    /// The refusal of a statement of `kind` on `level` of `target`.
    pub fn read_only(kind: StatementKind, target: &str, level: &str) -> Refusal {
        let what = match kind {
            StatementKind::Unknown => {
                "jitgate could not classify this statement, so it is not allowed"
            }
            _ => "this statement can change data or schema, which is not allowed",
        };
        Refusal {
            message: format!("{what} on your read-only grant for {target} (level {level})"),
            hint: "request a level that allows writes with `jitgate request`",
        }
    }

    /// Message and hint in one sentence, for protocols without a hint.
    pub fn one_line(&self) -> String {
        format!("{}; {}", self.message, self.hint)
    }
}

/// A statement whose audit record could not be written: not forwarded.
pub const AUDIT_DOWN_STATEMENT: &str =
    "jitgate cannot write its audit log, so it did not forward this statement";
pub const AUDIT_DOWN_STATEMENT_HINT: &str = "tell the jitgate operators; nothing was run";

/// A login whose records could not be written: no session.
pub const AUDIT_DOWN_LOGIN: &str =
    "jitgate cannot write its audit log, so it forwards nothing; tell the jitgate operators";

/// A session ended because its records could not be written.
pub const AUDIT_DOWN_SESSION: &str = "jitgate cannot write its audit log, so it did not forward your last statements (none of them ran) and forwards nothing more; tell the jitgate operators";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_level_runs_reads_and_housekeeping_only() {
        use StatementKind::*;
        for kind in [Read, Session] {
            assert!(may_run(true, kind));
        }
        for kind in [Write, Ddl, Unknown] {
            assert!(!may_run(true, kind));
            assert!(may_run(false, kind));
        }
        let refusal = Refusal::read_only(Unknown, "demo-pg", "read");
        assert!(refusal.message.contains("could not classify"));
        assert!(refusal.one_line().ends_with("with `jitgate request`"));
    }
}
