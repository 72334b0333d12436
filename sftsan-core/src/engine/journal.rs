//! The journal: what sftsan created on this cluster's behalf, written atomically after
//! every change. An entry is written *before* its resource is created ("creating") and
//! marked "created" after, so a process killed at any point leaves a journal that names
//! everything that may exist.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{remove_file_if_exists, write_atomic};
use crate::plan::ResourceSpec;
use crate::resources::Params;
use crate::transport::TransportSpec;

const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryState {
    Creating,
    Created,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// None for cluster-wide resources.
    pub node: Option<String>,
    pub state: EntryState,
    pub resource: ResourceSpec,
    /// What the created resource reported about itself (pids, sockets), for operators.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runtime: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalData {
    pub version: u32,
    pub cluster: String,
    /// How to reach each node, so `down` needs no spec.
    pub transports: BTreeMap<String, TransportSpec>,
    /// Node names by tree level, parents first: teardown walks it backwards.
    pub levels: Vec<Vec<String>>,
    /// In creation order.
    pub entries: Vec<Entry>,
}

impl JournalData {
    /// Reads a journal's text; says what is wrong with it otherwise.
    pub fn parse(text: &str) -> Result<JournalData> {
        let corrupt = |detail: String| Error::corrupt("journal", format!("is damaged: {detail}"));
        let data: JournalData = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
        if data.version != VERSION {
            return Err(corrupt(format!(
                "version {} (this sftsan reads {VERSION})",
                data.version
            )));
        }
        Ok(data)
    }

    /// The journal's text, as `save` writes it.
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).expect("a journal always serializes")
    }
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    pub data: JournalData,
}

impl Journal {
    /// Loads the journal at `path`, or returns None when there is none.
    pub fn load(path: &Path) -> Result<Option<Journal>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e).context("journal")),
        };
        let data = JournalData::parse(&text).map_err(|e| e.context(path.display().to_string()))?;
        Ok(Some(Journal {
            path: path.to_path_buf(),
            data,
        }))
    }

    /// Loads the journal or starts an empty one for `cluster`.
    pub fn open(path: &Path, cluster: &str) -> Result<Journal> {
        match Self::load(path)? {
            Some(j) if j.data.cluster != cluster => Err(Error::conflict(
                format!("journal {}", path.display()),
                format!("belongs to cluster {:?}, not {cluster:?}", j.data.cluster),
            )),
            Some(j) => Ok(j),
            None => Ok(Journal {
                path: path.to_path_buf(),
                data: JournalData {
                    version: VERSION,
                    cluster: cluster.into(),
                    transports: BTreeMap::new(),
                    levels: Vec::new(),
                    entries: Vec::new(),
                },
            }),
        }
    }

    pub fn save(&self) -> Result<()> {
        write_atomic(&self.path, self.data.to_text().as_bytes()).map_err(|e| e.context("journal"))
    }

    /// Removes the journal file (after `down` removed everything it named).
    pub fn delete(&self) -> Result<()> {
        remove_file_if_exists(&self.path).map_err(|e| e.context("journal"))
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.data.entries.iter().find(|e| e.id == id)
    }

    /// Records (or re-records) a resource in `state` and saves.
    pub fn record(
        &mut self,
        id: &str,
        node: Option<&str>,
        resource: &ResourceSpec,
        state: EntryState,
        runtime: Params,
    ) -> Result<()> {
        let runtime = runtime
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let entry = Entry {
            id: id.into(),
            node: node.map(String::from),
            state,
            resource: resource.clone(),
            runtime,
        };
        match self.data.entries.iter_mut().find(|e| e.id == id) {
            Some(e) => *e = entry,
            None => self.data.entries.push(entry),
        }
        self.save()
    }

    /// Forgets a resource that was torn down, and saves.
    pub fn forget(&mut self, id: &str) -> Result<()> {
        self.data.entries.retain(|e| e.id != id);
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::Bridge;

    #[test]
    fn records_survive_a_reload_and_forget_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        let mut j = Journal::open(&path, "c1").unwrap();
        let r = ResourceSpec::Bridge(Bridge { name: "b".into() });
        j.record("cluster/bridge", None, &r, EntryState::Creating, vec![])
            .unwrap();
        let j2 = Journal::load(&path).unwrap().unwrap();
        assert_eq!(
            j2.get("cluster/bridge").unwrap().state,
            EntryState::Creating
        );
        j.record("cluster/bridge", None, &r, EntryState::Created, vec![])
            .unwrap();
        assert_eq!(Journal::load(&path).unwrap().unwrap().data.entries.len(), 1);
        j.forget("cluster/bridge").unwrap();
        assert!(Journal::load(&path)
            .unwrap()
            .unwrap()
            .data
            .entries
            .is_empty());
        let err = Journal::open(&path, "c2").unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Conflict, "{err}");
    }

    #[test]
    fn a_damaged_journal_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = Journal::load(&path).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}
