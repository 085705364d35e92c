//! The running service controller: a kube-rs `Controller` on Services, triggered again for every
//! Service when the backend Node set changes or this replica becomes the leader. Each reconcile
//! reads the Service's deployment (a few short Cloudify calls), takes one [`Step`] and returns
//! when to look again; it never waits for an execution, so Services do not queue behind each
//! other, and the only state kept between looks is what to say once (reported failures,
//! warnings) and the backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};

use super::apply;
use super::ingress::{self, Address};
use super::observe;
use super::plan::{self, FailureKind, Observed, PHASES, Step};
use super::spec::{self, BackendSet, Ownership, Placement};
use crate::cloudify::CloudifyError;
use crate::cloudify::deployments::{
    DeploymentLifecycle, NewDeployment, Refusal, UpdateOptions, Workflow,
};
use crate::config::{LbBlueprint, LoadBalancersConfig};
use crate::kube::nodes::LeaderFn;
use crate::observability::metrics::{LbAction, LbActionLabels, Metrics, PhaseLabels};

/// Longest backoff after failures (upstream's service controller: 5 s doubling to 300 s).
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long Node changes are gathered before the Services are looked at (a node pool scaling
/// by several Nodes becomes one deployment update).
const NODE_SETTLE: Duration = Duration::from_secs(1);

/// Why a reconcile failed; the Service backs off and is looked at again.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// A Cloudify call failed (unreachable, refused, malformed answer).
    #[error("cloudify: {0}")]
    Cloudify(#[from] CloudifyError),
    /// A Kubernetes write failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The Service cannot be served as configured (the text says why).
    #[error("{0}")]
    Config(String),
}

/// What the controller remembers of one Service between looks (by UID). Everything else is
/// read again from Kubernetes and Cloudify each time.
#[derive(Debug, Default)]
struct Memory {
    /// The failed execution reported last: the next look retries instead of reporting again.
    reported: Option<String>,
    /// Failures in a row; the backoff doubles with each.
    failures: u32,
    /// Warning texts published for the spec as it is now (published again only after they went
    /// away and came back).
    warned: BTreeSet<String>,
    /// The unusable address last reported (once per text).
    address_warning: Option<String>,
    /// The phase of the last look.
    phase: &'static str,
    /// When a change was first seen that no update has carried yet.
    diverged_since: Option<Instant>,
}

/// The controller's context, shared by every reconcile.
struct Context {
    client: Client,
    recorder: Recorder,
    settings: LoadBalancersConfig,
    /// Deployment-lifecycle clients by `cloudify` entry index.
    managers: Vec<Arc<dyn DeploymentLifecycle>>,
    /// `cloudify` entry names by index.
    names: Vec<String>,
    nodes: Store<Node>,
    memory: Mutex<HashMap<String, Memory>>,
    metrics: Arc<Metrics>,
    is_leader: LeaderFn,
}

impl Context {
    fn remember<T>(&self, uid: &str, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut all = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        f(all.entry(uid.to_owned()).or_default())
    }

    /// Drops what is remembered of a Service that is no longer (or never was) ours.
    fn forget(&self, uid: &str) {
        let mut all = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if all.remove(uid).is_some() {
            self.publish_phases(&all);
        }
    }

    /// Sets the Service's phase and recomputes the per-phase gauge.
    fn set_phase(&self, uid: &str, phase: &'static str) {
        let mut all = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(uid.to_owned()).or_default().phase = phase;
        self.publish_phases(&all);
    }

    fn publish_phases(&self, all: &HashMap<String, Memory>) {
        let mut counts: HashMap<&str, i64> = PHASES.iter().map(|p| (*p, 0)).collect();
        for m in all.values().filter(|m| !m.phase.is_empty()) {
            *counts.entry(m.phase).or_default() += 1;
        }
        for (phase, n) in counts {
            self.metrics
                .load_balancers
                .services
                .get_or_create(&PhaseLabels { phase })
                .set(n);
        }
    }

    fn count(&self, action: LbAction) {
        self.metrics
            .load_balancers
            .actions
            .get_or_create(&LbActionLabels { action })
            .inc();
    }

    fn backoff(&self, failures: u32) -> Duration {
        let base = self.settings.poll_interval.min(Duration::from_secs(5));
        let factor = 1u32 << failures.saturating_sub(1).min(10);
        (base * factor).min(MAX_BACKOFF)
    }

    fn backends(&self) -> BackendSet {
        node_set(&self.nodes, &self.settings)
    }

    fn manager(&self, blueprint: &LbBlueprint) -> Result<&Arc<dyn DeploymentLifecycle>, LbError> {
        self.managers.get(blueprint.source).ok_or_else(|| {
            LbError::Config(format!(
                "no Cloudify client for entry {} of blueprint {}",
                blueprint.source, blueprint.blueprint_id
            ))
        })
    }
}

fn uid_of(svc: &Service) -> String {
    svc.metadata.uid.clone().unwrap_or_default()
}

fn has_finalizer(svc: &Service) -> bool {
    svc.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == spec::FINALIZER))
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, LbError> {
    if !(ctx.is_leader)() {
        // A new leader looks at every Service again (`reconcile_all_on`).
        return Ok(Action::await_change());
    }
    let uid = uid_of(&svc);
    let ownership = spec::ownership(&svc, &ctx.settings);
    let result = match &ownership {
        Ownership::NotOurs => {
            ctx.forget(&uid);
            return Ok(Action::await_change());
        }
        Ownership::Disowned => {
            disowned(&svc, &ctx, &uid).await;
            return Ok(Action::await_change());
        }
        Ownership::Ours => ensure(&svc, &ctx, &uid).await,
        Ownership::CleanUp { clear_status } => cleanup(&svc, &ctx, &uid, *clear_status).await,
    };
    match result {
        Ok(action) => Ok(action),
        Err(e) => {
            ctx.metrics.load_balancers.failures.inc();
            let failures = ctx.remember(&uid, |m| {
                m.failures += 1;
                m.failures
            });
            let reason = match ownership {
                Ownership::CleanUp { .. } => FailureKind::Delete.reason(),
                _ => FailureKind::Sync.reason(),
            };
            tracing::warn!(
                service = %service_name(&svc), error = %e, failures,
                "service controller: reconcile failed; backing off"
            );
            apply::event(
                &ctx.recorder,
                &svc,
                true,
                reason,
                "Reconcile",
                format!("Error syncing load balancer: {e}"),
            )
            .await;
            Err(e)
        }
    }
}

