//! The controller: kube-runtime's `Controller` over `FlinkJob`s and the objects they own. Each pass
//! observes (the FlinkJob, the JobManager's REST answers, the pods), asks [`crate::decide`] what to
//! do, writes the status **first**, then carries the actions out, then writes what they returned
//! (request ids, disposals). Deletion goes through kube-runtime's finalizer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Config, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use strom_api::crd::{FlinkJob, FlinkJobSpec, FlinkJobStatus, PendingSavepoint};
use tracing::{info, warn};

use crate::decide::{self, Action, JobView, Observed, Plan};
use crate::metrics::Metrics;
use crate::resources::{self, Run, Target};
use crate::rest::JobManagerApi;

/// The finalizer the operator puts on every FlinkJob.
pub const FINALIZER: &str = "strom.dev/finalizer";
/// The field manager of everything the operator applies.
const MANAGER: &str = "strom-operator";

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the FlinkJob has no namespace")]
    NoNamespace,
    /// Cleanup is not finished (a savepoint before deletion): not a failure, a short requeue.
    #[error("cleanup in progress")]
    CleanupPending,
}

impl Error {
    fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::NoNamespace => "no_namespace",
            Error::CleanupPending => "cleanup_pending",
        }
    }
}

/// What every pass shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
        }
    }
}

/// Runs the controller until `shutdown` resolves. `namespaces` empty: all of them.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let client = ctx.client.clone();
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let api = |ns: &Option<String>| -> Api<FlinkJob> {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    };
    // A plain message when the CRD is not installed, instead of a watch that never starts.
    api(&scopes[0])
        .list(&ListParams::default().limit(1))
        .await?;
    let labels = watcher::Config::default().labels("app.kubernetes.io/managed-by=strom-operator");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = tx.send(());
    };
    tokio::spawn(shutdown);
    let rx = futures::future::FutureExt::shared(async move {
        let _ = rx.await;
    });
    let mut controllers = Vec::new();
    for scope in &scopes {
        let owned = |c: &Client| -> (Api<Deployment>, Api<ConfigMap>) {
            match scope {
                Some(ns) => (
                    Api::namespaced(c.clone(), ns),
                    Api::namespaced(c.clone(), ns),
                ),
                None => (Api::all(c.clone()), Api::all(c.clone())),
            }
        };
        let (deployments, configs) = owned(&client);
        let controller = Controller::new(api(scope), watcher::Config::default())
            .owns(deployments, labels.clone())
            .owns(configs, labels.clone())
            .with_config(Config::default().concurrency(4))
            .graceful_shutdown_on(rx.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    warn!("reconcile: {e}");
                }
            });
        controllers.push(controller);
    }
    futures::future::join_all(controllers).await;
    Ok(())
}

fn error_policy(fj: Arc<FlinkJob>, error: &Error, ctx: Arc<Context>) -> Requeue {
    if matches!(error, Error::CleanupPending)
        || matches!(error, Error::Finalizer(e) if matches!(**e, kube::runtime::finalizer::Error::CleanupFailed(Error::CleanupPending)))
    {
        return Requeue::requeue(Duration::from_secs(2));
    }
    warn!(name = fj.name_any(), "reconcile failed: {error}");
    ctx.metrics.error(error.label());
    Requeue::requeue(Duration::from_secs(5))
}

