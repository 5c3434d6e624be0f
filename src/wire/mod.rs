//! Wire protocol fronts.
pub mod pg;