fn error_policy(svc: Arc<Service>, _error: &LbError, ctx: Arc<Context>) -> Action {
    let failures = ctx.remember(&uid_of(&svc), |m| m.failures);
    Action::requeue(ctx.backoff(failures))
}

fn service_name(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.metadata.name.as_deref().unwrap_or_default()
    )
}

async fn disowned(svc: &Service, ctx: &Context, uid: &str) {
    ctx.set_phase(uid, "disowned");
    let text = format!(
        "This Service keeps its Cloudify load balancer, but the configuration no longer serves \
         its class (load_balancers.class {:?}, class_less {}): it is neither updated nor deleted. \
         Restore the configuration, or change the Service's type to remove it.",
        ctx.settings.class, ctx.settings.class_less
    );
    if ctx.remember(uid, |m| m.warned.insert(text.clone())) {
        apply::event(
            &ctx.recorder,
            svc,
            true,
            "LoadBalancerDisowned",
            "Keep",
            text,
        )
        .await;
    }
}

/// Publishes the spec's Warnings not published for it yet; forgets those gone.
async fn spec_warnings(svc: &Service, ctx: &Context, uid: &str, warnings: &[spec::SpecWarning]) {
    let now: BTreeSet<String> = warnings
        .iter()
        .map(|w| format!("{}: {}", w.reason, w.text))
        .collect();
    let new: Vec<&spec::SpecWarning> = ctx.remember(uid, |m| {
        let new = warnings
            .iter()
            .filter(|w| !m.warned.contains(&format!("{}: {}", w.reason, w.text)))
            .collect();
        m.warned = now;
        new
    });
    // One Event per reason: a repeat of a reason is folded into the first Event's series (its
    // note would be lost), so warnings of one reason go together.
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for w in new {
        by_reason.entry(w.reason).or_default().push(&w.text);
    }
    for (reason, texts) in by_reason {
        apply::event(
            &ctx.recorder,
            svc,
            true,
            reason,
            "ReadSpec",
            texts.join("; "),
        )
        .await;
    }
}

