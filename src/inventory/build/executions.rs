//! Step 2: what the deployment modifications and scale executions of a source add to its groups.
//!
//! A `scale` execution is in `planned_instances` only once its deployment modification exists
//! (the workflow validates first, then starts the modification): until then its delta is
//! *waiting*, afterwards *running*. Failed scale-outs are reported as missing instances, and
//! active scale-ins mark the instances they remove.

use std::time::Duration;

use super::*;
use crate::cloudify::ExecutionStatus;
use crate::cloudify::models::parse_timestamp as parse_time;

/// How long a failed scale-out keeps being reported (as creating-with-error instances), unless
/// CA deletes them first. CA reacts within a loop or two; this only bounds stale records.
const FAILED_SCALE_RETENTION: Duration = Duration::from_secs(15 * 60);

/// At most this many synthetic instances per failed scale-out: a delta from Cloudify may be
/// anything, and CA would be answered one entry per missing instance.
const MAX_SYNTHETIC_PER_FAILURE: usize = 1000;

/// The execution a `started` modification belongs to: the one its context records, or, when it
/// records none, the deployment's `started` scale, if any.
fn modification_owner<'a>(
    m: &'a DeploymentModification,
    active: &'a [Execution],
) -> Option<&'a str> {
    m.execution_id().or_else(|| {
        active
            .iter()
            .find(|e| e.deployment_id == m.deployment_id && e.status == ExecutionStatus::Started)
            .map(|e| e.id.as_str())
    })
}

/// A started modification whose execution is no longer active was left by a failed, cancelled
/// or killed scale: its half-applied change is void (our next scale aborts it), so the groups it
/// targets count `current`, and every group of the deployment is marked so that a scale sent to
/// it aborts the modification first.
fn void_modification(m: &DeploymentModification, groups: &mut Groups<'_>) {
    for g in groups
        .values_mut()
        .filter(|g| g.deployment == m.deployment_id)
    {
        g.orphan_modification = true;
        if m.target_of(&g.group).is_some() {
            g.planned = g.current;
        }
    }
}

/// Voids the orphan modifications and returns the ids of the active executions whose
/// modification exists, that is whose delta `planned_instances` already shows.
pub(super) fn void_orphan_modifications<'a>(
    src: &'a SourceData,
    groups: &mut Groups<'_>,
) -> HashSet<&'a str> {
    let active_ids: HashSet<&str> = src.active.iter().map(|e| e.id.as_str()).collect();
    let mut in_planned: HashSet<&str> = HashSet::new();
    for m in src.modifications.iter().filter(|m| m.status == "started") {
        match modification_owner(m, &src.active) {
            Some(e) if active_ids.contains(e) => {
                in_planned.insert(e);
            }
            _ => void_modification(m, groups),
        }
    }
    in_planned
}

/// The active executions whose modification already ended (finished or rolled back): on the
/// real manager it ends 0.4-2.6 s before its execution leaves `started` (issue 19). Their
/// outcome is in `current_instances` already, and nothing of them can roll back any more.
pub(super) fn settled_executions(src: &SourceData) -> HashSet<&str> {
    let active: HashSet<&str> = src.active.iter().map(|e| e.id.as_str()).collect();
    src.modifications
        .iter()
        .filter(|m| m.status != "started")
        .filter_map(|m| m.execution_id())
        .filter(|e| active.contains(e))
        .collect()
}

/// Where an active execution's delta is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not in `planned_instances` yet: queued or pending, or `started` before its modification.
    Waiting,
    /// In `planned_instances`: a failure would roll it back.
    Running,
    /// Nowhere: a zero delta, or a cancelling execution that never modified the deployment.
    Uncounted,
}

fn phase_of(e: &Execution, in_planned: &HashSet<&str>) -> Phase {
    let modifying = in_planned.contains(e.id.as_str());
    if e.delta() == 0 {
        Phase::Uncounted
    } else if e.is_waiting() || (e.status == ExecutionStatus::Started && !modifying) {
        Phase::Waiting
    } else if modifying {
        Phase::Running
    } else {
        Phase::Uncounted
    }
}

/// The instances active scale-ins are removing.
#[derive(Debug, Default)]
pub(super) struct Removals<'a> {
    /// `(deployment, instance id)` named by an active scale-in's `include_instances`: a VM
    /// instance or a group instance.
    named: HashSet<(&'a str, String)>,
    /// Deployments with an active scale-in that names nothing: any of their stopping instances
    /// may be its victims.
    unhinted: HashSet<&'a str>,
}

