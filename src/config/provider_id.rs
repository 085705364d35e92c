//! Provider-id templates: how an instance's id (= the Kubernetes `spec.providerID`) is rendered.

/// Default template, what the example blueprint's kubelet `--provider-id` uses.
pub const DEFAULT_PROVIDER_ID_TEMPLATE: &str = "cloudify://{tenant}/{deployment}/{vm_instance}";

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text between placeholders, copied as is.
    Literal(String),
    /// `{tenant}`.
    Tenant,
    /// `{deployment}`.
    Deployment,
    /// `{group}`: scaling group name.
    Group,
    /// `{group_instance}`: group instance id.
    GroupInstance,
    /// `{vm_instance}`: VM node-instance id.
    VmInstance,
    /// `{runtime.<key>}`: a runtime property of the VM instance.
    Runtime(String),
}

/// A parsed provider-id template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderIdTemplate {
    source: String,
    segments: Vec<Segment>,
}

/// The values a template is rendered from.
pub struct ProviderIdParts<'a> {
    /// `{tenant}`: the Cloudify tenant the entry talks to.
    pub tenant: &'a str,
    /// `{deployment}`: the deployment holding the scaling group.
    pub deployment: &'a str,
    /// `{group}`: the scaling group name.
    pub group: &'a str,
    /// `{group_instance}`: the scaling-group instance (the unit Cloudify adds and removes).
    pub group_instance: &'a str,
    /// `{vm_instance}`: the VM's node-instance id inside that group instance.
    pub vm_instance: &'a str,
}

impl ProviderIdTemplate {
    /// Parses `cloudify://{tenant}/{deployment}/{vm_instance}`-style text; an unknown placeholder
    /// or an unclosed brace is an error (the message says which).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            if start > 0 {
                segments.push(Segment::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 1..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
            let name = &after[..end];
            segments.push(match name {
                "tenant" => Segment::Tenant,
                "deployment" => Segment::Deployment,
                "group" => Segment::Group,
                "group_instance" => Segment::GroupInstance,
                "vm_instance" => Segment::VmInstance,
                n if n.starts_with("runtime.") && n.len() > "runtime.".len() => {
                    Segment::Runtime(n["runtime.".len()..].to_owned())
                }
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}} in {text:?} (known: {{tenant}} {{deployment}} \
                         {{group}} {{group_instance}} {{vm_instance}} {{runtime.<key>}})"
                    ));
                }
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        if segments.is_empty() {
            return Err("empty template".into());
        }
        let per_instance = segments.iter().any(|s| {
            matches!(
                s,
                Segment::VmInstance | Segment::GroupInstance | Segment::Runtime(_)
            )
        });
        if !per_instance {
            // Every instance of a group would get the same id, and DeleteNodes would remove
            // whichever VM the index kept (issue 20).
            return Err(format!(
                "{text:?} renders the same id for every instance of a group: it needs a \
                 per-instance placeholder, {{vm_instance}}, {{group_instance}} or \
                 {{runtime.<key>}} (e.g. \"{DEFAULT_PROVIDER_ID_TEMPLATE}\")"
            ));
        }
        Ok(ProviderIdTemplate {
            source: text.to_owned(),
            segments,
        })
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The part of every id of one group that does not depend on the instance: the template
    /// rendered up to its first instance-specific placeholder (`cloudify://t/d/` for the default).
    /// The node controller uses it to tell a managed Node whose instance is gone from a Node of
    /// another pool; an empty or scheme-only prefix claims nothing.
    pub fn group_prefix(&self, tenant: &str, deployment: &str, group: &str) -> Option<String> {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Tenant => out.push_str(tenant),
                Segment::Deployment => out.push_str(deployment),
                Segment::Group => out.push_str(group),
                _ => break,
            }
        }
        let after_scheme = out.split_once("://").map_or(out.as_str(), |(_, r)| r);
        (!after_scheme.trim_matches('/').is_empty()).then_some(out)
    }

    /// Renders the id; `None` when a runtime property it needs is not set yet (VM still being
    /// created). `runtime` looks a property up on the VM instance.
    pub fn render(
        &self,
        parts: &ProviderIdParts<'_>,
        runtime: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let mut out = String::with_capacity(64);
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Tenant => out.push_str(parts.tenant),
                Segment::Deployment => out.push_str(parts.deployment),
                Segment::Group => out.push_str(parts.group),
                Segment::GroupInstance => out.push_str(parts.group_instance),
                Segment::VmInstance => out.push_str(parts.vm_instance),
                Segment::Runtime(k) => out.push_str(&runtime(k)?),
            }
        }
        Some(out)
    }
}

impl Default for ProviderIdTemplate {
    fn default() -> Self {
        // The default template is a constant that parses; fall back to a literal-only template
        // rather than panicking should that ever change.
        ProviderIdTemplate::parse(DEFAULT_PROVIDER_ID_TEMPLATE).unwrap_or(ProviderIdTemplate {
            source: DEFAULT_PROVIDER_ID_TEMPLATE.to_owned(),
            segments: vec![Segment::VmInstance],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> ProviderIdParts<'static> {
        ProviderIdParts {
            tenant: "t",
            deployment: "d",
            group: "g",
            group_instance: "g_1",
            vm_instance: "vm_1",
        }
    }

    #[test]
    fn renders_default_and_runtime_placeholders() {
        let t = ProviderIdTemplate::default();
        assert_eq!(
            t.render(&parts(), |_| None).as_deref(),
            Some("cloudify://t/d/vm_1")
        );
        let t = ProviderIdTemplate::parse("openstack:///{runtime.external_id}").expect("parse");
        assert_eq!(t.render(&parts(), |_| None), None);
        assert_eq!(
            t.render(&parts(), |k| (k == "external_id").then(|| "u-1".to_owned()))
                .as_deref(),
            Some("openstack:///u-1")
        );
    }

    #[test]
    fn group_prefix_stops_at_the_first_instance_placeholder() {
        let t = ProviderIdTemplate::default();
        assert_eq!(
            t.group_prefix("t", "d", "g").as_deref(),
            Some("cloudify://t/d/")
        );
        let t = ProviderIdTemplate::parse("x://{group}/{group_instance}").expect("parse");
        assert_eq!(t.group_prefix("t", "d", "g").as_deref(), Some("x://g/"));
        // Nothing group-specific before the instance part: no prefix, claims nothing.
        let t = ProviderIdTemplate::parse("openstack:///{runtime.external_id}").expect("parse");
        assert_eq!(t.group_prefix("t", "d", "g"), None);
    }

    #[test]
    fn rejects_a_template_without_a_per_instance_placeholder() {
        for text in [
            "cloudify://{tenant}/{deployment}/{group}",
            "static-id",
            "x://{tenant}",
        ] {
            let e = ProviderIdTemplate::parse(text).expect_err(text);
            assert!(
                e.contains("renders the same id for every instance")
                    && e.contains("{vm_instance}, {group_instance} or {runtime.<key>}"),
                "{e}"
            );
        }
        for text in [
            "x://{group_instance}",
            "openstack:///{runtime.external_id}",
            DEFAULT_PROVIDER_ID_TEMPLATE,
        ] {
            assert!(ProviderIdTemplate::parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn rejects_unknown_placeholders() {
        assert!(
            ProviderIdTemplate::parse("x/{nope}")
                .unwrap_err()
                .contains("{nope}")
        );
        assert!(ProviderIdTemplate::parse("x/{tenant").is_err());
        assert!(ProviderIdTemplate::parse("{runtime.}").is_err());
    }
}
