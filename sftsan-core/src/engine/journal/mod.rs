//! The journal: what sftsan created on this cluster's behalf, written atomically after
//! every change. An entry is written *before* its resource is created ("creating") and
//! marked "created" after, so a process killed at any point leaves a journal that names
//! everything that may exist.

mod records;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{remove_file_if_exists, write_atomic};
use crate::plan::ResourceSpec;
use crate::resources::Params;
use crate::transport::TransportSpec;

/// How far a journaled resource got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// Creation started but was not confirmed: the resource may exist in part or not at all.
    Creating,
    /// The resource was made (or found and adopted) with its planned parameters.
    Created,
}

/// One journaled resource: what it is, whose it is and how far its creation got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The resource's id, e.g. `n1/daemon` or `cluster/bridge`.
    pub id: String,
    /// None for cluster-wide resources.
    pub node: Option<String>,
    /// Whether its creation was confirmed.
    pub state: EntryState,
    /// The resource with the parameters it was planned with: all teardown needs.
    pub resource: ResourceSpec,
    /// What the created resource reported about itself (pids, sockets), for operators.
    pub runtime: BTreeMap<String, String>,
}

/// What the journal knows, in memory; its file format is `records`' business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalData {
    /// Name of the cluster the journal belongs to (`cluster.name`).
    pub cluster: String,
    /// How to reach each node, so `down` needs no spec.
    pub transports: BTreeMap<String, TransportSpec>,
    /// Node names by tree level, parents first: teardown walks it backwards.
    pub levels: Vec<Vec<String>>,
    /// In creation order.
    pub entries: Vec<Entry>,
}

impl JournalData {
    /// Reads a journal's text (any version this sftsan knows); says what is wrong with it
    /// otherwise.
    pub fn parse(text: &str) -> Result<JournalData> {
        records::parse(text)
    }

    /// The journal's text, in the current version, as `save` writes it.
    pub fn to_text(&self) -> String {
        records::to_text(self)
    }
}

/// A cluster's journal: its contents and the file they are saved to.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// The contents; [`Journal::record`], [`Journal::forget`] and [`Journal::save`] write them out.
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
                    cluster: cluster.into(),
                    transports: BTreeMap::new(),
                    levels: Vec::new(),
                    entries: Vec::new(),
                },
            }),
        }
    }

    /// Writes the contents to the journal file atomically.
    pub fn save(&self) -> Result<()> {
        write_atomic(&self.path, self.data.to_text().as_bytes()).map_err(|e| e.context("journal"))
    }

    /// Removes the journal file (after `down` removed everything it named).
    pub fn delete(&self) -> Result<()> {
        remove_file_if_exists(&self.path).map_err(|e| e.context("journal"))
    }

    /// The entry of the resource with id `id`, if journaled.
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

    /// Journals of the earlier formats, for the same three clusters: a userspace cluster in
    /// host and in local mode, and a kernel-backend one with tgt relays. Format 1 is from
    /// the sftsan before versioned records, format 2 from the one before `tgt-relay`.
    const OLDER: [(&str, [&str; 2]); 3] = [
        (
            "userspace-host",
            [
                include_str!("fixtures/v1-userspace-host.json"),
                include_str!("fixtures/v2-userspace-host.json"),
            ],
        ),
        (
            "userspace-local",
            [
                include_str!("fixtures/v1-userspace-local.json"),
                include_str!("fixtures/v2-userspace-local.json"),
            ],
        ),
        (
            "kernel-host",
            [
                include_str!("fixtures/v1-kernel-host.json"),
                include_str!("fixtures/v2-kernel-host.json"),
            ],
        ),
    ];

    #[test]
    fn journals_of_earlier_formats_are_read_and_written_anew() {
        for (name, [v1, v2]) in OLDER {
            let data = JournalData::parse(v1).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!data.entries.is_empty(), "{name}");
            assert!(!data.transports.is_empty(), "{name}");
            let from_v2 = JournalData::parse(v2).unwrap_or_else(|e| panic!("{name} v2: {e}"));
            assert_eq!(from_v2, data, "{name}: formats 1 and 2 read differently");
            let written = data.to_text();
            assert!(written.contains("\"version\": 3"), "{name}: {written}");
            assert_eq!(JournalData::parse(&written).unwrap(), data, "{name}");
        }
    }

    /// Formats 1 and 2 journaled a kernel node's tgt relay under the origin's kind: read
    /// now, the relay is a `tgt-relay` with that id, and the origin's target stays itself.
    #[test]
    fn a_tgt_relay_of_an_earlier_format_reads_as_a_relay() {
        for text in OLDER[2].1 {
            let data = JournalData::parse(text).unwrap();
            let kind_of = |id: &str| {
                let e = data.entries.iter().find(|e| e.id == id);
                e.map(|e| e.resource.kind())
            };
            assert_eq!(kind_of("origin/origin-target"), Some("origin-target"));
            for node in ["n1", "n2"] {
                assert_eq!(kind_of(&format!("{node}/tgt-relay")), Some("tgt-relay"));
                assert_eq!(kind_of(&format!("{node}/origin-target")), None);
            }
        }
    }

    /// What this sftsan writes for those journals, committed. A change to what a resource
    /// stores (a field renamed, removed, retyped) shows here: keep reading the old records
    /// or add a version with its conversion before updating the files
    /// (`SFTSAN_UPDATE_GOLDEN=1 cargo test -p sftsan-core journal`).
    #[test]
    fn the_current_format_stays_as_committed() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine/journal/fixtures");
        for (name, [v1, _]) in OLDER {
            let written = JournalData::parse(v1).unwrap().to_text();
            let golden = dir.join(format!("v3-{name}.json"));
            if std::env::var_os("SFTSAN_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
                std::fs::write(&golden, &written).unwrap();
                continue;
            }
            let committed = std::fs::read_to_string(&golden).unwrap_or_default();
            assert!(
                committed == written,
                "{} differs from what this sftsan writes: the journal format changed",
                golden.display()
            );
        }
    }

    #[test]
    fn a_newer_journal_is_refused_with_its_version() {
        let err = JournalData::parse("{\"version\": 9}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 9"), "{err}");
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
