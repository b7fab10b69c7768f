//! The `FlinkJob` CRD (`crds/flinkjob.yaml`, generated from `api/src/crd.rs`) on the test bed's real
//! API server: valid resources are accepted with their defaults; a table of invalid ones is
//! rejected by the schema or the CEL rules with a readable message (a job is a built-in one by
//! `name` or a Flink SQL script, `sql`: exactly one); `kubectl scale` goes through
//! the scale subresource to the job's parallelism, and the CEL rules hold there too.

use std::path::Path;
use strom_tests::testbed::{TestBed, output_with_stdin, run_ok};

fn apply(bed: &TestBed, namespace: &str, manifest: &str) -> (bool, String) {
    let out = output_with_stdin(
        bed.kubectl()
            .args(["apply", "--server-side", "-n", namespace, "-f", "-"]),
        manifest,
    );
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn job(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: strom.dev/v1alpha1\nkind: FlinkJob\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

#[tokio::test]
async fn the_flinkjob_crd_accepts_good_jobs_and_rejects_bad_ones_with_reasons() {
    let bed = TestBed::get();
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/flinkjob.yaml");
    run_ok(
        bed.kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(&crd),
    );
    run_ok(bed.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/flinkjobs.strom.dev",
    ]));
    let ns = bed.namespace("crd").await;

    let good = job(
        "good",
        "  image: strom/worker:dev\n  job: {name: q5, parallelism: 2}\n  checkpointing: {storage: s3://ckpt/q5}\n",
    );
    let (ok, out) = apply(bed, &ns, &good);
    assert!(ok, "{out}");
    let got = run_ok(
        bed.kubectl()
            .args(["get", "fj", "good", "-n", &ns, "-o", "json"]),
    );
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["spec"]["job"]["maxParallelism"], 128, "{got}");
    assert_eq!(got["spec"]["job"]["upgradeMode"], "savepoint");
    assert_eq!(got["spec"]["taskManager"]["slots"], 1);

    // A Flink SQL job instead of a built-in one: `sql` without `name`.
    let sql = job(
        "sql",
        "  image: strom/worker:dev\n  job:\n    parallelism: 2\n    upgradeMode: stateless\n    sql: |\n      CREATE TABLE t (x BIGINT) WITH ('connector' = 'datagen');\n      INSERT INTO t SELECT x FROM t;\n",
    );
    let (ok, out) = apply(bed, &ns, &sql);
    assert!(ok, "{out}");
    let got = run_ok(bed.kubectl().args([
        "get",
        "fj",
        "sql",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.job.sql}",
    ]));
    assert!(got.starts_with("CREATE TABLE t"), "{got}");

    // The scale subresource is the parallelism; the rules hold through it.
    run_ok(
        bed.kubectl()
            .args(["scale", "fj/good", "-n", &ns, "--replicas", "3"]),
    );
    let p = run_ok(bed.kubectl().args([
        "get",
        "fj",
        "good",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.job.parallelism}",
    ]));
    assert_eq!(p.trim(), "3");
    let out = bed
        .kubectl()
        .args(["scale", "fj/good", "-n", &ns, "--replicas", "200"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "scaled past maxParallelism");
    assert!(err.contains("must not exceed job.maxParallelism"), "{err}");
    // maxParallelism cannot change.
    let changed = good.replace("parallelism: 2}", "parallelism: 3, maxParallelism: 256}");
    let (ok, out) = apply(bed, &ns, &changed);
    assert!(!ok);
    assert!(out.contains("job.maxParallelism is immutable"), "{out}");

    let bad = [
        (
            "too-parallel",
            "  image: i\n  job: {name: q5, parallelism: 9, maxParallelism: 8}\n",
            "must not exceed job.maxParallelism",
        ),
        (
            "no-storage",
            "  image: i\n  job: {name: q5, parallelism: 1, upgradeMode: last-state}\n",
            "need spec.checkpointing",
        ),
        (
            "zero",
            "  image: i\n  job: {name: q5, parallelism: 0, upgradeMode: stateless}\n",
            "spec.job.parallelism",
        ),
        (
            "unknown-mode",
            "  image: i\n  job: {name: q5, parallelism: 1, upgradeMode: sometimes}\n",
            "Unsupported value: \"sometimes\"",
        ),
        ("no-job", "  image: i\n", "spec.job: Required value"),
        (
            "bad-storage",
            "  image: i\n  job: {name: q5, parallelism: 1}\n  checkpointing: {storage: /tmp/x}\n",
            "spec.checkpointing.storage",
        ),
        (
            "savepoints-nowhere",
            "  image: i\n  job: {name: q5, parallelism: 1, upgradeMode: stateless}\n  savepoints: {intervalSeconds: 60}\n",
            "spec.savepoints needs spec.checkpointing",
        ),
        (
            "name-and-sql",
            "  image: i\n  job: {name: q5, sql: 'SELECT 1;', parallelism: 1, upgradeMode: stateless}\n",
            "exactly one of job.name (a built-in job) and job.sql (a Flink SQL script) must be set",
        ),
        (
            "neither",
            "  image: i\n  job: {parallelism: 1, upgradeMode: stateless}\n",
            "exactly one of job.name (a built-in job) and job.sql (a Flink SQL script) must be set",
        ),
        (
            "empty-sql",
            "  image: i\n  job: {sql: '', parallelism: 1, upgradeMode: stateless}\n",
            "spec.job.sql",
        ),
        (
            "slots",
            "  image: i\n  job: {name: q5, parallelism: 1, upgradeMode: stateless}\n  taskManager: {slots: 0}\n",
            "spec.taskManager.slots",
        ),
    ];
    for (name, spec, reason) in bad {
        let (ok, out) = apply(bed, &ns, &job(name, spec));
        assert!(!ok, "{name} was accepted");
        assert!(
            out.contains(reason),
            "{name}: expected '{reason}' in: {out}"
        );
    }
}