impl Removals<'_> {
    /// True when an active scale-in names the group instance or one of its VMs: Cloudify
    /// removes the whole group instance for either. Usually no scale-in runs: then this copies
    /// no key.
    pub fn names<'v>(
        &self,
        deployment: &str,
        vms: impl IntoIterator<Item = &'v str>,
        group_instance: &'v str,
    ) -> bool {
        !self.named.is_empty()
            && std::iter::once(group_instance)
                .chain(vms)
                .any(|id| self.named.contains(&(deployment, id.to_owned())))
    }

    /// True when the deployment has an active scale-in that names no instance.
    pub fn unhinted_in(&self, deployment: &str) -> bool {
        self.unhinted.contains(deployment)
    }
}

/// Adds each active scale execution to its group (seen, and waiting or running by its
/// [`Phase`]) and collects what the active scale-ins remove. A `settled` one (its modification
/// ended) is only seen, like an ended execution.
pub(super) fn apply_active<'a>(
    active: &'a [Execution],
    in_planned: &HashSet<&str>,
    settled: &HashSet<&str>,
    groups: &mut Groups<'a>,
) -> Removals<'a> {
    let mut removals = Removals::default();
    for e in active {
        let Some(gname) = e.scaled_group() else {
            continue;
        };
        let Some(g) = groups.get_mut(&(e.deployment_id.as_str(), gname)) else {
            continue;
        };
        g.seen_executions.push(e.id.clone());
        if settled.contains(e.id.as_str()) {
            continue;
        }
        let delta = e.delta();
        let execution = WaitingExecution {
            id: e.id.clone(),
            delta: delta.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            cancellable: e.is_waiting(),
        };
        match phase_of(e, in_planned) {
            Phase::Waiting => g.waiting.push(execution),
            Phase::Running => g.running.push(execution),
            Phase::Uncounted => {}
        }
        if delta < 0 {
            let named = e.include_instances();
            if named.is_empty() {
                removals.unhinted.insert(e.deployment_id.as_str());
            }
            for id in named {
                removals.named.insert((e.deployment_id.as_str(), id));
            }
        }
    }
    removals
}

/// Marks recently ended scales as seen: their effect is in the counts already (or never was),
/// so a local change recorded for them must not be added again.
pub(super) fn note_ended<'a>(ended: &'a [Execution], groups: &mut Groups<'a>) {
    for e in ended {
        let Some(gname) = e.scaled_group() else {
            continue;
        };
        if let Some(g) = groups.get_mut(&(e.deployment_id.as_str(), gname)) {
            g.seen_executions.push(e.id.clone());
        }
    }
}

/// Adds the recent failed scale-outs to their groups (a failed scale-in removed nothing CA must
/// be told about; it is only seen).
pub(super) fn apply_failed<'a>(failed: &'a [Execution], now: SystemTime, groups: &mut Groups<'a>) {
    for e in failed.iter().filter(|e| is_recent(e, now)) {
        let Some(gname) = e.scaled_group() else {
            continue;
        };
        let Some(g) = groups.get_mut(&(e.deployment_id.as_str(), gname)) else {
            continue;
        };
        g.seen_executions.push(e.id.clone());
        if let Some(f) = failed_scale_out(&g.deployment, &g.group, e) {
            g.failed.push(f);
        }
    }
}

/// A failed scale-out as CA is told about it: one synthetic instance per missing VM. `None` for
/// a failed scale-in.
fn failed_scale_out(deployment: &str, group: &str, e: &Execution) -> Option<FailedScale> {
    let delta = e.delta();
    if delta <= 0 {
        return None;
    }
    let n = usize::try_from(delta)
        .unwrap_or(0)
        .min(MAX_SYNTHETIC_PER_FAILURE);
    Some(FailedScale {
        execution_id: e.id.clone(),
        error: e.error.clone().unwrap_or_default(),
        synthetic_ids: (0..n)
            .map(|i| synthetic_failed_id(deployment, group, &e.id, i))
            .collect(),
    })
}

/// The synthetic id of the `n`-th missing instance of a failed scale-out.
fn synthetic_failed_id(deployment: &str, group: &str, execution: &str, n: usize) -> String {
    format!("cloudify-failed://{deployment}/{group}/{execution}/{n}")
}

