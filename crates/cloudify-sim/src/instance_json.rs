//! Node instances serialized straight to JSON, without building `serde_json::Value` trees.
//!
//! Node-instance pages are the hot path of a refresh (a 200k-instance manager answers 200 of
//! them per full refresh); building a `Value` per instance cost ~20 µs, mostly malloc/free.
//! This one `Serialize` impl is also the single definition of the shape: `Listable::render`
//! for `NodeInstance` goes through it.

use std::fmt::Display;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::query::ListQuery;
use super::state::{NodeInstance, Runtime};

/// A node instance, optionally projected onto `_include` fields.
pub(crate) struct InstanceJson<'a> {
    pub inst: &'a NodeInstance,
    pub include: Option<&'a [String]>,
}

/// Serializes a `Display` value as a JSON string without allocating.
struct AsStr<T>(T);

impl<T: Display> Serialize for AsStr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

struct RuntimeJson<'a>(&'a Runtime);

impl Serialize for RuntimeJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Runtime::Empty => s.serialize_map(Some(0))?.end(),
            Runtime::Vm {
                external_id,
                ip,
                hostname,
            } => {
                let mut m = s.serialize_map(Some(7))?;
                m.serialize_entry("external_id", external_id)?;
                m.serialize_entry("external_name", hostname)?;
                m.serialize_entry("external_type", "server")?;
                m.serialize_entry("ip", &AsStr(ip))?;
                m.serialize_entry("ipv4_address", &AsStr(ip))?;
                m.serialize_entry("networks", &Networks(ip))?;
                m.serialize_entry("hostname", hostname)?;
                m.end()
            }
            Runtime::Port { external_id, ip } => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("external_id", external_id)?;
                m.serialize_entry("external_type", "port")?;
                m.serialize_entry("fixed_ip_address", &AsStr(ip))?;
                m.end()
            }
        }
    }
}

struct Networks<'a>(&'a std::net::Ipv4Addr);

impl Serialize for Networks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("private", &[AsStr(self.0)])?;
        m.end()
    }
}

struct Relationships<'a>(&'a [(&'static str, String, String)]);

impl Serialize for Relationships<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (kind, target_name, target_id) in self.0 {
            seq.serialize_element(&Relationship {
                kind,
                target_name,
                target_id,
            })?;
        }
        seq.end()
    }
}

struct Relationship<'a> {
    kind: &'a str,
    target_name: &'a str,
    target_id: &'a str,
}

impl Serialize for Relationship<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("type", self.kind)?;
        m.serialize_entry("target_name", self.target_name)?;
        m.serialize_entry("target_id", self.target_id)?;
        m.end()
    }
}

struct GroupRefs<'a>(&'a NodeInstance);

impl Serialize for GroupRefs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(usize::from(self.0.group.is_some())))?;
        if let Some((name, id)) = &self.0.group {
            seq.serialize_element(&GroupRef { name, id })?;
        }
        seq.end()
    }
}

struct GroupRef<'a> {
    name: &'a str,
    id: &'a str,
}

impl Serialize for GroupRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("name", self.name)?;
        m.serialize_entry("id", self.id)?;
        m.end()
    }
}

impl Serialize for InstanceJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.inst;
        let want = |f: &str| self.include.is_none_or(|inc| inc.iter().any(|x| x == f));
        let mut m = s.serialize_map(None)?;
        if want("id") {
            m.serialize_entry("id", &i.id)?;
        }
        if want("node_id") {
            m.serialize_entry("node_id", &*i.node_id)?;
        }
        if want("deployment_id") {
            m.serialize_entry("deployment_id", &*i.deployment_id)?;
        }
        if want("host_id") {
            m.serialize_entry("host_id", &i.host_id)?;
        }
        if want("state") {
            m.serialize_entry("state", i.state)?;
        }
        if want("runtime_properties") {
            m.serialize_entry("runtime_properties", &RuntimeJson(&i.runtime))?;
        }
        if want("system_properties") {
            m.serialize_entry("system_properties", &RuntimeJson(&Runtime::Empty))?;
        }
        if want("relationships") {
            m.serialize_entry("relationships", &Relationships(&i.relationships))?;
        }
        if want("scaling_groups") {
            m.serialize_entry("scaling_groups", &GroupRefs(i))?;
        }
        if want("version") {
            m.serialize_entry("version", &i.version)?;
        }
        if want("index") {
            m.serialize_entry("index", &i.index)?;
        }
        if want("has_configuration_drift") {
            m.serialize_entry("has_configuration_drift", &false)?;
        }
        if want("is_status_check_ok") {
            m.serialize_entry("is_status_check_ok", &(i.state == "started"))?;
        }
        if want("tenant_name") {
            m.serialize_entry("tenant_name", &*i.tenant)?;
        }
        if want("created_by") {
            m.serialize_entry("created_by", &*i.created_by)?;
        }
        if want("visibility") {
            m.serialize_entry("visibility", "tenant")?;
        }
        if want("private_resource") {
            m.serialize_entry("private_resource", &false)?;
        }
        if want("resource_availability") {
            m.serialize_entry("resource_availability", "tenant")?;
        }
        m.end()
    }
}

struct Items<'a> {
    page: &'a [&'a NodeInstance],
    include: Option<&'a [String]>,
}

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.page.len()))?;
        for inst in self.page {
            seq.serialize_element(&InstanceJson {
                inst,
                include: self.include,
            })?;
        }
        seq.end()
    }
}

/// The list envelope of a node-instance page, serialized to bytes.
pub(crate) fn instance_page(
    page: &[&NodeInstance],
    total: usize,
    q: &ListQuery,
) -> Result<Vec<u8>, serde_json::Error> {
    let (size, offset) = if q.get_all {
        (total, 0)
    } else {
        (q.size, q.offset)
    };
    let body = serde_json::json!({
        "metadata": {
            "pagination": {"total": total, "size": size, "offset": offset},
            "filtered": null,
        }
    });
    // Items are streamed; only the small metadata object is a `Value`.
    let mut out = Vec::with_capacity(page.len() * 700 + 128);
    let mut ser = serde_json::Serializer::new(&mut out);
    let mut m = ser.serialize_map(Some(2))?;
    m.serialize_entry(
        "items",
        &Items {
            page,
            include: q.include.as_deref(),
        },
    )?;
    m.serialize_entry("metadata", &body["metadata"])?;
    SerializeMap::end(m)?;
    Ok(out)
}
