//! Strom's worker: the parallel dataflow runtime.
//!
//! A job is built with the DataStream API ([`stream`]), planned into a graph of tasks ([`plan`]) and
//! executed by the runtime ([`runtime`]): one thread per subtask, bounded channels between them, Arrow
//! record batches as the unit of data, and watermarks, barriers and end-of-input in band. Operators
//! ([`operators`]) keep keyed state through [`state`] and time through [`timers`]. Connectors
//! ([`connectors`]) read and write the outside world. [`jobs`] holds the jobs built into the binary.
//!
//! This crate never talks to the Kubernetes API; it shares only `strom-api` with the operator.

pub mod checkpoint;
pub mod cluster;
pub mod connectors;
pub mod error;
pub mod jobs;
pub mod keys;
pub mod operator;
pub mod operators;
pub mod plan;
pub mod row;
pub mod runtime;
pub mod sql;
pub mod state;
pub mod stream;
pub mod time;
pub mod timers;

pub use error::{Error, Result};
pub use strom_api::{EngineConfig, ErrorPolicy};
