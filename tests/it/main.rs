//! Strom's integration tests: one test binary, a module per area.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod runtime;
mod windows;
