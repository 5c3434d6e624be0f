//! Statement classification (interface first; implementation follows).

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    /// Reads only (SELECT, SHOW, EXPLAIN without ANALYZE of a write...).
    Read,
    /// Session housekeeping that cannot change data (SET of ordinary settings, BEGIN, COMMIT...).
    Session,
    /// Changes data (INSERT/UPDATE/DELETE/MERGE, COPY FROM, SELECT ... FOR UPDATE, writable CTEs,
    /// settings that lift read-only mode...).
    Write,
    /// Changes schema or privileges.
    Ddl,
    /// Could not be parsed or is not understood.
    Unknown,
}

impl StatementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Session => "session",
            StatementKind::Write => "write",
            StatementKind::Ddl => "ddl",
            StatementKind::Unknown => "unknown",
        }
    }

    /// May a statement of this kind run on a read-only level?
    pub fn allowed_read_only(self) -> bool {
        matches!(self, StatementKind::Read | StatementKind::Session)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

/// Classify a query string, which may hold several statements: the result is
/// the most dangerous kind among them.
pub fn classify(_dialect: Dialect, _sql: &str) -> StatementKind {
    todo!()
}
