//! End-to-end tests against the test bed (tests/testbed): a real Kubernetes control plane with the
//! process kubelet, an S3 server and a Kafka broker. Starts the test bed when none is running.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::type_complexity)]
mod checkpoints;
mod crd;
mod jm_ha;
mod kafka;
mod kafka_connector;
mod kubelet;
mod operator;
mod operator_faults;
mod s3;
mod sql_jobs;
