//! The service controller's writes to Kubernetes: its finalizer (with the deployment's place) on
//! and off, `status.loadBalancer`, and Events on the Service. Metadata patches carry the
//! resourceVersion they were planned on, so a concurrent edit makes them fail (409) and the
//! Service is looked at again rather than overwritten.

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource};
use serde_json::json;

use super::spec::{DEPLOYMENT_ANNOTATION, FINALIZER};

fn params() -> PatchParams {
    PatchParams::default()
}

/// The Service's own namespace: a write through `Api::all` has no namespace in its path and
/// finds nothing (404).
fn api(client: &Client, svc: &Service) -> Api<Service> {
    Api::namespaced(
        client.clone(),
        svc.metadata.namespace.as_deref().unwrap_or("default"),
    )
}

fn finalizers(svc: &Service) -> Vec<String> {
    svc.metadata.finalizers.clone().unwrap_or_default()
}

/// Adds the finalizer and records where the load balancer lives (`<manager>/<deployment>`),
/// before anything exists in Cloudify.
pub async fn add_finalizer(
    client: &Client,
    svc: &Service,
    placement: &str,
) -> Result<(), kube::Error> {
    let mut list = finalizers(svc);
    if !list.iter().any(|f| f == FINALIZER) {
        list.push(FINALIZER.into());
    }
    let body = json!({
        "metadata": {
            "resourceVersion": svc.metadata.resource_version,
            "finalizers": list,
            "annotations": { DEPLOYMENT_ANNOTATION: placement },
        }
    });
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    api(client, svc)
        .patch(name, &params(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// Drops the finalizer and the recorded place: the deployment is gone.
pub async fn remove_finalizer(client: &Client, svc: &Service) -> Result<(), kube::Error> {
    let list: Vec<String> = finalizers(svc)
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    let body = json!({
        "metadata": {
            "resourceVersion": svc.metadata.resource_version,
            "finalizers": list,
            "annotations": { DEPLOYMENT_ANNOTATION: null },
        }
    });
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    match api(client, svc)
        .patch(name, &params(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile (another finalizer was the last one): nothing left to remove.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `status.loadBalancer.ingress` (empty: clears it) through the status subresource.
pub async fn set_ingress(
    client: &Client,
    svc: &Service,
    ingress: &[LoadBalancerIngress],
) -> Result<(), kube::Error> {
    let value = if ingress.is_empty() {
        serde_json::Value::Null
    } else {
        json!(ingress)
    };
    let body = json!({ "status": { "loadBalancer": { "ingress": value } } });
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    api(client, svc)
        .patch_status(name, &params(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// Publishes an Event on the Service; a failure is only logged (Events are best effort). The
/// note is cut to the 1 kB the API accepts (`kube::note::fit_note`). kube-rs' Recorder folds a repeat of the same
/// reason and `action` into a series of the first Event (its note stays the first one's), so
/// each kind of step has its own action.
pub async fn event(
    recorder: &Recorder,
    svc: &Service,
    warning: bool,
    reason: &str,
    action: &str,
    text: String,
) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(crate::kube::note::fit_note(text)),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &svc.object_ref(&())).await {
        tracing::debug!(error = %e, service = ?svc.metadata.name, "service controller: event not recorded");
    }
}
