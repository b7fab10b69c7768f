//! The worker library's one error type.
//!
//! Planning errors ([`Error::Plan`]) name the operator and, where there is one, the field: they are
//! what a user sees when a job is rejected before it runs.

use arrow::error::ArrowError;

/// Result with the worker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while planning or running a job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job is malformed; it was rejected before anything ran.
    #[error("invalid job: operator '{operator}': {message}")]
    Plan { operator: String, message: String },
    /// An input record could not be read and the job's error policy is to fail.
    #[error("malformed record in {source_name} at {position}: {reason}")]
    MalformedRecord {
        source_name: String,
        position: String,
        reason: String,
    },
    /// A user function or operator failed while running.
    #[error("operator '{operator}' (subtask {subtask}) failed: {message}")]
    Operator {
        operator: String,
        subtask: usize,
        message: String,
    },
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] strom_api::ConfigError),
    /// State could not be encoded, decoded or restored (a corrupt or incompatible snapshot).
    #[error("state: {0}")]
    State(String),
    /// The checkpoint store failed (S3 or the file system); the checkpoint is abandoned.
    #[error("checkpoint storage: {0}")]
    Storage(String),
    /// A checkpoint or savepoint cannot be restored into this job.
    #[error("cannot restore: {0}")]
    Restore(String),
    /// The cluster failed to connect its processes: a JobManager or TaskManager unreachable, a
    /// data channel broken, a request refused.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A task of the job stopped because another one failed; the first failure is reported instead.
    #[error("job cancelled")]
    Cancelled,
}

impl Error {
    /// A planning error for `operator`.
    pub fn plan(operator: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Plan {
            operator: operator.into(),
            message: message.into(),
        }
    }

    /// A run-time failure of a user function.
    pub fn user(message: impl Into<String>) -> Self {
        Error::Operator {
            operator: String::new(),
            subtask: 0,
            message: message.into(),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
