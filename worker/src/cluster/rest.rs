//! The JobManager's REST API (JSON; described by `docs/openapi.yaml`, which the contract tests
//! hold it to) and its Prometheus endpoint. The operator drives jobs through it.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/v1/overview` | the cluster: leader session, TaskManagers, slots, jobs by state |
//! | GET | `/v1/taskmanagers` | registered TaskManagers |
//! | GET, POST | `/v1/jobs` | list jobs; submit a job spec |
//! | GET | `/v1/jobs/{id}` | state, vertices (parallelism, records, backpressure, watermarks), channels |
//! | GET | `/v1/jobs/{id}/checkpoints` | counts and history with sizes and durations |
//! | GET | `/v1/jobs/{id}/config` | the job's spec |
//! | POST | `/v1/jobs/{id}/savepoints` | trigger a savepoint (`{"stop": true}` stops the job after it) |
//! | GET | `/v1/jobs/{id}/savepoints/{request}` | where a savepoint is |
//! | POST | `/v1/jobs/{id}/stop` | stop with a savepoint |
//! | POST | `/v1/jobs/{id}/cancel` | cancel |
//! | POST | `/v1/savepoints/disposal` | delete a savepoint (`{"location": "<storage>#<dir>"}`) |
//! | GET | `/metrics` | Prometheus text format |
//!
//! A stop with a savepoint is idempotent: while the job's stop is in progress (or completed, the
//! job still finishing), another stop request answers with the same request id, and a savepoint
//! without stop is refused (409); see [`JobMaster::savepoint`].

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use strom_api::JobSpec;

use super::jobmanager::{JobManager, JobMaster, JobState};
use super::open_store;
use crate::checkpoint::storage::{SnapshotKind, dispose_snapshot, snapshot_kind};

type Shared = Arc<JobManager>;

/// An error answer: `{"error": "..."}` with a status code.
struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn not_found(id: &str) -> Problem {
    Problem(StatusCode::NOT_FOUND, format!("no job '{id}'"))
}

