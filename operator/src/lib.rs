//! The Strom operator. So far: the `crdgen` binary that writes the `FlinkJob` CRD from the types in
//! `strom-api` into `crds/` (CI fails when the committed file drifts from the code). The reconciler
//! comes next (issue 6).
