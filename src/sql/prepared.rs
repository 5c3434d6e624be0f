//! The prepared statements of one PostgreSQL session, so that `EXECUTE name`
//! gets the kind of the statement prepared under that name.
//!
//! SQL's `PREPARE` and the protocol's Parse fill one namespace on the
//! server, and both pass through jitgate first: a read level refuses to
//! prepare anything it would refuse to run, so every name a read session's
//! server holds was prepared from a statement jitgate allowed. A name
//! jitgate did not see prepared (one prepared by a function's dynamic SQL,
//! say) stays unknown, and so does any `EXECUTE` in a text of several
//! statements. A stale entry (after `DEALLOCATE`, or a `PREPARE` the server
//! refused) only makes the server answer that the name does not exist.

use std::collections::HashMap;

use sqlparser::ast::{Ident, Statement, Visit};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::effects::SideEffectFinder;
use super::functions::Catalog;
use super::{Dialect, Reading, StatementKind, classify_text, first_word, operators};

/// Names remembered per session, at most; later ones stay unknown.
const MAX_NAMES: usize = 10_000;

#[derive(Debug, Default)]
pub struct PreparedStatements {
    kinds: HashMap<String, StatementKind>,
}

impl PreparedStatements {
    /// The kind of a simple-query text of this session, as
    /// [`classify_text`] gives it, except that `EXECUTE` of a statement
    /// this session prepared gets that statement's kind (and its arguments'
    /// side effects). A lone `PREPARE` is remembered; `parsed` gives the
    /// kind of a statement the protocol's Parse prepared under a name
    /// (exact, as the protocol gives it), which the relay keeps.
    pub fn classify(
        &mut self,
        reading: &Reading,
        text: &str,
        parsed: impl Fn(&str) -> Option<StatementKind>,
    ) -> StatementKind {
        let kind = classify_text(reading, text);
        if reading.dialect != Dialect::Postgres {
            return kind;
        }
        let (first, _) = first_word(text);
        if first.eq_ignore_ascii_case("prepare") && kind != StatementKind::Unknown {
            if let Some(Statement::Prepare { name, .. }) = lone_statement(reading, text) {
                self.remember(folded(&name), kind);
            }
        } else if first.eq_ignore_ascii_case("execute") && kind == StatementKind::Unknown {
            return self.execute_kind(reading, text, parsed).unwrap_or(kind);
        }
        kind
    }

    fn execute_kind(
        &self,
        reading: &Reading,
        text: &str,
        parsed: impl Fn(&str) -> Option<StatementKind>,
    ) -> Option<StatementKind> {
        let Some(Statement::Execute {
            name: Some(name),
            parameters,
            immediate: false,
            into,
            using,
            ..
        }) = lone_statement(reading, text)
        else {
            return None;
        };
        if !into.is_empty() || !using.is_empty() {
            return None;
        }
        let [part] = name.0.as_slice() else {
            return None;
        };
        let name = folded(part.as_ident()?);
        let prepared = self.kinds.get(&name).copied().or_else(|| parsed(&name))?;
        let mut finder = SideEffectFinder::new(Catalog::Postgres, text);
        for parameter in &parameters {
            let _ = parameter.visit(&mut finder);
        }
        Some(prepared.most_dangerous(finder.found))
    }

    fn remember(&mut self, name: String, kind: StatementKind) {
        if self.kinds.len() < MAX_NAMES || self.kinds.contains_key(&name) {
            self.kinds.insert(name, kind);
        }
    }
}

/// The one statement of `text` as the session's server reads it; `None` if
/// the reading is in doubt, an operator is not the catalog's, or the text
/// holds anything but one statement.
fn lone_statement(reading: &Reading, text: &str) -> Option<Statement> {
    if reading.lexing.reads_differently(text.as_bytes())
        || operators::unknown_operator(text).is_some()
        || !super::classifies_inline(text.len())
    {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, text).ok()?;
    if statements.len() != 1 {
        return None;
    }
    statements.pop()
}

/// A name as the server stores it: unquoted names fold to lower case.
fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Lexing;

    #[test]
    fn execute_gets_the_kind_of_what_this_session_prepared() {
        let reading = Reading::postgres(Lexing::DEFAULT);
        let mut session = PreparedStatements::default();
        let none = |_: &str| None;
        let mut kind = |text: &str| session.classify(&reading, text, none);
        assert_eq!(
            kind("EXECUTE getDomainConstraints('1')"),
            StatementKind::Unknown
        );
        assert_eq!(
            kind(
                "PREPARE getDomainConstraints(pg_catalog.oid) AS SELECT conname FROM pg_constraint WHERE contypid = $1"
            ),
            StatementKind::Read
        );
        assert_eq!(
            kind("EXECUTE getDomainConstraints('1')"),
            StatementKind::Read
        );
        assert_eq!(
            kind("execute GETDOMAINCONSTRAINTS('1');"),
            StatementKind::Read
        );
        assert_eq!(
            kind("EXECUTE \"getDomainConstraints\"('1')"),
            StatementKind::Unknown
        );
        // The arguments count too.
        assert_eq!(
            kind("EXECUTE getDomainConstraints(nextval('s'))"),
            StatementKind::Write
        );
        assert_eq!(
            kind("PREPARE wipe AS DELETE FROM items"),
            StatementKind::Write
        );
        assert_eq!(kind("EXECUTE wipe"), StatementKind::Write);
        // Not alone, or not read the way the server reads it: unknown.
        assert_eq!(kind("EXECUTE wipe; SELECT 1"), StatementKind::Unknown);
        // A statement the protocol's Parse named, as the relay keeps it.
        let parsed = |name: &str| (name == "S_1").then_some(StatementKind::Read);
        assert_eq!(
            session.classify(&reading, "EXECUTE \"S_1\"", parsed),
            StatementKind::Read
        );
        assert_eq!(
            session.classify(&reading, "EXECUTE s_1", parsed),
            StatementKind::Unknown
        );
        let in_doubt = Reading::postgres(Lexing::OPAQUE);
        assert_eq!(
            session.classify(&in_doubt, "EXECUTE \"S_1\"", parsed),
            StatementKind::Unknown
        );
    }
}