async fn reconcile(fj: Arc<FlinkJob>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let ns = fj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<FlinkJob> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, fj, |event| async {
        match event {
            Finalizer::Apply(fj) => pass(&fj, &ctx, false).await,
            Finalizer::Cleanup(fj) => pass(&fj, &ctx, true).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    ctx.metrics.reconciled(started.elapsed());
    result
}

/// One pass: observe, decide, write the status, act, write what the actions returned.
async fn pass(cached: &FlinkJob, ctx: &Context, deleting: bool) -> Result<Requeue, Error> {
    let ns = cached.namespace().ok_or(Error::NoNamespace)?;
    let name = cached.name_any();
    // The watch cache may not have our own last status write yet (a request id recorded after
    // acting): decide on what the API server holds now.
    let fresh = Api::<FlinkJob>::namespaced(ctx.client.clone(), &ns)
        .get(&name)
        .await?;
    let fj = &fresh;
    let uid = fj.uid().unwrap_or_default();
    let target = Target {
        name: &name,
        namespace: &ns,
        uid: &uid,
    };
    let status = fj.status.clone().unwrap_or_default();
    let jm = JobManagerApi::new(target.rest_url());
    let (job, savepoint, checkpoints) = observe_job(&jm, &status).await;
    let pods = pod_problems(ctx, &target).await;
    let observed = Observed {
        target: target.clone(),
        generation: fj.metadata.generation.unwrap_or_default(),
        spec: &fj.spec,
        status: &status,
        job,
        savepoint,
        checkpoints,
        pods,
        now: jiff::Timestamp::now(),
    };
    let plan = if deleting {
        decide::decide_cleanup(&observed)
    } else {
        decide::decide(&observed)
    };
    let Plan {
        mut status,
        actions,
        events,
        requeue,
        done,
    } = plan;
    let api: Api<FlinkJob> = Api::namespaced(ctx.client.clone(), &ns);
    // What must be remembered before anything is done (a new run, a stop about to be requested).
    write_status(&api, &name, &status).await?;
    let reference = fj.object_ref(&());
    for note in events {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.message.chars().take(1000).collect()),
            action: note.reason.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(name, "event {}: {e}", note.reason);
        }
    }
    let mut changed = false;
    for action in actions {
        ctx.metrics.action(action_label(&action));
        match action {
            Action::Apply => {
                if let Err(e) = apply_run(ctx, &target, &status).await {
                    warn!(name, "apply: {e}");
                    return Err(e);
                }
            }
            Action::TearDown => tear_down(ctx, &target).await?,
            Action::StopWithSavepoint { job_id } => match jm.savepoint(&job_id, true).await {
                Ok(request) => {
                    info!(name, job_id, request, "stop with savepoint requested");
                    if let Some(up) = status.upgrade.as_mut() {
                        up.request_id = Some(request);
                        changed = true;
                    }
                }
                Err(e) => warn!(name, job_id, "stop with savepoint: {e}"),
            },
            Action::TriggerSavepoint { job_id } => match jm.savepoint(&job_id, false).await {
                Ok(request) => {
                    status.pending_savepoint = Some(PendingSavepoint {
                        request_id: request,
                        job_id,
                        triggered_at: jiff::Timestamp::now().to_string(),
                    });
                    changed = true;
                }
                Err(e) => warn!(name, job_id, "savepoint: {e}"),
            },
            Action::Cancel { job_id } => {
                if let Err(e) = jm.cancel(&job_id).await {
                    warn!(name, job_id, "cancel: {e}");
                }
            }
            Action::Dispose { location } => match jm.dispose(&location).await {
                Ok(()) => {
                    status.savepoint_history.retain(|s| s.location != location);
                    changed = true;
                    let event = Event {
                        type_: EventType::Normal,
                        reason: "SavepointDisposed".into(),
                        note: Some(location.clone()),
                        action: "Dispose".into(),
                        secondary: None,
                    };
                    let _ = ctx.recorder.publish(&event, &reference).await;
                }
                Err(e) => warn!(name, location, "dispose: {e}"),
            },
        }
    }
    if changed && !done {
        write_status(&api, &name, &status).await?;
    }
    if deleting && !done {
        return Err(Error::CleanupPending);
    }
    Ok(Requeue::requeue(requeue))
}

fn action_label(a: &Action) -> &'static str {
    match a {
        Action::Apply => "apply",
        Action::TearDown => "tear_down",
        Action::StopWithSavepoint { .. } => "stop_with_savepoint",
        Action::TriggerSavepoint { .. } => "savepoint",
        Action::Cancel { .. } => "cancel",
        Action::Dispose { .. } => "dispose",
    }
}