/// True while a failed execution is younger than [`FAILED_SCALE_RETENTION`], by its end time
/// (else its creation time).
fn is_recent(e: &Execution, now: SystemTime) -> bool {
    let stamp = e.ended_at.as_deref().or(e.created_at.as_deref());
    let Some(parsed) = stamp.and_then(parse_time) else {
        // Unknown age: report it; CA deletes the synthetic instances and we forget them.
        return true;
    };
    now.duration_since(parsed)
        .map(|age| age <= FAILED_SCALE_RETENTION)
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{group, groups_a_g, modification, scale};
    use super::*;

    fn source(active: Vec<Execution>, modifications: Vec<DeploymentModification>) -> SourceData {
        SourceData {
            active,
            modifications,
            ..Default::default()
        }
    }

    #[test]
    fn a_modification_of_an_active_execution_puts_it_in_planned() {
        let src = source(
            vec![scale("s", "a", "started", 1, &[])],
            vec![modification("a", Some("s"), 4)],
        );
        let mut groups = groups_a_g();
        let in_planned = void_orphan_modifications(&src, &mut groups);
        assert_eq!(in_planned, HashSet::from(["s"]));
        assert!(!groups[&("a", "g")].orphan_modification);
    }

    /// Issue 19, seen on the real manager: a scale's modification ends 0.4-2.6 s before its
    /// execution leaves `started`. A refresh in that window read the execution started, no
    /// started modification, and planned = current = the size after the scale: the execution
    /// counted as waiting and its delta was added a second time (TargetSize 0 on a group of min
    /// 1 after a scale-in of 2). The refresh reads the ended modification of such an execution.
    #[test]
    fn a_started_execution_whose_modification_ended_is_not_counted_again() {
        for status in ["finished", "rolledback"] {
            let mut ended = modification("a", Some("s"), 1);
            ended.status = status.into();
            let src = source(vec![scale("s", "a", "started", -2, &[])], vec![ended]);
            let mut groups = groups_a_g();
            let in_planned = void_orphan_modifications(&src, &mut groups);
            apply_active(
                &src.active,
                &in_planned,
                &settled_executions(&src),
                &mut groups,
            );
            let g = &groups[&("a", "g")];
            assert!(g.waiting.is_empty(), "{status}: {:?}", g.waiting);
            assert!(g.running.is_empty(), "{status}: it can no longer roll back");
            assert_eq!(g.cloudify_target(), 3, "{status}: planned already shows it");
            assert!(!g.orphan_modification, "{status}");
            assert_eq!(g.seen_executions, ["s"], "{status}");
        }
    }

    #[test]
    fn a_modification_without_an_execution_belongs_to_the_deployments_started_scale() {
        let active = vec![
            scale("q", "a", "queued", 1, &[]),
            scale("other", "b", "started", 1, &[]),
            scale("s", "a", "started", 1, &[]),
        ];
        let m = modification("a", None, 4);
        assert_eq!(modification_owner(&m, &active), Some("s"));
        assert_eq!(modification_owner(&m, &active[..2]), None);
    }

    #[test]
    fn an_orphan_modification_voids_planned_and_marks_the_deployments_groups() {
        let mut m = modification("a", Some("gone"), 4);
        let src = source(Vec::new(), vec![m.clone()]);
        let mut groups = groups_a_g();
        groups.get_mut(&("a", "g")).expect("a/g").planned = 4;
        let mut other = group("a", "h");
        other.planned = 2;
        groups.insert(("a", "h"), other);
        groups.insert(("b", "g"), group("b", "g"));
        assert!(void_orphan_modifications(&src, &mut groups).is_empty());
        let g = &groups[&("a", "g")];
        assert!(g.orphan_modification);
        assert_eq!(g.planned, g.current, "the targeted group counts current");
        let h = &groups[&("a", "h")];
        assert!(
            h.orphan_modification,
            "every group of the deployment aborts it first"
        );
        assert_eq!(h.planned, 2, "an untargeted group keeps its planned count");
        assert!(!groups[&("b", "g")].orphan_modification);

        // A finished modification is no orphan.
        m.status = "finished".into();
        let mut fresh = groups_a_g();
        void_orphan_modifications(&source(Vec::new(), vec![m]), &mut fresh);
        assert!(!fresh[&("a", "g")].orphan_modification);
    }

    #[test]
    fn phases_follow_the_status_and_the_modification() {
        let none = HashSet::new();
        let modifying = HashSet::from(["x"]);
        let phase = |status: &str, delta: i64, in_planned: &HashSet<&str>| {
            phase_of(&scale("x", "a", status, delta, &[]), in_planned)
        };
        assert_eq!(phase("queued", 1, &none), Phase::Waiting);
        assert_eq!(phase("pending", -1, &none), Phase::Waiting);
        assert_eq!(phase("scheduled", 1, &none), Phase::Waiting);
        assert_eq!(
            phase("started", 1, &none),
            Phase::Waiting,
            "before its modification"
        );
        assert_eq!(phase("started", 1, &modifying), Phase::Running);
        assert_eq!(phase("cancelling", 1, &modifying), Phase::Running);
        assert_eq!(phase("cancelling", 1, &none), Phase::Uncounted);
        assert_eq!(phase("started", 0, &modifying), Phase::Uncounted);
    }

    #[test]
    fn apply_active_counts_deltas_and_collects_the_removed_instances() {
        let active = vec![
            scale("q", "a", "queued", 2, &[]),
            scale("s", "a", "started", -1, &["vm_4", "g_vm_5"]),
            scale("u", "a", "queued", -1, &[]),
            scale("elsewhere", "z", "queued", 1, &[]),
        ];
        let mut groups = groups_a_g();
        let removals = apply_active(&active, &HashSet::from(["s"]), &HashSet::new(), &mut groups);
        let g = &groups[&("a", "g")];
        assert_eq!(g.seen_executions, ["q", "s", "u"]);
        let waiting: Vec<(&str, i32, bool)> = g
            .waiting
            .iter()
            .map(|w| (w.id.as_str(), w.delta, w.cancellable))
            .collect();
        assert_eq!(waiting, [("q", 2, true), ("u", -1, true)]);
        assert_eq!(g.running.len(), 1);
        assert_eq!(
            (g.running[0].id.as_str(), g.running[0].cancellable),
            ("s", false)
        );
        assert!(removals.names("a", ["vm_4"], "g_vm_4"));
        assert!(removals.names("a", ["vm_5"], "g_vm_5"), "by group instance");
        assert!(!removals.names("a", ["vm_6"], "g_vm_6"));
        assert!(
            removals.names("a", ["vm_6", "vm_4"], "g_x"),
            "by any VM of the group instance"
        );
        assert!(
            !removals.names("b", ["vm_4"], "g_vm_4"),
            "another deployment's vm_4"
        );
        assert!(removals.unhinted_in("a"), "u names nothing");
        assert!(!removals.unhinted_in("z"), "z's execution scales out");
    }

    #[test]
    fn a_huge_delta_saturates_into_int32() {
        let active = vec![scale("x", "a", "queued", i64::MIN, &[])];
        let mut groups = groups_a_g();
        apply_active(&active, &HashSet::new(), &HashSet::new(), &mut groups);
        assert_eq!(groups[&("a", "g")].waiting[0].delta, i32::MIN);
    }

    #[test]
    fn ended_scales_are_only_seen() {
        let ended = [scale("t", "a", "terminated", 1, &[])];
        let mut groups = groups_a_g();
        note_ended(&ended, &mut groups);
        let g = &groups[&("a", "g")];
        assert_eq!(g.seen_executions, ["t"]);
        assert!(g.waiting.is_empty() && g.running.is_empty() && g.failed.is_empty());
    }

    #[test]
    fn a_recent_failed_scale_out_reports_its_missing_instances() {
        let now = SystemTime::now();
        let mut recent = scale("f", "a", "failed", 2, &[]);
        recent.ended_at = Some(chrono::Utc::now().to_rfc3339());
        let mut old = scale("old", "a", "failed", 5, &[]);
        old.ended_at = Some("2020-01-01T00:00:00.000".into());
        let scale_in = scale("in", "a", "failed", -1, &[]);
        let failed = [recent, old, scale_in];
        let mut groups = groups_a_g();
        apply_failed(&failed, now, &mut groups);
        let g = &groups[&("a", "g")];
        assert_eq!(
            g.seen_executions,
            ["f", "in"],
            "the old failure is forgotten"
        );
        assert_eq!(g.failed.len(), 1);
        assert_eq!(g.failed[0].error, "boom");
        assert_eq!(
            g.failed[0].synthetic_ids,
            ["cloudify-failed://a/g/f/0", "cloudify-failed://a/g/f/1"]
        );
    }

    #[test]
    fn a_failed_scale_out_reports_at_most_a_thousand_instances() {
        let f = failed_scale_out("a", "g", &scale("f", "a", "failed", i64::MAX, &[]));
        assert_eq!(
            f.map(|f| f.synthetic_ids.len()),
            Some(MAX_SYNTHETIC_PER_FAILURE)
        );
    }

    #[test]
    fn age_is_read_from_the_end_time_then_the_creation_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |secs_before: u64| {
            let t = chrono::DateTime::<chrono::Utc>::from(now - Duration::from_secs(secs_before));
            t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
        };
        let mut e = scale("f", "a", "failed", 1, &[]);
        assert!(is_recent(&e, now), "no time at all: reported");
        e.created_at = Some(at(3600));
        assert!(!is_recent(&e, now), "created an hour ago, no end time");
        e.ended_at = Some(at(60));
        assert!(is_recent(&e, now), "ended a minute ago");
        e.ended_at = Some("yesterday".into());
        assert!(is_recent(&e, now), "unreadable: reported");
    }

    #[test]
    fn timestamps_with_and_without_a_zone_are_utc() {
        let with_zone = parse_time("2026-11-27T23:00:00.123Z");
        assert_eq!(with_zone, parse_time("2026-11-27T23:00:00.123"));
        assert_eq!(with_zone, parse_time("2026-11-28T00:00:00.5+01:00"));
        assert_eq!(
            with_zone,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_820_400))
        );
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), None, "before the epoch");
        assert_eq!(parse_time("not a time"), None);
    }
}
