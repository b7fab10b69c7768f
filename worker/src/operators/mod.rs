//! The streaming operators, one concern per module. Each implements [`crate::operator::Operator`] and
//! is created per subtask by a factory the DataStream API ([`crate::stream`]) registers.

pub mod aggregate;
pub mod basic;
pub mod group_aggregate;
pub mod join;
pub mod over_aggregate;
pub mod process;
pub mod regular_join;
pub mod rolling;
pub mod temporal_join;
pub mod top_n;
pub mod watermarks;
pub mod window;
