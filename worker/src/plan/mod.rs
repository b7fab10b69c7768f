//! The plan: a job as data.
//!
//! A [`LogicalGraph`] is what the DataStream API ([`crate::stream`]) builds: operators (nodes) with their
//! output schema and parallelism, and edges that say how records move between them
//! ([`Partitioning`]). [`physical::plan`] turns it, purely, into the [`physical::PhysicalGraph`] the
//! runtime executes. Nothing here runs anything; factories make the operator instances later.

pub mod physical;

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use strom_api::EngineConfig;

use crate::error::Result;
use crate::keys::KeySpec;
use crate::operator::{Operator, Source, SubtaskInfo};
use crate::time::WatermarkStrategy;

/// Index of a node in its graph.
pub type NodeId = usize;

/// Makes one operator instance per subtask.
pub type OperatorFactory = Arc<dyn Fn(&SubtaskInfo) -> Result<Box<dyn Operator>> + Send + Sync>;
/// Makes one source instance per subtask.
pub type SourceFactory = Arc<dyn Fn(&SubtaskInfo) -> Result<Box<dyn Source>> + Send + Sync>;

/// How records move along an edge from the producer's subtasks to the consumer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    /// Subtask `i` to subtask `i`; needs equal parallelism. Such edges are chained.
    Forward,
    /// Whole batches round-robin over the consumer's subtasks.
    Rebalance,
    /// Every batch to every consumer subtask.
    Broadcast,
    /// Each record to the subtask owning its key's key group.
    Hash(KeySpec),
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partitioning::Forward => write!(f, "FORWARD"),
            Partitioning::Rebalance => write!(f, "REBALANCE"),
            Partitioning::Broadcast => write!(f, "BROADCAST"),
            Partitioning::Hash(key) => write!(f, "HASH[{}]", key.names.join(", ")),
        }
    }
}

/// What a node does.
#[derive(Clone)]
pub enum NodeKind {
    /// Reads input; optionally derives watermarks from an event-time column.
    Source {
        factory: SourceFactory,
        watermarks: Option<WatermarkStrategy>,
    },
    /// Transforms its inputs' records.
    Operator {
        factory: OperatorFactory,
        inputs: usize,
    },
}

/// Which column holds a stream's event time, and at what offset (window results carry
/// `window_end - 1` as their timestamp, as in Flink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeAttr {
    pub column: String,
    pub offset: i64,
}

/// One operator of the job.
#[derive(Clone)]
pub struct LogicalNode {
    pub id: NodeId,
    /// Display name, e.g. `window(tumbling 1s)`.
    pub name: String,
    /// Stable identity for state in savepoints; defaults to a name derived from the position.
    pub uid: String,
    pub parallelism: u32,
    pub kind: NodeKind,
    /// Schema of the main output (empty for sinks).
    pub schema: SchemaRef,
    /// Side outputs by tag, ports 1.. in order.
    pub side_outputs: Vec<(String, SchemaRef)>,
    /// Whether forward edges into this node may be chained (fused into the upstream task).
    pub chainable: bool,
}

impl fmt::Debug for LogicalNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogicalNode")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("parallelism", &self.parallelism)
            .finish()
    }
}

/// A directed connection from a node's output port to an input of another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalEdge {
    pub from: NodeId,
    /// 0 is the main output, `k >= 1` side output `k`.
    pub from_port: usize,
    pub to: NodeId,
    /// Which input of the consumer (0, or 1 for the second input of a two-input operator).
    pub to_input: usize,
    pub partitioning: Partitioning,
}

/// A whole job before scheduling.
#[derive(Debug, Clone)]
pub struct LogicalGraph {
    pub name: String,
    pub config: EngineConfig,
    pub nodes: Vec<LogicalNode>,
    pub edges: Vec<LogicalEdge>,
}

impl LogicalGraph {
    /// Edges leaving `node`.
    pub fn outputs(&self, node: NodeId) -> impl Iterator<Item = &LogicalEdge> {
        self.edges.iter().filter(move |e| e.from == node)
    }

    /// Edges entering `node`.
    pub fn inputs(&self, node: NodeId) -> impl Iterator<Item = &LogicalEdge> {
        self.edges.iter().filter(move |e| e.to == node)
    }
}
