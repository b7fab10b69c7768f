//! Checkpointing decisions as pure code: when to start a checkpoint, when one is complete, expired
//! or subsumed (`coordinator`), and how an operator with several inputs lines up barriers
//! (`alignment`). No clocks, channels or storage here: callers pass the time in milliseconds and
//! act on the decisions returned, so every rule is tested without I/O.

pub mod alignment;
pub mod coordinator;
pub mod s3;
pub mod state;
pub mod storage;
pub mod store;
