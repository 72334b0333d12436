//! The journal's on-disk format: record types of its own, separate from the engine's
//! in-memory structs, with a version. Versions 2 and 3 store each resource as its kind and
//! a map of parameters; version 1 (sftsan before typed records) stored the serialized
//! resource itself. Version 3 gave the kernel backend's tgt relay its own kind
//! (`tgt-relay`); versions 1 and 2 journaled it as `origin-target`. Older versions are read
//! and converted. A change to what a resource kind stores must either keep reading the old
//! records or bump the version with a conversion: the golden test in this module's tests
//! fails otherwise.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::{Entry, EntryState, JournalData};
use crate::error::{Error, Result};
use crate::plan::ResourceSpec;
use crate::transport::TransportSpec;

/// The version this sftsan writes.
pub const CURRENT: u32 = 3;

/// A journal file of version 2 or 3 (the same records; 3 knows the `tgt-relay` kind).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV2 {
    version: u32,
    cluster: String,
    transports: BTreeMap<String, TransportRecord>,
    levels: Vec<Vec<String>>,
    entries: Vec<EntryRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryRecord {
    id: String,
    node: Option<String>,
    state: StateRecord,
    /// The resource kind, as the resource enum tags it (`daemon`, `block-store`).
    kind: String,
    /// The resource's parameters, without its kind.
    params: Map<String, Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    runtime: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StateRecord {
    Creating,
    Created,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum TransportRecord {
    Local,
    Netns { name: String },
}

/// A journal file of version 1: the in-memory structs as they were serialized then.
#[derive(Debug, Clone, Deserialize)]
struct FileV1 {
    cluster: String,
    transports: BTreeMap<String, TransportRecord>,
    levels: Vec<Vec<String>>,
    entries: Vec<EntryV1>,
}

#[derive(Debug, Clone, Deserialize)]
struct EntryV1 {
    id: String,
    node: Option<String>,
    state: StateRecord,
    /// `{"kind": ..., ...parameters}`
    resource: Map<String, Value>,
    #[serde(default)]
    runtime: BTreeMap<String, String>,
}

fn corrupt(detail: impl Into<String>) -> Error {
    Error::corrupt("journal", format!("is damaged: {}", detail.into()))
}

/// Reads a journal of any version this sftsan knows.
pub fn parse(text: &str) -> Result<JournalData> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let Version { version } = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    match version {
        2 | CURRENT => {
            let file: FileV2 = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
            from_v2(file, version)
        }
        1 => {
            let file: FileV1 = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
            from_v1(file)
        }
        other => Err(corrupt(format!(
            "version {other} (this sftsan reads 1 to {CURRENT})"
        ))),
    }
}

/// The journal as this sftsan writes it.
pub fn to_text(data: &JournalData) -> String {
    let file = FileV2 {
        version: CURRENT,
        cluster: data.cluster.clone(),
        transports: data
            .transports
            .iter()
            .map(|(k, t)| (k.clone(), transport_record(t)))
            .collect(),
        levels: data.levels.clone(),
        entries: data.entries.iter().map(entry_record).collect(),
    };
    serde_json::to_string_pretty(&file).expect("a journal always serializes")
}

fn transport_record(t: &TransportSpec) -> TransportRecord {
    match t {
        TransportSpec::Local => TransportRecord::Local,
        TransportSpec::Netns { name } => TransportRecord::Netns { name: name.clone() },
    }
}

fn transport_spec(t: TransportRecord) -> TransportSpec {
    match t {
        TransportRecord::Local => TransportSpec::Local,
        TransportRecord::Netns { name } => TransportSpec::Netns { name },
    }
}

fn entry_record(e: &Entry) -> EntryRecord {
    let Value::Object(mut params) =
        serde_json::to_value(&e.resource).expect("a resource always serializes")
    else {
        unreachable!("a resource serializes to an object");
    };
    // The kind as the resource enum tags it (`block-store`), which reads it back.
    let kind = match params.remove("kind") {
        Some(Value::String(kind)) => kind,
        _ => unreachable!("a resource carries its kind"),
    };
    EntryRecord {
        id: e.id.clone(),
        node: e.node.clone(),
        state: match e.state {
            EntryState::Creating => StateRecord::Creating,
            EntryState::Created => StateRecord::Created,
        },
        kind,
        params,
        runtime: e.runtime.clone(),
    }
}

/// Before version 3 a kernel node's tgt relay was journaled as the origin's target kind
/// (`origin-target`, id `<node>/origin-target`); a relay is the one with a dm source.
fn relay_kind_before_v3(kind: String, id: String, params: &Map<String, Value>) -> (String, String) {
    let relay = kind == "origin-target" && params.get("source_dm").is_some_and(|v| !v.is_null());
    if !relay {
        return (kind, id);
    }
    let id = match id.strip_suffix("/origin-target") {
        Some(node) => format!("{node}/tgt-relay"),
        None => id,
    };
    ("tgt-relay".into(), id)
}

fn resource(kind: &str, mut params: Map<String, Value>, id: &str) -> Result<ResourceSpec> {
    params.insert("kind".into(), Value::String(kind.into()));
    serde_json::from_value(Value::Object(params))
        .map_err(|e| corrupt(format!("entry {id:?} ({kind}): {e}")))
}

fn entry(
    id: String,
    node: Option<String>,
    state: StateRecord,
    resource: ResourceSpec,
    runtime: BTreeMap<String, String>,
) -> Entry {
    Entry {
        id,
        node,
        state: match state {
            StateRecord::Creating => EntryState::Creating,
            StateRecord::Created => EntryState::Created,
        },
        resource,
        runtime,
    }
}

/// What both formats share besides their entries.
fn journal_data(
    cluster: String,
    transports: BTreeMap<String, TransportRecord>,
    levels: Vec<Vec<String>>,
    entries: Vec<Entry>,
) -> JournalData {
    JournalData {
        cluster,
        transports: transports
            .into_iter()
            .map(|(k, t)| (k, transport_spec(t)))
            .collect(),
        levels,
        entries,
    }
}

fn from_v2(file: FileV2, version: u32) -> Result<JournalData> {
    let entries = file
        .entries
        .into_iter()
        .map(|e| {
            let (kind, id) = match version {
                2 => relay_kind_before_v3(e.kind, e.id, &e.params),
                _ => (e.kind, e.id),
            };
            let r = resource(&kind, e.params, &id)?;
            Ok(entry(id, e.node, e.state, r, e.runtime))
        })
        .collect::<Result<_>>()?;
    Ok(journal_data(
        file.cluster,
        file.transports,
        file.levels,
        entries,
    ))
}

fn from_v1(file: FileV1) -> Result<JournalData> {
    let entries = file
        .entries
        .into_iter()
        .map(|e| {
            let mut params = e.resource;
            let kind = match params.remove("kind") {
                Some(Value::String(k)) => k,
                _ => return Err(corrupt(format!("entry {:?} has no resource kind", e.id))),
            };
            let (kind, id) = relay_kind_before_v3(kind, e.id, &params);
            let r = resource(&kind, params, &id)?;
            Ok(entry(id, e.node, e.state, r, e.runtime))
        })
        .collect::<Result<_>>()?;
    Ok(journal_data(
        file.cluster,
        file.transports,
        file.levels,
        entries,
    ))
}
