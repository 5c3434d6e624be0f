//! The one integration-test kit, shared by every test crate (`mod support;`)
//! and by the benches that need real servers.
//!
//! Each test crate compiles the kit on its own and uses only part of it, so
//! what one crate leaves unused is not dead code of the kit: hence the
//! `allow(dead_code)` below.

#![allow(dead_code)]

pub mod oracle;
pub mod tmpfs;
