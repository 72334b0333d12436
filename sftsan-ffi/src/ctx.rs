//! The context behind `sftsan_ctx *`: one validated spec, its plan and an engine.

use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use sftsan_core::engine::{Engine, Event, Progress};
use sftsan_core::plan::{self, NodePlan, Role};
use sftsan_core::resources::Tools;
use sftsan_core::spec::{validate, ClusterSpec, ValidatedSpec};

use crate::error::{sftsan_result, Error};

/// Called as `up`, `down` and the snapshot calls make progress: `id` names the resource
/// (e.g. `n1/cache`), `action` is one of "created", "unchanged", "recreated", "revived"
/// (made again over what its stores kept, after a reboot), "removed", "absent", "FAILED";
/// `elapsed_seconds` is how long that step took; `rollback` is true
/// while a failed call undoes what it created. Both strings are valid only during the
/// callback.
#[allow(non_camel_case_types)]
pub type sftsan_progress_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        id: *const c_char,
        action: *const c_char,
        elapsed_seconds: f64,
        rollback: bool,
    ),
>;

struct Callback {
    f: unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char, f64, bool),
    userdata: *mut c_void,
}

// SAFETY: `sftsan_ctx_set_progress` documents that the callback is called from sftsan's
// worker threads, one call at a time (the slot's mutex is held across each call), and
// that the caller's `userdata` must be usable from any thread. The pointer itself is only
// passed back to the caller's function, never dereferenced here.
unsafe impl Send for Callback {}

type Slot = Arc<Mutex<Option<Callback>>>;

/// An opened cluster spec. Create with `sftsan_ctx_open_file` or `sftsan_ctx_open_toml`,
/// free once with `sftsan_ctx_free`.
#[allow(non_camel_case_types)]
pub struct sftsan_ctx {
    spec: ValidatedSpec,
    /// The spec file, when the context was opened from one (domains record it for the hook).
    spec_path: Option<std::path::PathBuf>,
    engine: Engine,
    tools: Arc<Tools>,
    progress: Slot,
}

impl sftsan_ctx {
    pub(crate) fn open(
        text: &str,
        spec_path: Option<&std::path::Path>,
    ) -> Result<sftsan_ctx, Error> {
        let spec = validate(ClusterSpec::from_toml(text)?)?;
        let tools = Tools::from_env();
        let slot: Slot = Arc::new(Mutex::new(None));
        let engine = sftsan_core::cluster::engine(&spec, tools.clone(), progress(slot.clone()));
        Ok(sftsan_ctx {
            spec,
            spec_path: spec_path.map(std::path::Path::to_path_buf),
            engine,
            tools: Arc::new(tools),
            progress: slot,
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn plan(&self) -> &plan::Plan {
        self.engine.plan()
    }

    pub(crate) fn tools(&self) -> Arc<Tools> {
        self.tools.clone()
    }

    pub(crate) fn spec_path(&self) -> Option<&std::path::Path> {
        self.spec_path.as_deref()
    }

    pub(crate) fn source(&self) -> &std::path::Path {
        &self.spec.spec().image.source
    }

    pub(crate) fn set_progress(&self, cb: sftsan_progress_cb, userdata: *mut c_void) {
        *self.progress.lock().unwrap_or_else(PoisonError::into_inner) =
            cb.map(|f| Callback { f, userdata });
    }

    pub(crate) fn node(&self, name: &str) -> Result<&NodePlan, Error> {
        self.plan().node(name).ok_or_else(|| {
            Error::new(
                sftsan_result::NotFound,
                format!("no node named {name:?} in cluster {}", self.plan().cluster),
            )
        })
    }

    /// Whether every resource of the node's stack other than its snapshots is present.
    pub(crate) fn node_up(&self, node: &NodePlan) -> Result<bool, Error> {
        Ok(self.engine.node_is_up(&node.name)?)
    }

    /// The file of an existing snapshot of an up node.
    pub(crate) fn snapshot_path(&self, name: &str, index: u32) -> Result<PathBuf, Error> {
        let node = self.node(name)?;
        if node.role == Role::Origin {
            return Err(Error::new(
                sftsan_result::InvalidArgument,
                format!("{name:?} is the origin: VM snapshots live on compute nodes"),
            ));
        }
        let no_such = || {
            Error::new(
                sftsan_result::NotFound,
                format!(
                    "node {name:?} has no snapshot {index} (snapshots are numbered from 1; \
                     sftsan_snapshot_create makes one)"
                ),
            )
        };
        if index == 0 || self.plan().vm_disk(name, index).is_none() {
            return Err(no_such());
        }
        if !self.node_up(node)? {
            return Err(Error::new(
                sftsan_result::NotUp,
                format!(
                    "node {name:?} of cluster {} is not up (sftsan_up or sftsan_up_node \
                     brings it up)",
                    self.plan().cluster
                ),
            ));
        }
        if self.engine.snapshot_exists(name, index)? {
            Ok(self.plan().vm_disk_path(name, index))
        } else {
            Err(no_such())
        }
    }

    /// Adds a hint to failures of calls that may start cache keepers when the `sftsan`
    /// program that runs them cannot be found.
    pub(crate) fn keeper_hint(&self, e: Error) -> Error {
        if e.code != sftsan_result::EngineFailure || program_found(&self.tools.sftsan) {
            return e;
        }
        let message = format!(
            "{} (note: the program `{}`, which runs each node's cache keeper, was not found: \
             set SFTSAN_BIN to the sftsan binary or put it on PATH)",
            e.message,
            self.tools.sftsan.display()
        );
        Error::new(e.code, message)
    }
}

/// Whether `program` names an existing file, directly or through PATH.
fn program_found(program: &std::path::Path) -> bool {
    if program.components().count() > 1 {
        return program.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The engine's progress sink: forwards events to the callback in `slot`, if any, one at
/// a time.
fn progress(slot: Slot) -> Progress {
    Arc::new(move |e: &Event| {
        let guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(cb) = guard.as_ref() else {
            return;
        };
        let id = CString::new(e.id.replace('\0', "")).unwrap_or_default();
        let action = CString::new(e.action.as_str()).unwrap_or_default();
        // SAFETY: `cb.f` is the caller's function with the documented signature; both
        // strings outlive the call; `userdata` is passed through untouched, and the guard
        // keeps calls from overlapping as documented.
        unsafe {
            (cb.f)(
                cb.userdata,
                id.as_ptr(),
                action.as_ptr(),
                e.elapsed.as_secs_f64(),
                e.rollback,
            )
        };
    })
}
