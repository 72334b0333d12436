//! Changing the members of a running cluster: `node add` puts a new node at the end of the
//! tree; `node remove` takes one out gracefully. The nodes below it (and, as the list
//! closes up, the nodes after it) are told their new place first, their upstream switches
//! move while their readers go on, and only then is its stack torn down. The spec file is
//! rewritten last (comments and layout kept), so it always names what runs.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::backends::userspace::switch::{report_file, Report};
use crate::cluster::validate_here;
use crate::engine::{Engine, Summary};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::plan::{Plan, ResourceSpec};
use crate::spec::{Backend, ClusterSpec, Mode, ValidatedSpec};

/// How long the nodes below a removed node may take to leave it.
const MOVE_DEADLINE: Duration = Duration::from_secs(15);

/// The spec at `path` with its text, for editing.
fn read(path: &Path) -> Result<(String, toml_edit::DocumentMut)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let doc = text
        .parse::<toml_edit::DocumentMut>()
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
    Ok((text, doc))
}

/// Validates an edited spec as `up` would; nothing is touched when it fails.
fn validated(path: &Path, doc: &toml_edit::DocumentMut) -> Result<ValidatedSpec> {
    let shown = path.display().to_string();
    let spec = ClusterSpec::from_toml(&doc.to_string())
        .map_err(|e| Error::from(e).context(shown.clone()))?;
    if spec.cluster.mode == Mode::Remote {
        return Err(Error::unsupported(
            "cluster.mode",
            "\"remote\": nodes join and leave local and host clusters only (yet)",
        ));
    }
    if spec.cluster.backend == Backend::Kernel {
        return Err(Error::unsupported(
            "cluster.backend",
            "\"kernel\": nodes join and leave userspace clusters only (yet)",
        ));
    }
    validate_here(spec).map_err(|e| e.context(shown))
}

fn nodes_of(doc: &mut toml_edit::DocumentMut) -> Result<&mut toml_edit::ArrayOfTables> {
    doc.get_mut("nodes")
        .and_then(|n| n.as_array_of_tables_mut())
        .ok_or_else(|| Error::invalid("nodes", "is not a list of [[nodes]] tables"))
}

/// Adds node `name` at `address` to the spec at `path` and brings it up (with whatever
/// between it and the origin is not up yet). The spec is written once the node is up.
pub fn add_node(
    path: &Path,
    name: &str,
    address: IpAddr,
    engine: impl Fn(&ValidatedSpec) -> Engine,
) -> Result<Summary> {
    let (_, mut doc) = read(path)?;
    let mut table = toml_edit::Table::new();
    table["name"] = toml_edit::value(name);
    table["address"] = toml_edit::value(address.to_string());
    nodes_of(&mut doc)?.push(table);
    // Validation names a duplicate name or address, or one outside the subnet.
    let spec = validated(path, &doc)?;
    let summary = engine(&spec).up_node(name)?;
    write_atomic(path, doc.to_string().as_bytes())?;
    Ok(summary)
}

/// Removes node `name` from the running cluster and from the spec at `path`.
pub fn remove_node(
    path: &Path,
    name: &str,
    engine: impl Fn(&ValidatedSpec) -> Engine,
) -> Result<Summary> {
    let (_, mut doc) = read(path)?;
    let nodes = nodes_of(&mut doc)?;
    let position = nodes
        .iter()
        .position(|t| t.get("name").and_then(|v| v.as_str()) == Some(name))
        .ok_or_else(|| {
            Error::not_found(format!("node {name}"), "is not in the spec's [[nodes]]")
        })?;
    nodes.remove(position);
    let spec = validated(path, &doc)?;
    let engine = engine(&spec);
    move_away_from(engine.plan(), name)?;
    let summary = engine.retire(name)?;
    write_atomic(path, doc.to_string().as_bytes())?;
    Ok(summary)
}

/// Tells every running switch its ancestors in `plan` and waits until none reads from
/// `leaving`.
fn move_away_from(plan: &Plan, leaving: &str) -> Result<()> {
    let switches: Vec<_> = plan
        .nodes
        .iter()
        .flat_map(|n| &n.stack)
        .filter_map(|r| match r {
            ResourceSpec::UpstreamSwitch(s) => Some(s),
            _ => None,
        })
        .collect();
    for s in &switches {
        s.retarget()?;
    }
    let deadline = Instant::now() + MOVE_DEADLINE;
    loop {
        let still: Vec<&str> = switches
            .iter()
            .filter(|s| {
                Report::read(&report_file(&s.run_dir))
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.current == leaving)
            })
            .map(|s| s.node.as_str())
            .collect();
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::timeout(
                format!("node {leaving}"),
                format!(
                    "{} still read from it after {MOVE_DEADLINE:?}; nothing was removed",
                    still.join(", ")
                ),
            ));
        }
        // The switches write their report the moment they move; nothing signals it here.
        std::thread::sleep(Duration::from_millis(50));
    }
}
