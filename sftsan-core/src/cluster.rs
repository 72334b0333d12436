//! A cluster to work on, as every front end opens it (the `sftsan` command, the C ABI,
//! the libvirt layer): its spec read and validated, its plan, and an engine that applies
//! the plan to this host.

use std::path::Path;
use std::sync::Arc;

use crate::backends::system::SystemBackend;
use crate::engine::{Engine, Progress};
use crate::error::{Error, Result};
use crate::names::Names;
use crate::plan;
use crate::resources::Tools;
use crate::spec::{validate, ClusterSpec, ValidatedSpec};

/// Reads and validates the spec at `path`; errors name the file.
pub fn load_spec(path: &Path) -> Result<ValidatedSpec> {
    let shown = path.display().to_string();
    let spec = ClusterSpec::load(path).map_err(|e| Error::from(e).context(shown.clone()))?;
    validate(spec).map_err(|e| Error::from(e).context(shown))
}

/// The engine that applies `spec`'s plan to this host, running `tools`.
pub fn engine(spec: &ValidatedSpec, tools: Tools, progress: Progress) -> Engine {
    Engine::new(
        plan::plan(spec),
        Names::new(spec.spec()),
        Arc::new(SystemBackend::new(tools)),
        progress,
    )
}
