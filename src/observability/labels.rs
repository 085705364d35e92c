//! The label sets of the metrics, each value from a closed vocabulary (issue 24): an enum with
//! `as_str`, a `&'static str` written in this program (RPC names, route templates), or a number.
//! The one open value, a node group's id, is named by Cloudify and escaped on output (issue 20).

use std::fmt::Write as _;

use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};

/// An enum of label values: each variant's value is the text given, written by `as_str`.
macro_rules! label_values {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_values! {
    /// A listening port of the process.
    Port {
        /// The gRPC port CA calls.
        Grpc => "grpc",
        /// The plain HTTP port (`/healthz`, `/readyz`, `/metrics`, `/nodes`).
        Http => "http",
    }
}

label_values! {
    /// Which way a scale execution goes.
    ScaleDirection {
        /// IncreaseSize.
        Up => "up",
        /// DeleteNodes.
        Down => "down",
        /// DecreaseTargetSize, cancelling a queued scale-out.
        Cancel => "cancel",
    }
}

label_values! {
    /// What became of a scale execution.
    ScaleResult {
        /// Cloudify took it.
        Accepted => "accepted",
        /// Refused before any Cloudify call (IncreaseSize above max).
        Rejected => "rejected",
        /// The REST call that starts or cancels it failed.
        Error => "error",
        /// A scale-in ended and removed exactly the named instances.
        Terminated => "terminated",
        /// A scale-in ended `failed`.
        Failed => "failed",
        /// A scale-in ended `cancelled`.
        Cancelled => "cancelled",
        /// A scale-in removed other instances than the named ones.
        Mismatch => "mismatch",
        /// A scale-in ended in a status this program does not know.
        Other => "other",
    }
}

label_values! {
    /// How a refresh ended.
    RefreshResult {
        /// A new snapshot is served.
        Ok => "ok",
        /// The old snapshot stays: Cloudify failed or answered what cannot be read.
        Error => "error",
        /// The old snapshot stays: Cloudify's answers contradicted each other on every reading
        /// (issue 20 item 6).
        Inconsistent => "inconsistent",
    }
}

label_values! {
    /// What the node controller did to a shutdown taint.
    TaintAction {
        /// Added to a Node whose VM is stopped.
        Added => "added",
        /// Removed from a Node that is Ready again.
        Removed => "removed",
    }
}

label_values! {
    /// What the service controller did to a Service's load balancer (issue 23).
    LbAction {
        /// Created its Cloudify deployment.
        Create => "create",
        /// Started the deployment's install workflow.
        Install => "install",
        /// Started an update of the deployment (new ports or backend Nodes).
        Update => "update",
        /// Started the deployment's uninstall workflow.
        Uninstall => "uninstall",
        /// Deleted the deployment.
        Delete => "delete",
        /// Wrote the Service's status (its address, or cleared it).
        Status => "status",
    }
}

label_values! {
    /// A gRPC status code as tonic names it.
    GrpcCode {
        /// OK.
        Ok => "Ok",
        /// CANCELLED.
        Cancelled => "Cancelled",
        /// UNKNOWN.
        Unknown => "Unknown",
        /// INVALID_ARGUMENT.
        InvalidArgument => "InvalidArgument",
        /// DEADLINE_EXCEEDED.
        DeadlineExceeded => "DeadlineExceeded",
        /// NOT_FOUND.
        NotFound => "NotFound",
        /// ALREADY_EXISTS.
        AlreadyExists => "AlreadyExists",
        /// PERMISSION_DENIED.
        PermissionDenied => "PermissionDenied",
        /// RESOURCE_EXHAUSTED.
        ResourceExhausted => "ResourceExhausted",
        /// FAILED_PRECONDITION.
        FailedPrecondition => "FailedPrecondition",
        /// ABORTED.
        Aborted => "Aborted",
        /// OUT_OF_RANGE.
        OutOfRange => "OutOfRange",
        /// UNIMPLEMENTED.
        Unimplemented => "Unimplemented",
        /// INTERNAL.
        Internal => "Internal",
        /// UNAVAILABLE.
        Unavailable => "Unavailable",
        /// DATA_LOSS.
        DataLoss => "DataLoss",
        /// UNAUTHENTICATED.
        Unauthenticated => "Unauthenticated",
    }
}

/// What Cloudify answered a request: its HTTP status, or no answer at all.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Answer {
    /// The HTTP status code.
    Status(u16),
    /// No answer (connection refused, reset, timeout): the label value `error`.
    None,
}

impl EncodeLabelValue for Answer {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        match self {
            Answer::Status(code) => write!(encoder, "{code}"),
            Answer::None => encoder.write_str("error"),
        }
    }
}

/// Labels of gRPC request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// RPC method name, e.g. `NodeGroupIncreaseSize`.
    pub method: &'static str,
    /// gRPC status code.
    pub code: GrpcCode,
}

/// Labels of per-method histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// RPC method name.
    pub method: &'static str,
}

/// Labels of Cloudify request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloudifyLabels {
    /// Method and templated path, e.g. `GET /node-instances`.
    pub route: &'static str,
    /// HTTP status, or `error` when no answer arrived.
    pub status: Answer,
}

/// Labels of per-route histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Method and templated path.
    pub route: &'static str,
}

/// Labels keyed by node group.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct GroupLabels {
    /// Node group id: `<deployment>/<group>` as Cloudify names them, so any text (escaped on
    /// output).
    pub group: String,
}

impl EncodeLabelSet for GroupLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        ("group", Escaped(&self.group)).encode(encoder.encode_label())
    }
}

/// A label value from outside (a Cloudify name), written as the text format requires:
/// prometheus-client writes label values as they are, so a `"` would end the value early and a
/// newline would start a sample of the sender's choosing (issue 20).
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Labels of scale execution counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleLabels {
    /// Which way.
    pub direction: ScaleDirection,
    /// What became of it.
    pub result: ScaleResult,
}

/// Labels of the build information gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The provider's version (`CARGO_PKG_VERSION`), to tell replicas of different releases apart.
    pub version: &'static str,
}

/// Labels of refresh counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// How the refresh ended.
    pub result: RefreshResult,
}

/// Labels of the node controller's taint counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// Added or removed.
    pub action: TaintAction,
}

/// Labels of the service controller's action counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LbActionLabels {
    /// What was done.
    pub action: LbAction,
}

/// Labels of the service controller's phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// One of the service controller's phases (`creating`, `installing`, `updating`, `active`,
    /// `failed`, `uninstalling`, `deleting`, ...), a word written in this program.
    pub phase: &'static str,
}

/// Labels of the connection metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    /// Which port.
    pub port: Port,
}