async fn ensure(svc: &Service, ctx: &Context, uid: &str) -> Result<Action, LbError> {
    let placement = match spec::placement(svc, &ctx.settings, &ctx.names) {
        Ok(p) => p,
        Err(e) => return Ok(unplaceable(svc, ctx, uid, e).await),
    };
    let blueprint = &ctx.settings.blueprints[placement.blueprint];
    let desired = spec::desired(svc, &ctx.backends(), blueprint, &ctx.settings.cluster_name);
    spec_warnings(svc, ctx, uid, &desired.warnings).await;
    if !has_finalizer(svc) {
        ctx.set_phase(uid, Step::AddFinalizer.phase());
        apply::add_finalizer(&ctx.client, svc, &placement.annotation).await?;
        // The patch comes back as a watch event, which starts the next look.
        return Ok(Action::requeue(ctx.settings.poll_interval));
    }
    let manager = ctx.manager(blueprint)?;
    let observed = observe::read(manager.as_ref(), &placement.deployment_id).await?;
    let reported = ctx.remember(uid, |m| m.reported.clone());
    let step = plan::ensure(true, &desired, &observed, reported.as_deref());
    ctx.set_phase(uid, step.phase());
    tracing::debug!(service = %service_name(svc), ?step, "service controller: ensure");
    let poll = Action::requeue(ctx.settings.poll_interval);
    let id = placement.deployment_id.as_str();
    match step {
        Step::AddFinalizer
        | Step::Uninstall
        | Step::Delete
        | Step::WaitGone
        | Step::RemoveFinalizer => {
            // Cleanup steps are not planned for a Service that is ours.
            Ok(poll)
        }
        Step::Create => {
            create_deployment(svc, ctx, manager.as_ref(), blueprint, id, &desired).await?;
            Ok(poll)
        }
        Step::Install => {
            apply::event(
                &ctx.recorder,
                svc,
                false,
                "EnsuringLoadBalancer",
                "InstallDeployment",
                format!("Installing Cloudify deployment {id}"),
            )
            .await;
            ctx.count(LbAction::Install);
            workflow(manager.as_ref(), id, Workflow::Install).await?;
            Ok(poll)
        }
        Step::Update { changed } => {
            update_deployment(svc, ctx, uid, manager.as_ref(), id, &desired, &changed).await?;
            Ok(poll)
        }
        Step::ReadAddress => read_address(svc, ctx, uid, manager.as_ref(), &placement).await,
        Step::Wait { .. } => Ok(poll),
        Step::ReportFailure { run, kind } => Ok(report(svc, ctx, uid, id, &run, kind).await),
        Step::NoUsablePorts => Ok(Action::await_change()),
    }
}

/// A Service whose load balancer cannot be placed (an unknown manager annotation, say): its
/// phase says so and a warning names the problem; nothing changes until the Service does.
async fn unplaceable(svc: &Service, ctx: &Context, uid: &str, e: spec::PlacementError) -> Action {
    ctx.set_phase(uid, "invalid");
    spec_warnings(
        svc,
        ctx,
        uid,
        &[spec::SpecWarning {
            reason: FailureKind::Sync.reason(),
            text: e.0,
        }],
    )
    .await;
    Action::await_change()
}

