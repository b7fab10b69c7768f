//! The Strom operator: `FlinkJob` resources to JobManager and TaskManager pods, driven through the
//! JobManager's REST API.
//!
//! - [`resources`]: the objects of a run (ConfigMap, JobManager Deployment and Service, TaskManager
//!   Deployment), pure builders from the spec.
//! - [`decide`]: the reconciler's decisions, pure functions of the observed state.
//! - [`rest`]: the JobManager REST client.
//! - [`controller`]: kube-runtime's Controller, the finalizer, status writes, Events.
//! - [`metrics`]: Prometheus metrics.
//!
//! The operator never links the runtime: it shares only the `api` crate with the worker.

pub mod controller;
pub mod decide;
pub mod metrics;
pub mod resources;
pub mod rest;