fn job(jm: &JobManager, id: &str) -> Result<Arc<JobMaster>, Problem> {
    jm.job(id).ok_or_else(|| not_found(id))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Overview {
    session: String,
    version: &'static str,
    taskmanagers: usize,
    slots_total: u32,
    slots_available: u32,
    jobs_running: usize,
    jobs_finished: usize,
    jobs_cancelled: usize,
    jobs_failed: usize,
}

async fn overview(State(jm): State<Shared>) -> Json<Overview> {
    let (taskmanagers, slots_total, slots_available) = jm.resources();
    let states: Vec<JobState> = jm.jobs().iter().map(|j| j.state()).collect();
    let count = |f: &dyn Fn(JobState) -> bool| states.iter().filter(|s| f(**s)).count();
    Json(Overview {
        session: jm.session.clone(),
        version: env!("CARGO_PKG_VERSION"),
        taskmanagers,
        slots_total,
        slots_available,
        jobs_running: count(&|s| !s.is_terminal()),
        jobs_finished: count(&|s| s == JobState::Finished),
        jobs_cancelled: count(&|s| s == JobState::Canceled),
        jobs_failed: count(&|s| s == JobState::Failed),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskManagerInfo {
    id: String,
    address: String,
    slots: u32,
    last_heartbeat_ms_ago: u64,
}

async fn taskmanagers(State(jm): State<Shared>) -> Json<serde_json::Value> {
    let list: Vec<TaskManagerInfo> = jm
        .taskmanagers()
        .into_iter()
        .map(|(id, address, slots, ago)| TaskManagerInfo {
            id,
            address,
            slots,
            last_heartbeat_ms_ago: ago,
        })
        .collect();
    Json(serde_json::json!({ "taskmanagers": list }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobSummary {
    id: String,
    name: String,
    state: JobState,
}

async fn list_jobs(State(jm): State<Shared>) -> Json<serde_json::Value> {
    let jobs: Vec<JobSummary> = jm
        .jobs()
        .iter()
        .map(|j| JobSummary {
            id: j.id.clone(),
            name: j.spec.label().to_owned(),
            state: j.state(),
        })
        .collect();
    Json(serde_json::json!({ "jobs": jobs }))
}

#[derive(Deserialize)]
struct SubmitQuery {
    id: Option<String>,
}

async fn submit(
    State(jm): State<Shared>,
    Query(q): Query<SubmitQuery>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), Problem> {
    let spec: JobSpec = serde_json::from_slice(&body)
        .map_err(|e| Problem(StatusCode::BAD_REQUEST, format!("not a job spec: {e}")))?;
    let jm2 = jm.clone();
    let id = tokio::task::spawn_blocking(move || jm2.submit(q.id, spec))
        .await
        .map_err(|e| Problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| Problem(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

async fn job_detail(
    State(jm): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<super::jobmanager::JobStatus>, Problem> {
    let job = job(&jm, &id)?;
    Ok(Json(jm.job_status(&job)))
}

async fn checkpoints(
    State(jm): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<super::jobmanager::CheckpointsStatus>, Problem> {
    Ok(Json(job(&jm, &id)?.checkpoints()))
}

async fn config(
    State(jm): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<JobSpec>, Problem> {
    Ok(Json(job(&jm, &id)?.spec.clone()))
}

#[derive(Deserialize, Default)]
struct SavepointRequest {
    #[serde(default)]
    stop: bool,
}

fn start_savepoint(
    job: &Arc<JobMaster>,
    stop: bool,
) -> Result<(StatusCode, Json<serde_json::Value>), Problem> {
    let id = job
        .savepoint(stop)
        .map_err(|e| Problem(StatusCode::CONFLICT, e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "requestId": id.to_string() })),
    ))
}

async fn trigger_savepoint(
    State(jm): State<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), Problem> {
    let request: SavepointRequest = if body.is_empty() {
        SavepointRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Problem(
                StatusCode::BAD_REQUEST,
                format!("not a savepoint request: {e}"),
            )
        })?
    };
    start_savepoint(&job(&jm, &id)?, request.stop)
}

async fn stop(
    State(jm): State<Shared>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), Problem> {
    start_savepoint(&job(&jm, &id)?, true)
}

async fn savepoint_status(
    State(jm): State<Shared>,
    Path((id, request)): Path<(String, String)>,
) -> Result<Json<super::jobmanager::SavepointStatus>, Problem> {
    let job = job(&jm, &id)?;
    request
        .parse::<u64>()
        .ok()
        .and_then(|r| job.savepoint_status(r))
        .map(Json)
        .ok_or_else(|| {
            Problem(
                StatusCode::NOT_FOUND,
                format!("no savepoint request '{request}' for job '{id}'"),
            )
        })
}

async fn cancel(
    State(jm): State<Shared>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), Problem> {
    job(&jm, &id)?
        .cancel()
        .map_err(|e| Problem(StatusCode::CONFLICT, e.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisposalRequest {
    location: String,
}

/// Deletes a savepoint given as `<storage URL>#<dir>`: only a dir whose `_metadata` says
/// savepoint, never a checkpoint or an arbitrary prefix.
async fn dispose_savepoint(body: axum::body::Bytes) -> Result<Json<serde_json::Value>, Problem> {
    let request: DisposalRequest = serde_json::from_slice(&body).map_err(|e| {
        Problem(
            StatusCode::BAD_REQUEST,
            format!("not a disposal request: {e}"),
        )
    })?;
    let location = request.location;
    let (storage, dir) = location
        .split_once('#')
        .map(|(s, d)| (s.to_owned(), d.trim_matches('/').to_owned()))
        .filter(|(s, d)| !s.is_empty() && !d.is_empty())
        .ok_or_else(|| {
            Problem(
                StatusCode::BAD_REQUEST,
                format!("location '{location}' is not '<storage URL>#<savepoint dir>'"),
            )
        })?;
    let answer = location.clone();
    let disposed = tokio::task::spawn_blocking(move || {
        let store =
            open_store(&storage).map_err(|e| Problem(StatusCode::BAD_REQUEST, e.to_string()))?;
        let internal =
            |e: crate::error::Error| Problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        match snapshot_kind(store.as_ref(), &dir).map_err(internal)? {
            Some(SnapshotKind::Savepoint) => {}
            Some(SnapshotKind::Checkpoint) => {
                return Err(Problem(
                    StatusCode::CONFLICT,
                    format!("{location} is a checkpoint, not a savepoint"),
                ));
            }
            None => {
                return Err(Problem(
                    StatusCode::CONFLICT,
                    format!("no savepoint at {location} (no _metadata)"),
                ));
            }
        }
        dispose_snapshot(store.as_ref(), &dir).map_err(internal)
    })
    .await
    .map_err(|e| Problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    tracing::info!(location = %answer, objects = disposed, "savepoint disposed of");
    Ok(Json(
        serde_json::json!({ "disposed": answer, "objects": disposed }),
    ))
}

/// The REST routes over `jm`.
pub fn router(jm: Shared) -> axum::Router {
    let registry = Arc::new(super::metrics::registry(jm.clone()));
    axum::Router::new()
        .route("/v1/overview", get(overview))
        .route("/v1/taskmanagers", get(taskmanagers))
        .route("/v1/jobs", get(list_jobs).post(submit))
        .route("/v1/jobs/{id}", get(job_detail))
        .route("/v1/jobs/{id}/checkpoints", get(checkpoints))
        .route("/v1/jobs/{id}/config", get(config))
        .route("/v1/jobs/{id}/savepoints", post(trigger_savepoint))
        .route("/v1/jobs/{id}/savepoints/{request}", get(savepoint_status))
        .route("/v1/jobs/{id}/stop", post(stop))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/savepoints/disposal", post(dispose_savepoint))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        super::metrics::render(&registry),
                    )
                }
            }),
        )
        .with_state(jm)
}

/// Serves the REST API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, jm: Shared) -> std::io::Result<()> {
    axum::serve(listener, router(jm)).await
}
