//! From the logical graph to the physical one: which operators share a task (chaining) and which
//! channels connect the tasks. [`plan`] is a pure function; `explain` prints its result.
//!
//! A node is chained into its producer when the edge between them is the producer's only output and
//! the consumer's only input, is `Forward`, both run at the same parallelism, and the consumer allows
//! chaining. A `Forward` edge between different parallelisms becomes `Rebalance`, as in Flink.

use std::fmt::Write as _;

use strom_api::validate_parallelism;

use super::{LogicalGraph, NodeId, NodeKind, Partitioning};
use crate::error::{Error, Result};

/// Index of a task (a chain of nodes) in the physical graph.
pub type TaskId = usize;

/// A chain of nodes run by one thread per subtask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskVertex {
    pub id: TaskId,
    /// The chained nodes, head first.
    pub nodes: Vec<NodeId>,
    pub parallelism: u32,
}

/// A connection between two tasks; each pair of producer and consumer subtasks gets its own channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalEdge {
    pub from_task: TaskId,
    /// Position of the producing node inside the producer's chain.
    pub from_position: usize,
    pub from_port: usize,
    pub to_task: TaskId,
    /// Input of the consumer chain's head node.
    pub to_input: usize,
    pub partitioning: Partitioning,
}

/// What the runtime executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalGraph {
    pub tasks: Vec<TaskVertex>,
    pub edges: Vec<PhysicalEdge>,
}

/// Plans `graph`: validates it, chains operators and lays out the edges between tasks.
pub fn plan(graph: &LogicalGraph) -> Result<PhysicalGraph> {
    graph.config.validate()?;
    for node in &graph.nodes {
        validate_parallelism(node.parallelism, graph.config.max_parallelism)
            .map_err(|e| Error::plan(&node.name, e.to_string()))?;
        let expected = match &node.kind {
            NodeKind::Source { .. } => 0,
            NodeKind::Operator { inputs, .. } => *inputs,
        };
        for input in 0..expected {
            if !graph.inputs(node.id).any(|e| e.to_input == input) {
                return Err(Error::plan(
                    &node.name,
                    format!("input {input} is not connected"),
                ));
            }
        }
    }
    // Unique uids: they identify state in savepoints.
    for (i, a) in graph.nodes.iter().enumerate() {
        if graph.nodes[..i].iter().any(|b| b.uid == a.uid) {
            return Err(Error::plan(
                &a.name,
                format!("uid '{}' is used by another operator", a.uid),
            ));
        }
    }

    let chained_into_producer = |node: NodeId| -> Option<NodeId> {
        let n = &graph.nodes[node];
        let mut inputs = graph.inputs(node);
        let edge = inputs.next()?;
        if inputs.next().is_some() || !n.chainable || !matches!(n.kind, NodeKind::Operator { .. }) {
            return None;
        }
        let producer = &graph.nodes[edge.from];
        let ok = edge.partitioning == Partitioning::Forward
            && edge.from_port == 0
            && producer.parallelism == n.parallelism
            && graph.outputs(edge.from).count() == 1;
        ok.then_some(edge.from)
    };

    let mut task_of = vec![usize::MAX; graph.nodes.len()];
    let mut position_of = vec![0usize; graph.nodes.len()];
    let mut tasks: Vec<TaskVertex> = Vec::new();
    for node in &graph.nodes {
        if chained_into_producer(node.id).is_some() {
            continue;
        }
        // Head of a chain: follow the single forward outputs.
        let id = tasks.len();
        let mut chain = vec![node.id];
        let mut current = node.id;
        while let Some(next) = graph
            .outputs(current)
            .map(|e| e.to)
            .find(|&to| chained_into_producer(to) == Some(current))
        {
            chain.push(next);
            current = next;
        }
        for (pos, &n) in chain.iter().enumerate() {
            task_of[n] = id;
            position_of[n] = pos;
        }
        tasks.push(TaskVertex {
            id,
            nodes: chain,
            parallelism: node.parallelism,
        });
    }

    let mut edges = Vec::new();
    for edge in &graph.edges {
        if task_of[edge.from] == task_of[edge.to] {
            continue;
        }
        let from = &graph.nodes[edge.from];
        let to = &graph.nodes[edge.to];
        let partitioning = match &edge.partitioning {
            Partitioning::Forward if from.parallelism != to.parallelism => Partitioning::Rebalance,
            other => other.clone(),
        };
        edges.push(PhysicalEdge {
            from_task: task_of[edge.from],
            from_position: position_of[edge.from],
            from_port: edge.from_port,
            to_task: task_of[edge.to],
            to_input: edge.to_input,
            partitioning,
        });
    }
    Ok(PhysicalGraph { tasks, edges })
}

/// A readable rendering of the physical plan, one task per line followed by its input edges.
pub fn explain(graph: &LogicalGraph, physical: &PhysicalGraph) -> String {
    let mut out = String::new();
    for task in &physical.tasks {
        let names: Vec<&str> = task
            .nodes
            .iter()
            .map(|&n| graph.nodes[n].name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "task {} [p={}]: {}",
            task.id,
            task.parallelism,
            names.join(" -> ")
        );
        for edge in physical.edges.iter().filter(|e| e.to_task == task.id) {
            let port = if edge.from_port == 0 {
                String::new()
            } else {
                format!(" side {}", edge.from_port)
            };
            let _ = writeln!(
                out,
                "  input {} <- task {}{} {}",
                edge.to_input, edge.from_task, port, edge.partitioning
            );
        }
    }
    out
}
