//! The leader's Pod label (issue 21).
//!
//! Every healthy replica is Ready, so that Deployments, rolling updates, PodDisruptionBudgets and
//! node drains see a normal, available workload; CA must still reach the leader, the only replica
//! that mutates. The leader therefore labels its own Pod (`lease.leader_label`, the chart's gRPC
//! Service selects on it) and removes the label when it stops leading, as other leader-elected
//! servers do. The Pod is named by the downward API (`POD_NAME`, `POD_NAMESPACE`).
//!
//! The label follows [`LeaseElection::leading`](super::LeaseElection): it is written on every
//! change and retried until the API server takes it. What was last written is published, so
//! readiness can refuse a replica that still carries the label after losing the lease (the API
//! server was unreachable when it tried to remove it): the Service would otherwise keep sending
//! CA to a replica that refuses mutations.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use tokio::sync::watch;

/// Which Pod to label, and with which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLabelTarget {
    /// The Pod's namespace.
    pub namespace: String,
    /// The Pod's name (`POD_NAME`).
    pub pod: String,
    /// The label key (`lease.leader_label`); its value is `"true"` on the leader, absent elsewhere.
    pub key: String,
}

impl PodLabelTarget {
    /// The target from the downward-API variables: `None` when `POD_NAME` is not set (not in a
    /// Pod: there is nothing to label). The namespace is `POD_NAMESPACE`, else `fallback`.
    pub fn from_env(key: &str, fallback_namespace: &str) -> Option<PodLabelTarget> {
        let var = |n: &str| std::env::var(n).ok().filter(|s| !s.is_empty());
        Some(PodLabelTarget {
            pod: var("POD_NAME")?,
            namespace: var("POD_NAMESPACE").unwrap_or_else(|| fallback_namespace.to_owned()),
            key: key.to_owned(),
        })
    }

    /// The merge patch that sets (`leading`) or removes the label. A JSON merge patch with `null`
    /// removes a key and leaves every other label alone.
    pub fn patch(&self, leading: bool) -> serde_json::Value {
        let value = if leading {
            serde_json::Value::String("true".into())
        } else {
            serde_json::Value::Null
        };
        serde_json::json!({"metadata": {"labels": {self.key.as_str(): value}}})
    }
}

/// The label's state as last written: `None` before the first write succeeded.
pub type LabelWritten = watch::Receiver<Option<bool>>;

/// Starts the task that keeps the Pod label equal to `leading`. It ends when `leading`'s sender
/// is dropped (the election stopped), after one last attempt to remove the label.
pub fn spawn(
    client: kube::Client,
    target: PodLabelTarget,
    leading: watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<()>, LabelWritten) {
    let (written_tx, written) = watch::channel(None);
    let api: kube::Api<Pod> = kube::Api::namespaced(client, &target.namespace);
    tracing::info!(
        pod = %target.pod, namespace = %target.namespace, label = %target.key,
        "the leader labels its own Pod (the gRPC Service selects it)"
    );
    let task = tokio::spawn(follow(api, target, leading, written_tx));
    (task, written)
}

async fn write(api: &kube::Api<Pod>, target: &PodLabelTarget, leading: bool) -> Result<(), String> {
    let params = PatchParams::default();
    api.patch(&target.pod, &params, &Patch::Merge(target.patch(leading)))
        .await
        .map(|_| ())
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "Kubernetes API forbids patching Pod {}/{} (the service account needs patch on \
                 pods in its namespace): {}",
                target.namespace, target.pod, s.message
            ),
            kube::Error::Api(s) => format!(
                "Kubernetes API refused the label on Pod {}/{}: {} ({})",
                target.namespace, target.pod, s.message, s.code
            ),
            other => format!("Kubernetes API server unreachable: {other}"),
        })
}

