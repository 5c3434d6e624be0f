//! The admin HTTP API (to be filled in).
