//! Scales whose `POST /executions` got no definite answer (issue 20 item 12): the manager may
//! have stored the execution and lost the answer (a 502 from the proxy in front of it, a cut
//! connection, a body cut short). Answering "failed" then makes TargetSize ignore a scale that
//! exists, and CA's retry scale twice.
//!
//! The rule:
//! 1. A definite answer is taken as it is: an execution (accepted), Cloudify's own refusal (a
//!    4xx with its error body), a 401, a connection that was never made.
//! 2. After any other outcome, Cloudify is asked what happened before the call is answered: one
//!    list of the deployment's newest scale executions, looking for one of this group with this
//!    `delta` and these hints, created since just before the POST (2 min of clock skew allowed)
//!    and not already known to this process. Found: the call succeeds with it (TargetSize counts
//!    it at once). Not found: nothing was stored, the call fails and CA may retry.
//! 3. When Cloudify cannot tell (it does not answer the list either, or the POST may still be
//!    running on the manager: our timeout or a gateway's 504, for [`STILL_RUNNING`]), the call
//!    answers UNAVAILABLE and the group keeps an *ambiguous scale*. Every later mutation of the
//!    group settles it the same way first, and is refused (UNAVAILABLE) while Cloudify still
//!    cannot tell, rather than risk a second scale.
//! 4. A scale found stored while settling that the snapshot does not show yet (so CA could not
//!    have counted it) answers the retry: an IncreaseSize sends only what it asks beyond that
//!    scale-out, a DeleteNodes does not remove again what that scale-in removes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::overlay::{AmbiguousScale, GroupRuntime, LocalChange, Overlay, ScaleExecution};
use super::{DomainError, NodeGroupService};
use crate::cloudify::{Cloudify, CloudifyError, Execution, ScaleRequest};
use crate::inventory::NodeGroup;

/// A POST the manager may still be processing is declared not stored only by a look-up this
/// long after it.
pub(super) const STILL_RUNNING: Duration = Duration::from_secs(30);

/// Clock skew tolerated between this host and the manager when matching `created_at`.
const CLOCK_SKEW: Duration = Duration::from_secs(120);

/// How many of the deployment's newest scale executions a look-up reads.
const LOOKED_AT: usize = 50;

/// True when a failed POST may still have been stored by Cloudify. Definite refusals are a
/// Cloudify error body with a 4xx, a proxy's 4xx page, a 401 (or the back-off after one), bad
/// settings and a connection that was never made; anything else (5xx, a cut connection, a
/// timeout, a 2xx body that could not be read, and any kind this list does not know) may not be.
pub(super) fn may_be_stored(e: &CloudifyError) -> bool {
    match e {
        CloudifyError::Api { status, .. } | CloudifyError::Http { status, .. } => *status >= 500,
        CloudifyError::Unauthorized { .. }
        | CloudifyError::AuthBackoff { .. }
        | CloudifyError::Settings(_) => false,
        CloudifyError::Transport { source, .. } => !source.is_connect(),
        _ => true,
    }
}

/// True when the manager may still be working on the POST when the error came.
fn may_still_run(e: &CloudifyError) -> bool {
    match e {
        CloudifyError::Timeout { .. } => true,
        CloudifyError::Api { status, .. } | CloudifyError::Http { status, .. } => *status == 504,
        _ => false,
    }
}

/// True when `e` is the execution `request` would create: same group, `delta` and hints,
/// created since `since` (less the clock skew; an unreadable `created_at` does not exclude it).
pub(super) fn is_the_stored(e: &Execution, request: &ScaleRequest, since: SystemTime) -> bool {
    let hints: BTreeSet<String> = e.include_instances().into_iter().collect();
    let sent: BTreeSet<String> = request.include_instances.iter().cloned().collect();
    let recent = e.created_time().is_none_or(|t| t + CLOCK_SKEW >= since);
    e.workflow_id == "scale"
        && e.deployment_id == request.deployment_id
        && e.scaled_group() == Some(request.group.as_str())
        && e.delta() == request.delta
        && hints == sent
        && recent
}

/// What Cloudify says about an ambiguous scale.
#[derive(Debug)]
enum Lookup {
    /// It stored it: this execution.
    Stored(Execution),
    /// It did not.
    NotStored,
    /// It cannot tell (yet): why.
    Unknown(String),
}