async fn follow(
    api: kube::Api<Pod>,
    target: PodLabelTarget,
    mut leading: watch::Receiver<bool>,
    written: watch::Sender<Option<bool>>,
) {
    // Start from "not leading" whatever the Pod says: a restarted container keeps its Pod, and
    // with it a label its previous process may have left.
    let mut want = *leading.borrow_and_update();
    let mut backoff = Duration::from_millis(500);
    let mut last_problem: Option<String> = None;
    let mut open = true;
    loop {
        if *written.borrow() != Some(want) {
            match write(&api, &target, want).await {
                Ok(()) => {
                    written.send_replace(Some(want));
                    backoff = Duration::from_millis(500);
                    if last_problem.take().is_some() {
                        tracing::info!(pod = %target.pod, "Pod label written again");
                    }
                    tracing::info!(pod = %target.pod, label = %target.key, leader = want, "leader label updated");
                }
                Err(problem) => {
                    if last_problem.as_deref() != Some(problem.as_str()) {
                        tracing::warn!(%problem, leader = want, "cannot update the leader label; retrying");
                    }
                    last_problem = Some(problem);
                }
            }
        }
        if !open {
            return;
        }
        let retry = *written.borrow() != Some(want);
        tokio::select! {
            changed = leading.changed() => match changed {
                Ok(()) => want = *leading.borrow_and_update(),
                // The election stopped (shutdown): remove the label once more, then end.
                Err(_) => {
                    want = false;
                    open = false;
                }
            },
            () = tokio::time::sleep(backoff), if retry => {
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> PodLabelTarget {
        PodLabelTarget {
            namespace: "kube-system".into(),
            pod: "p-1".into(),
            key: "autoscaler-cloudify.io/leader".into(),
        }
    }

    #[test]
    fn the_patch_sets_or_removes_only_the_leader_label() {
        assert_eq!(
            target().patch(true),
            serde_json::json!({"metadata": {"labels": {"autoscaler-cloudify.io/leader": "true"}}})
        );
        assert_eq!(
            target().patch(false),
            serde_json::json!({"metadata": {"labels": {"autoscaler-cloudify.io/leader": null}}})
        );
    }

    /// A fake API server for one Pod: records each PATCH body, answers 503 to the first
    /// `fail_first` of them (an API server that is briefly away).
    async fn fake_api(
        fail_first: usize,
    ) -> (
        String,
        std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    ) {
        use std::sync::{Arc, Mutex};
        let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let seen2 = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/api/v1/namespaces/kube-system/pods/p-1",
            axum::routing::patch(move |body: axum::body::Bytes| {
                let seen = Arc::clone(&seen2);
                async move {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let n = {
                        let mut g = seen.lock().unwrap_or_else(|p| p.into_inner());
                        g.push(v);
                        g.len()
                    };
                    if n <= fail_first {
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned());
                    }
                    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": "p-1", "namespace": "kube-system"}});
                    (axum::http::StatusCode::OK, pod.to_string())
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, seen)
    }

    async fn until(written: &mut LabelWritten, want: Option<bool>) {
        tokio::time::timeout(Duration::from_secs(20), written.wait_for(|w| *w == want))
            .await
            .expect("label state in time")
            .expect("task alive");
    }

    #[tokio::test]
    async fn the_label_follows_leadership_through_api_errors_and_is_removed_at_shutdown() {
        let (url, seen) = fake_api(2).await;
        let config = kube::Config::new(url.parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let (tx, rx) = watch::channel(false);
        let (task, mut written) = spawn(client, target(), rx);
        // The first write ("not leading", clearing a label a previous process left) meets two
        // 503s and is retried.
        until(&mut written, Some(false)).await;
        tx.send_replace(true);
        until(&mut written, Some(true)).await;
        tx.send_replace(false);
        until(&mut written, Some(false)).await;
        tx.send_replace(true);
        until(&mut written, Some(true)).await;
        drop(tx);
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("ends after the election")
            .expect("task");
        let label = |v: &serde_json::Value| {
            v["metadata"]["labels"]["autoscaler-cloudify.io/leader"].clone()
        };
        let bodies: Vec<serde_json::Value> = seen.lock().expect("lock").iter().map(label).collect();
        let null = serde_json::Value::Null;
        let t = serde_json::json!("true");
        assert_eq!(
            bodies,
            vec![
                null.clone(),
                null.clone(),
                null.clone(),
                t.clone(),
                null.clone(),
                t,
                null
            ],
            "two refused removals, then one write per change, and the removal at shutdown"
        );
    }
}
