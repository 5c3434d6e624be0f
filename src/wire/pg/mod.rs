//! PostgreSQL front.