/// The execution ids this process already accounts for in group `g`: a look-up never takes
/// one of them for the lost one.
fn known_ids(o: &Overlay, g: Option<&NodeGroup>) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = o
        .changes
        .iter()
        .filter_map(|c| c.started.as_ref().map(|s| s.id.clone()))
        .collect();
    if let Some(g) = g {
        known.extend(g.seen_executions.iter().cloned());
    }
    known
}

/// Asks Cloudify whether it stored `scale`.
async fn look_up(
    cloudify: &dyn Cloudify,
    scale: &AmbiguousScale,
    known: &BTreeSet<String>,
) -> Lookup {
    let deployment = std::slice::from_ref(&scale.request.deployment_id);
    match cloudify
        .scale_executions(deployment, &[], Some(LOOKED_AT))
        .await
    {
        Ok(recent) => match recent
            .into_iter()
            .find(|e| !known.contains(&e.id) && is_the_stored(e, &scale.request, scale.sent_wall))
        {
            Some(e) => Lookup::Stored(e),
            None if scale.may_still_run && scale.sent_at.elapsed() < STILL_RUNNING => {
                Lookup::Unknown("the manager may still be processing it".into())
            }
            None => Lookup::NotStored,
        },
        Err(e) => Lookup::Unknown(e.to_string()),
    }
}

/// What settling a group's ambiguous scales found.
#[derive(Debug, Default)]
pub(super) struct Settled {
    /// Scale-out capacity found stored that the snapshot does not show yet: what a retried
    /// IncreaseSize asked for already.
    pub unseen_scale_out: i64,
}

impl NodeGroupService {
    /// POSTs `request` inside the leadership term. A definite answer is returned as it is; after
    /// any other outcome Cloudify is asked whether it stored the scale (module doc). `deleting`:
    /// the provider ids a scale-in removes, kept with an ambiguous scale.
    pub(super) async fn post_scale(
        &self,
        rt: &GroupRuntime,
        g: &NodeGroup,
        cloudify: &dyn Cloudify,
        request: &ScaleRequest,
        deleting: Vec<String>,
    ) -> Result<Execution, DomainError> {
        let (sent_wall, sent_at) = (SystemTime::now(), Instant::now());
        let answer = self
            .within_term(async { Ok(cloudify.start_scale(request).await) })
            .await?;
        let error = match answer {
            Ok(execution) => return Ok(execution),
            Err(e) if !may_be_stored(&e) => return Err(e.into()),
            Err(e) => e,
        };
        let scale = AmbiguousScale {
            request: request.clone(),
            sent_wall,
            sent_at,
            may_still_run: may_still_run(&error),
            deleting,
        };
        let known = rt.with_overlay(&self.inventory, |o, snap| known_ids(o, snap.group(&g.id)));
        match look_up(cloudify, &scale, &known).await {
            Lookup::Stored(execution) => {
                tracing::warn!(
                    group = %g.id, execution = %execution.id, error = %error,
                    "Cloudify stored the scale but its answer was lost: taken as accepted"
                );
                Ok(execution)
            }
            Lookup::NotStored => Err(error.into()),
            Lookup::Unknown(why) => {
                tracing::warn!(
                    group = %g.id, error = %error, lookup = %why,
                    "whether Cloudify stored the scale is unknown: the group's next mutation asks again first"
                );
                rt.with_overlay(&self.inventory, |o, _| o.ambiguous.push(scale));
                Err(DomainError::Unavailable {
                    message: format!(
                        "{error}; whether Cloudify stored the scale is unknown ({why}): the next \
                         call on group {:?} finds out before sending anything",
                        g.id
                    ),
                    source: Some(Arc::new(error)),
                })
            }
        }
    }

