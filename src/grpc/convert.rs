//! Conversions between proto messages and domain types.

use std::time::Duration;

use crate::inventory::InstanceState;
use crate::nodegroup::template::AutoscalingOptions;
use crate::nodegroup::{DomainError, ErrorClass, GroupView, InstanceView};
use crate::proto;
use crate::proto::instance_status::InstanceState as PState;

pub fn node_group(g: GroupView) -> proto::NodeGroup {
    proto::NodeGroup {
        id: g.id,
        min_size: g.min,
        max_size: g.max,
        debug: g.debug,
    }
}

pub fn node_refs(nodes: &[proto::ExternalGrpcNode]) -> Vec<crate::nodegroup::NodeRef> {
    nodes
        .iter()
        .map(|n| crate::nodegroup::NodeRef {
            provider_id: n.provider_id.clone(),
            name: n.name.clone(),
        })
        .collect()
}

pub fn instance(i: InstanceView) -> proto::Instance {
    let state = match i.state {
        InstanceState::Running => PState::InstanceRunning,
        InstanceState::Creating => PState::InstanceCreating,
        InstanceState::Deleting => PState::InstanceDeleting,
    };
    proto::Instance {
        id: i.id,
        status: Some(proto::InstanceStatus {
            instance_state: state as i32,
            error_info: i.error.map(|e| proto::InstanceErrorInfo {
                error_code: cut(e.code, proto::MAX_ERROR_CODE_BYTES),
                error_message: cut(e.message, proto::MAX_ERROR_MESSAGE_BYTES),
                instance_error_class: match e.class {
                    ErrorClass::OutOfResources => 1,
                    ErrorClass::Other => 99,
                },
            }),
        }),
    }
}

/// `text` cut to at most `max` bytes on a character boundary, the cut marked with `…`: every
/// instance of a NodeGroupNodes answer stays within the size the group limit counts with
/// (`proto::instances_per_answer`).
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// Hours between two timestamps (0 when either is missing); an end before the start is invalid.
pub fn hours(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> Result<f64, DomainError> {
    let (Some(s), Some(e)) = (start, end) else {
        return Ok(0.0);
    };
    let secs = (e.seconds as f64 + f64::from(e.nanos) / 1e9)
        - (s.seconds as f64 + f64::from(s.nanos) / 1e9);
    if !secs.is_finite() || secs < 0.0 {
        return Err(DomainError::InvalidArgument(
            "end time is before start time".into(),
        ));
    }
    Ok(secs / 3600.0)
}

fn from_google(d: Option<&prost_types::Duration>) -> Option<Duration> {
    let d = d?;
    if d.seconds < 0 || d.nanos < 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(d.seconds).ok()?,
        u32::try_from(d.nanos).ok()?,
    ))
}

fn from_legacy(d: Option<&proto::LegacyDuration>) -> Option<Duration> {
    u64::try_from(d?.duration).ok().map(Duration::from_nanos)
}

fn to_google(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn to_legacy(d: Duration) -> proto::LegacyDuration {
    proto::LegacyDuration {
        duration: i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Reads the request defaults: new fields 8/9/10 first, legacy 3/4/5 as fallback.
pub fn options_from_proto(o: Option<&proto::NodeGroupAutoscalingOptions>) -> AutoscalingOptions {
    let Some(o) = o else {
        return AutoscalingOptions::default();
    };
    AutoscalingOptions {
        scale_down_utilization_threshold: o.scale_down_utilization_threshold,
        scale_down_gpu_utilization_threshold: o.scale_down_gpu_utilization_threshold,
        scale_down_unneeded_time: from_google(o.scale_down_unneeded_duration.as_ref())
            .or_else(|| from_legacy(o.scale_down_unneeded_time.as_ref())),
        scale_down_unready_time: from_google(o.scale_down_unready_duration.as_ref())
            .or_else(|| from_legacy(o.scale_down_unready_time.as_ref())),
        max_node_provision_time: from_google(o.max_node_provision_duration.as_ref())
            .or_else(|| from_legacy(o.max_node_provision_time.as_ref())),
        zero_or_max_node_scaling: o.zero_or_max_node_scaling,
        ignore_daemonsets_utilization: o.ignore_daemon_sets_utilization,
    }
}

/// Writes both the new (8/9/10) and the legacy (3/4/5) duration fields.
pub fn options_to_proto(o: &AutoscalingOptions) -> proto::NodeGroupAutoscalingOptions {
    proto::NodeGroupAutoscalingOptions {
        scale_down_utilization_threshold: o.scale_down_utilization_threshold,
        scale_down_gpu_utilization_threshold: o.scale_down_gpu_utilization_threshold,
        scale_down_unneeded_time: o.scale_down_unneeded_time.map(to_legacy),
        scale_down_unready_time: o.scale_down_unready_time.map(to_legacy),
        max_node_provision_time: o.max_node_provision_time.map(to_legacy),
        zero_or_max_node_scaling: o.zero_or_max_node_scaling,
        ignore_daemon_sets_utilization: o.ignore_daemonsets_utilization,
        scale_down_unneeded_duration: o.scale_down_unneeded_time.map(to_google),
        scale_down_unready_duration: o.scale_down_unready_time.map(to_google),
        max_node_provision_duration: o.max_node_provision_time.map(to_google),
    }
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn long_error_texts_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short".into(), 8), "short");
        let cut_text = cut("ééééé".into(), 8);
        assert_eq!(cut_text, "éé…");
        assert!(cut_text.len() <= 8);
        assert_eq!(cut("x".repeat(300), 256).len(), 256);
    }
}
