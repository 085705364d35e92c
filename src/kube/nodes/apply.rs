//! The node controller's writes to the API server: thin, every decision is made in `plan`.
//!
//! Taints are a list the API server replaces whole (atomic), so every taint change is a JSON merge
//! patch carrying the `resourceVersion` the change was computed from: a concurrent writer makes
//! it fail with 409 instead of being overwritten, and it is then re-read and re-planned (the
//! optimistic lock of upstream's taint helpers). Addresses go through the status subresource as a
//! merge patch too (it replaces the list; server-side apply would trip over duplicate
//! `type` keys, kubernetes/kubernetes#101029).

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource};
use serde_json::json;

use super::plan::{self, InitDecision, InitPatch, InventoryView, SHUTDOWN_TAINT};

/// Attempts of one optimistic-lock write before giving up until the next pass.
const CONFLICT_RETRIES: usize = 5;
/// Field manager name of the controller's patches.
const MANAGER: &str = "autoscaler-cloudify-node-controller";

/// A write to the API server failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused or could not be reached.
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// The Node kept changing under every retry.
    #[error("the Node changed during {CONFLICT_RETRIES} attempts in a row")]
    Conflicts,
    /// After a re-read the Node no longer matches an instance.
    #[error("{0}")]
    NoLongerMatches(String),
}

/// What an initialization wrote.
pub struct Initialized {
    /// The matched instance's group, named in the `Initialized` Event.
    pub group: String,
    /// The matched VM node-instance id, named in the Event.
    pub vm_instance: String,
    /// The Node's provider id afterwards.
    pub provider_id: String,
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Initializes a Node: addresses first (so no window without them once the taint is gone, see
/// kubernetes/kubernetes#120720), then provider id, labels and the taint list in one
/// resourceVersion-checked patch. On a conflict the Node is re-read and re-planned.
pub async fn initialize(
    api: &Api<Node>,
    node: &Node,
    first: InitPatch,
    view: &InventoryView<'_>,
) -> Result<Initialized, ApplyError> {
    let name = plan::node_name(node).to_owned();
    let mut patch = first;
    let mut current = node.clone();
    for _ in 0..CONFLICT_RETRIES {
        if let Some(addresses) = &patch.addresses {
            let body = json!({"status": {"addresses": addresses}});
            api.patch_status(&name, &params(), &Patch::Merge(&body))
                .await?;
        }
        let mut spec = serde_json::Map::new();
        if let Some(pid) = &patch.provider_id {
            spec.insert("providerID".into(), json!(pid));
        }
        spec.insert("taints".into(), json!(patch.taints));
        let body = json!({
            "metadata": {
                "resourceVersion": current.metadata.resource_version,
                "labels": patch.labels,
            },
            "spec": spec,
        });
        match api.patch(&name, &params(), &Patch::Merge(&body)).await {
            Ok(n) => {
                return Ok(Initialized {
                    group: patch.group,
                    vm_instance: patch.vm_instance,
                    provider_id: plan::provider_id(&n).to_owned(),
                });
            }
            Err(e) if is_conflict(&e) => {
                current = api.get(&name).await?;
                match plan::plan_init(&current, view) {
                    InitDecision::Initialize(p) => patch = p,
                    InitDecision::NotTainted => {
                        // Someone (an earlier pass seen through a stale cache) finished it.
                        return Ok(Initialized {
                            group: patch.group,
                            vm_instance: patch.vm_instance,
                            provider_id: plan::provider_id(&current).to_owned(),
                        });
                    }
                    InitDecision::Unmatched(why) => return Err(ApplyError::NoLongerMatches(why)),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApplyError::Conflicts)
}

/// Adds (`add`) or removes the `shutdown:NoSchedule` taint, re-reading on conflicts.
pub async fn shutdown_taint(api: &Api<Node>, name: &str, add: bool) -> Result<(), ApplyError> {
    for _ in 0..CONFLICT_RETRIES {
        let node = api.get(name).await?;
        let mut taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let had = taints.iter().any(|t| t.key == SHUTDOWN_TAINT);
        if had == add {
            return Ok(());
        }
        if add {
            taints.push(Taint {
                key: SHUTDOWN_TAINT.into(),
                effect: "NoSchedule".into(),
                value: None,
                time_added: None,
            });
        } else {
            taints.retain(|t| t.key != SHUTDOWN_TAINT);
        }
        let body = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": taints},
        });
        match api.patch(name, &params(), &Patch::Merge(&body)).await {
            Ok(_) => return Ok(()),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApplyError::Conflicts)
}

/// Deletes a Node only if it is still the one planned on (UID precondition: a re-created Node
/// of the same name is another machine, cloud-provider-vsphere#397). `Ok(false)` when it is gone
/// already or its UID differs.
pub async fn delete(api: &Api<Node>, name: &str, uid: &str) -> Result<bool, ApplyError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// An Event to publish on a Node.
pub struct Note {
    type_: EventType,
    reason: &'static str,
    text: String,
}

impl Note {
    /// A Normal event.
    pub fn normal(reason: &'static str, text: String) -> Self {
        Note {
            type_: EventType::Normal,
            reason,
            text,
        }
    }

    /// A Warning event.
    pub fn warning(reason: &'static str, text: String) -> Self {
        Note {
            type_: EventType::Warning,
            reason,
            text,
        }
    }
}

/// Publishes an Event on a Node; a failure is only logged (Events are best effort).
pub async fn event(recorder: &Recorder, node: &Node, note: Note) {
    let text = crate::kube::note::fit_note(note.text);
    let ev = Event {
        type_: note.type_,
        reason: note.reason.into(),
        note: Some(text),
        action: note.reason.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &node.object_ref(&())).await {
        tracing::debug!(error = %e, node = %plan::node_name(node), "node controller: event not recorded");
    }
}