async fn write_status(
    api: &Api<FlinkJob>,
    name: &str,
    status: &FlinkJobStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": "strom.dev/v1alpha1",
        "kind": "FlinkJob",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn observe_job(
    jm: &JobManagerApi,
    status: &FlinkJobStatus,
) -> (
    JobView,
    Option<decide::SavepointView>,
    Option<decide::CheckpointView>,
) {
    let Some(run) = &status.run else {
        return (JobView::NoRun, None, None);
    };
    let job = jm.job(&run.job_id).await;
    if !matches!(job, JobView::State { .. }) {
        return (job, None, None);
    }
    let request = status
        .upgrade
        .as_ref()
        .and_then(|u| u.request_id.clone())
        .or_else(|| {
            status
                .pending_savepoint
                .as_ref()
                .map(|p| p.request_id.clone())
        });
    let savepoint = match request {
        Some(r) => Some(jm.savepoint_status(&run.job_id, &r).await),
        None => None,
    };
    let checkpoints = jm.checkpoints(&run.job_id).await.ok();
    (job, savepoint, checkpoints)
}

/// The first thing that keeps a pod of the FlinkJob from running, in words.
async fn pod_problems(ctx: &Context, target: &Target<'_>) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), target.namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={}", target.name)))
        .await
        .ok()?;
    for pod in list.items {
        let name = pod.name_any();
        let status = pod.status.unwrap_or_default();
        for c in status.container_statuses.unwrap_or_default() {
            let state = c.state.unwrap_or_default();
            if let Some(w) = state.waiting
                && let Some(reason) = w.reason
                && reason != "ContainerCreating"
            {
                let last = c
                    .last_state
                    .and_then(|s| s.terminated)
                    .map(|t| format!(", last exit code {}", t.exit_code))
                    .unwrap_or_default();
                return Some(format!(
                    "pod {name} container {}: {reason}{}{last}",
                    c.name,
                    w.message.map(|m| format!(" ({m})")).unwrap_or_default()
                ));
            }
        }
        for cond in status.conditions.unwrap_or_default() {
            if cond.type_ == "PodScheduled" && cond.status == "False" {
                return Some(format!(
                    "pod {name} not scheduled: {}",
                    cond.message.unwrap_or_default()
                ));
            }
        }
    }
    None
}

/// Applies the current run's objects (server-side apply, the operator's field manager).
async fn apply_run(
    ctx: &Context,
    target: &Target<'_>,
    status: &FlinkJobStatus,
) -> Result<(), Error> {
    let Some(run) = &status.run else {
        return Ok(());
    };
    let Ok(spec) = serde_json::from_value::<FlinkJobSpec>(run.spec.clone()) else {
        warn!(name = target.name, "the run's spec is unreadable");
        return Ok(());
    };
    let objects = match resources::objects(
        target,
        &spec,
        &Run {
            job_id: &run.job_id,
            restore_from: run.restored_from.as_deref(),
        },
    ) {
        Ok(o) => o,
        Err(e) => {
            warn!(name = target.name, "objects: {e}");
            return Ok(());
        }
    };
    let (c, ns) = (&ctx.client, target.namespace);
    apply(c, ns, &target.config(), &objects.config).await?;
    apply(c, ns, &target.jobmanager(), &objects.service).await?;
    apply(c, ns, &target.jobmanager(), &objects.jobmanager).await?;
    apply(c, ns, &target.taskmanager(), &objects.taskmanager).await?;
    Ok(())
}

/// Server-side apply of one namespaced object under the operator's field manager.
async fn apply<K>(client: &kube::Client, ns: &str, name: &str, object: &K) -> Result<(), Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let mut v = serde_json::to_value(object).unwrap_or_default();
    v["apiVersion"] = json!(K::api_version(&()));
    v["kind"] = json!(K::kind(&()));
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&v),
        )
        .await?;
    Ok(())
}

/// Deletes the run's Deployments (their pods go with them).
async fn tear_down(ctx: &Context, target: &Target<'_>) -> Result<(), Error> {
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), target.namespace);
    for name in [target.jobmanager(), target.taskmanager()] {
        match deployments.delete(&name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
