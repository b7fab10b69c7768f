//! The JobManager's REST API as the operator uses it (docs/openapi.yaml): observe a job, its
//! checkpoints and savepoint requests; trigger savepoints, stop with a savepoint, cancel, dispose.
//! Blocking HTTP (ureq) on Tokio's blocking pool, with short timeouts: an unreachable JobManager is
//! an observation, not an error that holds the reconciler up.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::decide::{CheckpointView, JobView, SavepointView};

/// A JobManager's REST endpoint.
#[derive(Debug, Clone)]
pub struct JobManagerApi {
    base: String,
    agent: ureq::Agent,
}

/// A call that did not get the answer it needed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("JobManager at {0} unreachable: {1}")]
    Unreachable(String, String),
    #[error("JobManager answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("JobManager answered something unexpected: {0}")]
    Body(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobBody {
    state: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    failure: Option<String>,
    parallelism: i32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckpointsBody {
    history: Vec<HistoryEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryEntry {
    id: u64,
    savepoint: bool,
    path: String,
    #[serde(default)]
    timestamp_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavepointBody {
    status: String,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    failure: Option<String>,
}

impl JobManagerApi {
    pub fn new(base: String) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        Self { base, agent }
    }

    async fn call(
        &self,
        method: &'static str,
        path: String,
        body: Option<Value>,
    ) -> Result<(u16, Value), RestError> {
        let url = format!("{}{path}", self.base);
        let agent = self.agent.clone();
        let base = self.base.clone();
        tokio::task::spawn_blocking(move || {
            let response = match (method, body) {
                ("GET", _) => agent.get(&url).call(),
                (_, Some(b)) => agent.post(&url).send_json(b),
                (_, None) => agent.post(&url).send_empty(),
            };
            let mut response =
                response.map_err(|e| RestError::Unreachable(base.clone(), e.to_string()))?;
            let status = response.status().as_u16();
            let text = response
                .body_mut()
                .read_to_string()
                .map_err(|e| RestError::Unreachable(base, e.to_string()))?;
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Ok((status, value))
        })
        .await
        .map_err(|e| RestError::Body(e.to_string()))?
    }

    fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, RestError> {
        serde_json::from_value(v).map_err(|e| RestError::Body(e.to_string()))
    }

    /// The job as the JobManager reports it; unreachable and unknown jobs are observations.
    pub async fn job(&self, id: &str) -> JobView {
        match self.call("GET", format!("/v1/jobs/{id}"), None).await {
            Ok((200, v)) => match Self::parse::<JobBody>(v) {
                Ok(b) => JobView::State {
                    state: b.state,
                    message: b.failure.or(b.message),
                    parallelism: b.parallelism,
                },
                Err(e) => JobView::Unreachable(e.to_string()),
            },
            Ok((404, _)) => JobView::NotFound,
            Ok((status, body)) => JobView::Unreachable(format!("answered {status}: {body}")),
            Err(e) => JobView::Unreachable(e.to_string()),
        }
    }

    /// The newest complete checkpoint and the newest savepoint of a job.
    pub async fn checkpoints(&self, id: &str) -> Result<CheckpointView, RestError> {
        let (status, v) = self
            .call("GET", format!("/v1/jobs/{id}/checkpoints"), None)
            .await?;
        if status != 200 {
            return Err(RestError::Status {
                status,
                body: v.to_string(),
            });
        }
        let body: CheckpointsBody = Self::parse(v)?;
        let newest = |savepoint: bool| {
            body.history
                .iter()
                .filter(|e| e.savepoint == savepoint)
                .max_by_key(|e| e.id)
                .map(|e| (e.path.clone(), e.timestamp_ms))
        };
        Ok(CheckpointView {
            latest_checkpoint: newest(false),
            latest_savepoint: newest(true).map(|(p, _)| p),
        })
    }

    /// Triggers a savepoint (`stop`: the job ends right after it); the request's id.
    pub async fn savepoint(&self, id: &str, stop: bool) -> Result<String, RestError> {
        let (status, v) = self
            .call(
                "POST",
                format!("/v1/jobs/{id}/savepoints"),
                Some(json!({ "stop": stop })),
            )
            .await?;
        if status != 202 {
            return Err(RestError::Status {
                status,
                body: v.to_string(),
            });
        }
        v["requestId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| RestError::Body(v.to_string()))
    }

    pub async fn savepoint_status(&self, id: &str, request: &str) -> SavepointView {
        match self
            .call("GET", format!("/v1/jobs/{id}/savepoints/{request}"), None)
            .await
        {
            Ok((200, v)) => match Self::parse::<SavepointBody>(v) {
                Ok(b) => match (b.status.as_str(), b.location) {
                    ("COMPLETED", Some(location)) => SavepointView::Completed(location),
                    ("FAILED", _) => SavepointView::Failed(b.failure.unwrap_or_default()),
                    _ => SavepointView::InProgress,
                },
                Err(e) => SavepointView::Unknown(e.to_string()),
            },
            Ok((404, _)) => SavepointView::Lost,
            Ok((status, body)) => SavepointView::Unknown(format!("answered {status}: {body}")),
            Err(e) => SavepointView::Unknown(e.to_string()),
        }
    }

    pub async fn cancel(&self, id: &str) -> Result<(), RestError> {
        match self
            .call("POST", format!("/v1/jobs/{id}/cancel"), None)
            .await?
        {
            // 409: it has ended already.
            (202 | 404 | 409, _) => Ok(()),
            (status, v) => Err(RestError::Status {
                status,
                body: v.to_string(),
            }),
        }
    }

    /// Deletes a savepoint (`<storage>#<dir>`).
    pub async fn dispose(&self, location: &str) -> Result<(), RestError> {
        match self
            .call(
                "POST",
                "/v1/savepoints/disposal".to_owned(),
                Some(json!({ "location": location })),
            )
            .await?
        {
            // 409: nothing restorable is there (any more).
            (200 | 409, _) => Ok(()),
            (status, v) => Err(RestError::Status {
                status,
                body: v.to_string(),
            }),
        }
    }
}