/// Creates the Service's deployment from its blueprint, labelled for the cluster and the
/// Service; one that exists already was made by an earlier look whose answer was lost.
async fn create_deployment(
    svc: &Service,
    ctx: &Context,
    manager: &dyn DeploymentLifecycle,
    blueprint: &LbBlueprint,
    id: &str,
    desired: &spec::Desired,
) -> Result<(), LbError> {
    apply::event(
        &ctx.recorder,
        svc,
        false,
        "EnsuringLoadBalancer",
        "CreateDeployment",
        format!(
            "Creating Cloudify deployment {id} from blueprint {} on {}",
            blueprint.blueprint_id,
            manager_name(ctx, blueprint)
        ),
    )
    .await;
    let new = NewDeployment {
        id: id.to_owned(),
        blueprint_id: blueprint.blueprint_id.clone(),
        inputs: desired.inputs.clone(),
        labels: spec::deployment_labels(svc, &ctx.settings.cluster_name)
            .into_iter()
            .collect(),
    };
    ctx.count(LbAction::Create);
    match manager.create_deployment(&new).await {
        Ok(_) => Ok(()),
        // Made by an earlier look whose answer was lost: read it next time.
        Err(e) if Refusal::of(&e) == Refusal::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Starts a deployment update with the desired inputs (`changed` names what differs; empty
/// when a failed update is retried), remembering since when the load balancer lags the spec.
async fn update_deployment(
    svc: &Service,
    ctx: &Context,
    uid: &str,
    manager: &dyn DeploymentLifecycle,
    id: &str,
    desired: &spec::Desired,
    changed: &[String],
) -> Result<(), LbError> {
    ctx.remember(uid, |m| {
        m.diverged_since.get_or_insert_with(Instant::now);
    });
    let what = if changed.is_empty() {
        "retrying the failed update".to_owned()
    } else {
        format!("changed: {}", changed.join(", "))
    };
    apply::event(
        &ctx.recorder,
        svc,
        false,
        "EnsuringLoadBalancer",
        "UpdateDeployment",
        format!(
            "Updating Cloudify deployment {id} ({what}; {} port(s), {} backend(s))",
            desired.usable_ports, desired.backend_count
        ),
    )
    .await;
    ctx.count(LbAction::Update);
    // Never a reinstall (the address could change) and no heal pass: the blueprint's
    // `check_drift` and `update` operations reconfigure the load balancer in place.
    let options = UpdateOptions {
        skip_reinstall: true,
        skip_heal: true,
    };
    manager
        .start_update_with(id, &desired.inputs, options)
        .await?;
    Ok(())
}

fn manager_name(ctx: &Context, blueprint: &LbBlueprint) -> String {
    ctx.names.get(blueprint.source).cloned().unwrap_or_default()
}

/// Starts `install` or `uninstall`; `Ok(false)` when Cloudify says there is nothing to do
/// (everything already installed, nothing left to uninstall) or the environment is not ready.
async fn workflow(
    manager: &dyn DeploymentLifecycle,
    id: &str,
    which: Workflow,
) -> Result<bool, LbError> {
    match manager.start_workflow(id, which).await {
        Ok(_) => Ok(true),
        Err(e) => match Refusal::of(&e) {
            Refusal::WorkflowUnavailable | Refusal::EnvironmentNotReady => Ok(false),
            _ => Err(e.into()),
        },
    }
}

/// The Event `action` of a step on a workflow: Events are series per reason and action, so each
/// kind of step keeps its own text (kube-rs' Recorder updates a repeat's count, not its note).
fn action_of(workflow: &str) -> &'static str {
    match workflow {
        "create_deployment_environment" => "CreateDeployment",
        "install" => "InstallDeployment",
        "update" => "UpdateDeployment",
        "uninstall" => "UninstallDeployment",
        "delete_deployment_environment" => "DeleteDeployment",
        _ => "Execution",
    }
}

async fn report(
    svc: &Service,
    ctx: &Context,
    uid: &str,
    id: &str,
    run: &plan::Run,
    kind: FailureKind,
) -> Action {
    ctx.metrics.load_balancers.failures.inc();
    let failures = ctx.remember(uid, |m| {
        m.reported = Some(run.id.clone());
        m.failures += 1;
        m.failures
    });
    let backoff = ctx.backoff(failures);
    let text = format!(
        "Cloudify {} of deployment {id} {} (execution {}): {}; retrying in {}s",
        run.workflow,
        match run.status {
            plan::RunStatus::Cancelled => "was cancelled",
            _ => "failed",
        },
        run.id,
        crate::kube::events::last_line(&run.error),
        backoff.as_secs()
    );
    tracing::warn!(service = %service_name(svc), "{text}");
    apply::event(
        &ctx.recorder,
        svc,
        true,
        kind.reason(),
        action_of(&run.workflow),
        text,
    )
    .await;
    Action::requeue(backoff)
}

async fn read_address(
    svc: &Service,
    ctx: &Context,
    uid: &str,
    manager: &dyn DeploymentLifecycle,
    placement: &Placement,
) -> Result<Action, LbError> {
    let id = placement.deployment_id.as_str();
    let capabilities = evaluated(manager.capabilities(id).await)?;
    let outputs = match &capabilities {
        Some(c) if c.contains_key(ingress::INGRESS_KEY) => None,
        _ => evaluated(manager.outputs(id).await)?,
    };
    let poll = Action::requeue(ctx.settings.poll_interval);
    let wanted = match ingress::address(capabilities.as_ref(), outputs.as_ref()) {
        Address::Known(list) => list,
        Address::NotYet => return Ok(poll),
        Address::Invalid(why) => {
            let text = format!("deployment {id} publishes no usable address: {why}");
            let new = ctx.remember(uid, |m| {
                (m.address_warning.as_deref() != Some(text.as_str()))
                    .then(|| m.address_warning.replace(text.clone()))
                    .is_some()
            });
            if new {
                apply::event(
                    &ctx.recorder,
                    svc,
                    true,
                    FailureKind::Sync.reason(),
                    "PublishAddress",
                    text,
                )
                .await;
            }
            return Ok(Action::requeue(ctx.settings.resync_interval));
        }
    };
    if ingress::differs(&ingress::current(svc), &wanted) {
        apply::set_ingress(&ctx.client, svc, &wanted).await?;
        ctx.count(LbAction::Status);
        apply::event(
            &ctx.recorder,
            svc,
            false,
            "EnsuredLoadBalancer",
            "PublishAddress",
            format!("Ensured load balancer {}", ingress::describe(&wanted)),
        )
        .await;
    }
    let updated = ctx.remember(uid, |m| {
        m.failures = 0;
        m.reported = None;
        m.address_warning = None;
        m.diverged_since.take()
    });
    if let Some(since) = updated {
        let took = since.elapsed();
        ctx.metrics
            .load_balancers
            .update_duration
            .observe(took.as_secs_f64());
        apply::event(
            &ctx.recorder,
            svc,
            false,
            "UpdatedLoadBalancer",
            "UpdateDeployment",
            format!(
                "Updated load balancer (deployment {id}) with the new ports and hosts in {}s",
                took.as_secs()
            ),
        )
        .await;
    }
    Ok(Action::requeue(ctx.settings.resync_interval))
}

/// Outputs or capabilities; `None` while they cannot be evaluated yet (400
/// `deployment_outputs_evaluation_error`: an attribute the blueprint sets later).
fn evaluated(
    answer: Result<serde_json::Map<String, serde_json::Value>, CloudifyError>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, LbError> {
    match answer {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.code() == Some("deployment_outputs_evaluation_error") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn cleanup(
    svc: &Service,
    ctx: &Context,
    uid: &str,
    clear_status: bool,
) -> Result<Action, LbError> {
    let placement =
        spec::placement(svc, &ctx.settings, &ctx.names).map_err(|e| LbError::Config(e.0))?;
    let blueprint = &ctx.settings.blueprints[placement.blueprint];
    let manager = ctx.manager(blueprint)?;
    let id = placement.deployment_id.as_str();
    let observed = observe::read(manager.as_ref(), id).await?;
    let reported = ctx.remember(uid, |m| m.reported.clone());
    let mut step = plan::cleanup(&observed, reported.as_deref());
    ctx.set_phase(uid, step.phase());
    tracing::debug!(service = %service_name(svc), ?step, "service controller: cleanup");
    let poll = Action::requeue(ctx.settings.poll_interval);
    if step == Step::Uninstall {
        apply::event(
            &ctx.recorder,
            svc,
            false,
            "DeletingLoadBalancer",
            "UninstallDeployment",
            format!("Uninstalling Cloudify deployment {id}"),
        )
        .await;
        ctx.count(LbAction::Uninstall);
        if workflow(manager.as_ref(), id, Workflow::Uninstall).await? {
            return Ok(poll);
        }
        // Nothing left to uninstall (Cloudify says so): delete now.
        step = Step::Delete;
    }
    match step {
        Step::Delete => {
            apply::event(
                &ctx.recorder,
                svc,
                false,
                "DeletingLoadBalancer",
                "DeleteDeployment",
                format!("Deleting Cloudify deployment {id}"),
            )
            .await;
            ctx.count(LbAction::Delete);
            match manager.delete_deployment(id, false).await {
                Ok(()) => Ok(poll),
                Err(e) => match Refusal::of(&e) {
                    Refusal::NotFound => Ok(Action::requeue(Duration::ZERO)),
                    // The removal (or an execution) still runs: look again.
                    Refusal::DependentsExist => Ok(poll),
                    _ => Err(e.into()),
                },
            }
        }
        Step::RemoveFinalizer => {
            debug_assert!(matches!(observed, Observed::Absent));
            if clear_status && !ingress::current(svc).is_empty() {
                apply::set_ingress(&ctx.client, svc, &[]).await?;
                ctx.count(LbAction::Status);
            }
            apply::remove_finalizer(&ctx.client, svc).await?;
            apply::event(
                &ctx.recorder,
                svc,
                false,
                "DeletedLoadBalancer",
                "RemoveFinalizer",
                format!("Deleted load balancer (Cloudify deployment {id})"),
            )
            .await;
            ctx.forget(uid);
            Ok(Action::await_change())
        }
        Step::ReportFailure { run, kind } => Ok(report(svc, ctx, uid, id, &run, kind).await),
        _ => Ok(poll),
    }
}

/// The backends among the cached Nodes; also the set whose change makes every Service be
/// looked at again.
fn node_set(nodes: &Store<Node>, settings: &LoadBalancersConfig) -> BackendSet {
    let state = nodes.state();
    spec::backends(
        state.iter().map(Arc::as_ref),
        settings.address_type,
        settings.exclude_not_ready,
    )
}

/// The running service controller.
pub struct ServiceController {
    task: tokio::task::JoinHandle<()>,
}

impl ServiceController {
    /// Stops it at once; a write in progress may be cut short (the next leader redoes it).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Starts the service controller. `managers` and `names` are by `cloudify` entry index;
/// `leading` (with an election) says when this replica becomes the leader, which makes it look
/// at every Service; `is_leader` is asked before every look.
pub fn spawn(
    client: Client,
    settings: LoadBalancersConfig,
    managers: Vec<Arc<dyn DeploymentLifecycle>>,
    names: Vec<String>,
    metrics: Arc<Metrics>,
    is_leader: LeaderFn,
    leading: Option<watch::Receiver<bool>>,
) -> ServiceController {
    let task = tokio::spawn(run(
        client, settings, managers, names, metrics, is_leader, leading,
    ));
    ServiceController { task }
}

async fn run(
    client: Client,
    settings: LoadBalancersConfig,
    managers: Vec<Arc<dyn DeploymentLifecycle>>,
    names: Vec<String>,
    metrics: Arc<Metrics>,
    is_leader: LeaderFn,
    leading: Option<watch::Receiver<bool>>,
) {
    let (nodes, writer) = reflector::store::<Node>();
    let (trigger, triggers) = mpsc::unbounded_channel::<()>();
    let node_task = watch_backend_nodes(&client, writer, nodes.clone(), &settings, trigger.clone());
    if let Some(leading) = leading {
        // A clone: `run` keeps its sender for as long as the controller runs, so the trigger
        // stream never ends while it does.
        trigger_on_leadership(leading, trigger.clone());
    }
    if nodes.wait_until_ready().await.is_err() {
        tracing::error!("service controller: the Node cache never synced; controller stopped");
        node_task.abort();
        return;
    }
    tracing::info!(
        class = %settings.class, class_less = settings.class_less,
        "service controller: Node cache synced; serving Services of type LoadBalancer"
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "autoscaler-cloudify-service-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let concurrency = settings.concurrency;
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        settings,
        managers,
        names,
        nodes,
        memory: Mutex::new(HashMap::new()),
        metrics,
        is_leader,
    });
    let stream = tokio_stream_from(triggers);
    Controller::new(Api::<Service>::all(client), watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_all_on(stream)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "service controller: reconcile error");
            }
        })
        .await;
    node_task.abort();
}

/// Watches the Nodes into `node_store` and sends on `node_trigger` when the backend set
/// changes (after a settle time, so a node pool scaling by several Nodes becomes one look at
/// every Service).
fn watch_backend_nodes(
    client: &Client,
    writer: reflector::store::Writer<Node>,
    node_store: Store<Node>,
    settings: &LoadBalancersConfig,
    node_trigger: mpsc::UnboundedSender<()>,
) -> tokio::task::JoinHandle<()> {
    let node_events = reflector(
        writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .applied_objects();
    let node_settings = settings.clone();
    tokio::spawn(async move {
        futures::pin_mut!(node_events);
        let mut last: Option<BackendSet> = None;
        while let Some(event) = node_events.next().await {
            if let Err(e) = event {
                // The watcher retries with backoff by itself; the cache keeps its last state.
                tracing::warn!(error = %e, "service controller: Node watch failed");
                continue;
            }
            // Gather a burst of Node changes (a pool scaling) into one look.
            let settle = tokio::time::sleep(NODE_SETTLE);
            tokio::pin!(settle);
            loop {
                tokio::select! {
                    () = &mut settle => break,
                    next = node_events.next() => if next.is_none() { break },
                }
            }
            let now = node_set(&node_store, &node_settings);
            if last.as_ref() != Some(&now) {
                if let Some(before) = &last {
                    tracing::info!(
                        before = before.backends.len(), after = now.backends.len(),
                        without_address = ?now.without_address,
                        "service controller: backend Nodes changed; looking at every Service"
                    );
                    let _ = node_trigger.send(());
                }
                last = Some(now);
            }
        }
    })
}

/// Looks at every Service again when this replica becomes the leader: a follower did not act
/// on what changed meanwhile.
fn trigger_on_leadership(mut leading: watch::Receiver<bool>, trigger: mpsc::UnboundedSender<()>) {
    tokio::spawn(async move {
        while leading.changed().await.is_ok() {
            if *leading.borrow_and_update() && trigger.send(()).is_err() {
                break;
            }
        }
    });
}

/// The trigger channel as a stream.
fn tokio_stream_from(mut rx: mpsc::UnboundedReceiver<()>) -> impl futures::Stream<Item = ()> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
