//! What a statement does through what it holds: locking clauses,
//! data-modifying CTEs, `SELECT … INTO`, the functions and operators it
//! calls. Walks the parsed statement and keeps the most dangerous kind.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArguments, Query, Select, Statement, TableFactor, Visit, Visitor,
};

use super::functions::{self, Catalog};
use super::{Dialect, StatementKind, classify, is_harmless_set_config};

/// The most dangerous thing found inside the statement: `Write` if
/// something inside it writes, `Unknown` if it calls something jitgate does
/// not know, `Read` (the neutral element of
/// [`StatementKind::most_dangerous`]) otherwise.
pub(super) fn side_effects(catalog: Catalog, sql: &str, statement: &Statement) -> StatementKind {
    let mut finder = SideEffectFinder::new(catalog, sql);
    let _ = statement.visit(&mut finder);
    finder.found
}

/// Walks a statement, keeping the most dangerous thing it finds; stops at
/// the first unknown one (nothing outranks it).
pub(super) struct SideEffectFinder<'a> {
    catalog: Catalog,
    dialect: Dialect,
    /// The whole text, for how a MySQL call is spelled.
    sql: &'a str,
    pub(super) found: StatementKind,
}

impl<'a> SideEffectFinder<'a> {
    pub(super) fn new(catalog: Catalog, sql: &'a str) -> SideEffectFinder<'a> {
        SideEffectFinder {
            catalog,
            dialect: catalog.dialect(),
            sql,
            found: StatementKind::Read,
        }
    }

    fn note(&mut self, kind: StatementKind) -> ControlFlow<()> {
        self.found = self.found.most_dangerous(kind);
        if self.found == StatementKind::Unknown {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Visitor for SideEffectFinder<'_> {
    type Break = ();

    /// `FOR UPDATE` / `FOR SHARE` take row locks, which a read-only
    /// transaction refuses and which block writers.
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if query.locks.is_empty() {
            ControlFlow::Continue(())
        } else {
            self.note(StatementKind::Write)
        }
    }

    /// `SELECT … INTO t` creates and fills a table in PostgreSQL. MySQL's
    /// `SELECT … INTO @var` only sets user variables.
    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        let Some(into) = &select.into else {
            return ControlFlow::Continue(());
        };
        let only_user_variables = self.dialect == Dialect::Mysql
            && into.targets.iter().all(|target| {
                matches!(target, Expr::Identifier(ident)
                    if ident.value.starts_with('@') && !ident.value.starts_with("@@"))
            });
        if only_user_variables {
            ControlFlow::Continue(())
        } else {
            self.note(StatementKind::Write)
        }
    }

    /// Data-modifying statements nested in a query: writable CTEs
    /// (`WITH x AS (DELETE … RETURNING *) SELECT …`) and the like.
    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        match statement {
            Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Merge(_) => self.note(StatementKind::Write),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        // `a OPERATOR(public.+) b`: an operator of another schema than the
        // built-ins' may be anything.
        if let Expr::BinaryOp {
            op: BinaryOperator::PGCustomBinaryOperator(parts),
            ..
        } = expr
        {
            let built_in = match parts.as_slice() {
                [_] => true,
                [schema, _] => schema == "pg_catalog",
                _ => false,
            };
            if !built_in {
                return self.note(StatementKind::Unknown);
            }
        }
        // `(x).f` is PostgreSQL's attribute notation for the call `f(x)`, and
        // so is `t.f` where `t` has no column `f`: a field name may be a
        // function.
        if self.dialect == Dialect::Postgres {
            match expr {
                Expr::CompoundFieldAccess { access_chain, .. } => {
                    for access in access_chain {
                        if let sqlparser::ast::AccessExpr::Dot(Expr::Identifier(field)) = access {
                            let kind = functions::field_kind(field);
                            if self.note(kind).is_break() {
                                return ControlFlow::Break(());
                            }
                        }
                    }
                }
                Expr::CompoundIdentifier(parts) => {
                    for field in parts.iter().skip(1) {
                        if self.note(functions::field_kind(field)).is_break() {
                            return ControlFlow::Break(());
                        }
                    }
                }
                _ => {}
            }
        }
        // MySQL calls that sqlparser reads as syntax of their own: spelled
        // with a space or comment before the `(`, the server calls a stored
        // function of that name instead.
        if self.dialect == Dialect::Mysql {
            let names: &[&str] = match expr {
                Expr::Substring { .. } => &["substring", "substr", "mid"],
                Expr::Trim { .. } => &["trim"],
                Expr::Position { .. } => &["position"],
                Expr::Extract { .. } => &["extract"],
                Expr::Cast { .. } => &["cast"],
                Expr::Convert { .. } => &["convert"],
                Expr::Ceil { .. } => &["ceil", "ceiling"],
                Expr::Floor { .. } => &["floor"],
                Expr::Overlay { .. } => &["overlay"],
                _ => &[],
            };
            if names
                .iter()
                .any(|name| functions::written_with_a_gap(self.sql, name))
            {
                return self.note(StatementKind::Unknown);
            }
        }
        let Expr::Function(function) = expr else {
            return ControlFlow::Continue(());
        };
        if is_harmless_set_config(function) {
            return ControlFlow::Continue(());
        }
        if let Some(text) = functions::sql_text_argument(self.dialect, function) {
            // The server runs the text as a statement of its own: as
            // dangerous as that statement, and never mere housekeeping (a
            // SET inside would change the session behind jitgate's back).
            let kind = match text.map(|text| classify(self.dialect, text)) {
                Some(StatementKind::Read) => StatementKind::Read,
                Some(StatementKind::Session) | None => StatementKind::Unknown,
                Some(kind) => kind,
            };
            return self.note(kind);
        }
        let arguments = match &function.args {
            FunctionArguments::List(list) => Some(list.args.len()),
            FunctionArguments::Subquery(_) => Some(1),
            FunctionArguments::None => None,
        };
        self.note(functions::function_kind(
            self.catalog,
            &function.name,
            arguments,
            self.sql,
        ))
    }

    /// Set-returning calls in FROM: `SELECT * FROM nextval('s')`.
    fn pre_visit_table_factor(&mut self, table_factor: &TableFactor) -> ControlFlow<()> {
        let called = match table_factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => Some(name),
            TableFactor::Function { name, .. } => Some(name),
            _ => None,
        };
        match called {
            Some(name) => self.note(functions::function_kind(self.catalog, name, None, self.sql)),
            None => ControlFlow::Continue(()),
        }
    }
}