    /// Settles the group's ambiguous scales before a new mutation (under the mutation lock):
    /// a stored one is recorded as accepted, one not stored is forgotten. UNAVAILABLE while
    /// Cloudify cannot tell.
    pub(super) async fn settle(
        &self,
        rt: &GroupRuntime,
        g: &NodeGroup,
        cloudify: &dyn Cloudify,
    ) -> Result<Settled, DomainError> {
        let (pending, known) = rt.with_overlay(&self.inventory, |o, snap| {
            (o.ambiguous.clone(), known_ids(o, snap.group(&g.id)))
        });
        let mut settled = Settled::default();
        for scale in pending {
            let found = match look_up(cloudify, &scale, &known).await {
                Lookup::Unknown(why) => {
                    return Err(DomainError::Unavailable {
                        message: format!(
                            "node group {:?}: an earlier scale got no answer and Cloudify still \
                             cannot tell whether it stored it ({why}); not sending another",
                            g.id
                        ),
                        source: None,
                    });
                }
                Lookup::NotStored => None,
                Lookup::Stored(e) => Some(e),
            };
            let unseen = rt.with_overlay(&self.inventory, |o, snap| {
                o.ambiguous.retain(|a| a.sent_at != scale.sent_at);
                let execution = found?;
                let seen = snap
                    .group(&g.id)
                    .is_some_and(|g| g.seen_executions.contains(&execution.id));
                let delta = i32::try_from(scale.request.delta).unwrap_or(0);
                o.changes.push(LocalChange::started(
                    ScaleExecution {
                        id: execution.id.clone(),
                        delta,
                    },
                    scale.deleting.clone(),
                ));
                tracing::warn!(
                    group = %g.id, execution = %execution.id,
                    "an earlier scale whose answer was lost was stored by Cloudify: recorded"
                );
                (!seen).then_some(scale.request.delta)
            });
            settled.unseen_scale_out += unseen.filter(|d| *d > 0).unwrap_or(0);
        }
        Ok(settled)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn execution(delta: i64, include: &[&str], created_at: &str) -> Execution {
        serde_json::from_value(
            json!({"id": "e", "workflow_id": "scale", "deployment_id": "d",
            "status": "queued", "created_at": created_at,
            "parameters": {"scalable_entity_name": "g", "delta": delta,
                           "include_instances": include}}),
        )
        .expect("execution")
    }

    fn at(rfc3339: &str) -> SystemTime {
        crate::cloudify::models::parse_timestamp(rfc3339).expect("time")
    }

    #[test]
    fn the_stored_scale_has_the_same_group_delta_and_hints_and_is_recent() {
        let out = ScaleRequest::scale_out("d", "g", 2, false);
        let sent = at("2026-01-01T10:00:00Z");
        assert!(is_the_stored(
            &execution(2, &[], "2026-01-01T10:00:01.5"),
            &out,
            sent
        ));
        assert!(
            is_the_stored(&execution(2, &[], "2026-01-01T09:59:00Z"), &out, sent),
            "within the clock skew"
        );
        assert!(!is_the_stored(
            &execution(2, &[], "2026-01-01T09:50:00Z"),
            &out,
            sent
        ));
        assert!(!is_the_stored(
            &execution(1, &[], "2026-01-01T10:00:01Z"),
            &out,
            sent
        ));
        assert!(is_the_stored(&execution(2, &[], "unreadable"), &out, sent));
        let scale_in = ScaleRequest::scale_in("d", "g", vec!["b".into(), "a".into()], false);
        assert!(is_the_stored(
            &execution(-2, &["a", "b"], "2026-01-01T10:00:01Z"),
            &scale_in,
            sent
        ));
        assert!(!is_the_stored(
            &execution(-2, &["a", "c"], "2026-01-01T10:00:01Z"),
            &scale_in,
            sent
        ));
    }

    #[test]
    fn only_a_definite_refusal_means_not_stored() {
        let api = |status| CloudifyError::Api {
            route: "POST /executions".into(),
            status,
            code: "x".into(),
            message: "m".into(),
        };
        let page = |status| CloudifyError::Http {
            route: "POST /executions".into(),
            status,
            content_type: "text/html".into(),
            excerpt: String::new(),
        };
        assert!(!may_be_stored(&api(400)));
        assert!(!may_be_stored(&page(413)));
        assert!(may_be_stored(&api(500)));
        assert!(may_be_stored(&page(502)));
        let timeout = CloudifyError::Timeout {
            route: "POST /executions".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(may_be_stored(&timeout) && may_still_run(&timeout));
        assert!(may_still_run(&page(504)) && !may_still_run(&page(502)));
        let decode = CloudifyError::Decode {
            route: "POST /executions".into(),
            source: serde_json::from_str::<serde_json::Value>("{").expect_err("cut"),
        };
        assert!(may_be_stored(&decode), "a 2xx we could not read was stored");
        assert!(!may_be_stored(&CloudifyError::Unauthorized {
            route: "POST /executions".into(),
            message: "no".into(),
        }));
    }
}
