//! FlinkJobs whose `spec.job.sql` is a Flink SQL script, end to end on the test bed: the operator
//! installed by Helm, the JobManager planning the script and two TaskManagers running it into
//! `filesystem` CSV part files on a hostPath volume. The output is compared row for row with a
//! brute-force computation; a script that does not parse ends FAILED with its line and column in
//! the FlinkJob's status.

use std::path::Path;

use kube::api::Api;
use serde_json::{Value, json};
use strom_api::crd::FlinkJob;
use strom_tests::testbed::TestBed;

use crate::operator::{apply, condition, install, until};
use crate::s3::SERVER;

/// Rows generated: `x` = 1, 2, …, ROWS (the sequence would go on; `number-of-rows` ends it).
const ROWS: i64 = 3000;

/// The script: every `x` with `x mod 7 = 3`, its square and its parity, as CSV into `dir`. Its
/// `SET 'parallelism.default'` says 1; the FlinkJob's parallelism (2) wins, so there are two part
/// files.
fn script(dir: &Path) -> String {
    format!(
        "-- generated numbers, filtered and projected into CSV files
CREATE TABLE numbers (
  x BIGINT
) WITH (
  'connector' = 'datagen',
  'number-of-rows' = '{ROWS}',
  'fields.x.kind' = 'sequence',
  'fields.x.start' = '1',
  'fields.x.end' = '1000000'
);
CREATE TABLE picked (
  x BIGINT,
  square BIGINT,
  parity STRING
) WITH (
  'connector' = 'filesystem',
  'path' = '{}',
  'format' = 'csv'
);
SET 'parallelism.default' = '1';
INSERT INTO picked
SELECT x, x * x, CASE WHEN MOD(x, 2) = 0 THEN 'even' ELSE 'odd' END
FROM numbers
WHERE MOD(x, 7) = 3;
",
        dir.display()
    )
}

/// What the script writes, computed directly.
fn expected() -> Vec<String> {
    let mut rows: Vec<String> = (1..=ROWS)
        .filter(|x| x % 7 == 3)
        .map(|x| format!("{x},{},{}", x * x, if x % 2 == 0 { "even" } else { "odd" }))
        .collect();
    rows.sort();
    rows
}

fn sql_job(name: &str, sql: &str, parallelism: i64, task_manager: Value) -> Value {
    json!({
        "apiVersion": "strom.dev/v1alpha1",
        "kind": "FlinkJob",
        "metadata": {"name": name},
        "spec": {
            "image": "strom.test/strom:dev",
            "job": {
                "sql": sql,
                "parallelism": parallelism,
                "upgradeMode": "stateless",
                "args": {"restart": {"strategy": "none"}},
            },
            "taskManager": task_manager,
            "progressDeadlineSeconds": 150,
        }
    })
}

#[tokio::test]
async fn a_sql_flinkjob_runs_its_script_and_one_that_does_not_parse_fails_with_line_and_column() {
    // install() creates the namespace's bucket.
    let _s3 = SERVER.read().await;
    let bed = TestBed::get();
    let ns = install(bed, "opsql").await;
    let api: Api<FlinkJob> = Api::namespaced(bed.kube().await, &ns);

    // The TaskManagers write the part files into a hostPath volume mounted at the same path, so
    // that the test reads them where the pods wrote them.
    let out = bed.run_dir().join("sql-output").join(&ns);
    std::fs::create_dir_all(&out).unwrap();
    let dir = out.to_str().unwrap();
    let volume = json!({
        "podTemplate": {"spec": {
            "volumes": [{"name": "output", "hostPath": {"path": dir}}],
            "containers": [{"name": "taskmanager",
                            "volumeMounts": [{"name": "output", "mountPath": dir}]}],
        }}
    });
    apply(&api, &sql_job("numbers", &script(&out), 2, volume)).await;
    // Line 2, column 1: `SELEC` where a statement starts.
    let broken = "CREATE TABLE t (x BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '5');\n\
                  SELEC x FROM t;\n";
    apply(&api, &sql_job("broken", broken, 1, json!({}))).await;

    let fj = until(&api, "numbers", "the SQL job to finish", |f| {
        f["status"]["lifecycleState"] == "Finished"
    })
    .await;
    assert_eq!(fj["status"]["jobState"], "FINISHED", "{}", fj["status"]);
    let mut parts: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    parts.sort();
    assert_eq!(
        parts,
        ["part-0.csv", "part-1.csv"],
        "one part file per subtask at the FlinkJob's parallelism, not the script's SET"
    );
    let mut rows: Vec<String> = parts
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(out.join(p))
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort();
    assert_eq!(rows, expected());

    let fj = until(&api, "broken", "the broken script to fail", |f| {
        f["status"]["jobState"] == "FAILED"
    })
    .await;
    assert_eq!(fj["status"]["lifecycleState"], "Failed", "{}", fj["status"]);
    let stalled = condition(&fj, "Stalled").unwrap();
    assert_eq!(stalled["status"], "True", "{stalled}");
    assert_eq!(stalled["reason"], "JobFailed", "{stalled}");
    let message = stalled["message"].as_str().unwrap();
    assert!(
        message.contains("SQL error at line 2, column 1") && message.contains("SELEC"),
        "{message}"
    );
    assert_eq!(fj["status"]["error"], message);
}
