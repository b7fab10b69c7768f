//! Strom's integration tests: one test binary, a module per area.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::type_complexity)]

mod cluster;
mod connectors;
mod exactly_once;
mod flink_sql;
mod jobs;
mod joins;
mod operators;
mod process;
mod runtime;
mod sql;
mod time;
mod windows;
