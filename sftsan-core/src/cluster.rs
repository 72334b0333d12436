//! A cluster to work on, as every front end opens it (the `sftsan` command, the C ABI,
//! the libvirt layer): its spec read and validated, its plan, and an engine that applies
//! the plan to this host.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backends::system::SystemBackend;
use crate::engine::{Engine, Progress};
use crate::error::{Error, Result};
use crate::names::Names;
use crate::plan;
use crate::resources::Tools;
use crate::spec::{validate, ClusterSpec, MeasuredImage, Mode, ValidatedSpec};

/// Reads and validates the spec at `path`; errors name the file.
pub fn load_spec(path: &Path) -> Result<ValidatedSpec> {
    let shown = path.display().to_string();
    let spec = ClusterSpec::load(path).map_err(|e| Error::from(e).context(shown.clone()))?;
    validate_here(spec).map_err(|e| e.context(shown))
}

/// Validates `spec` as this host can: measuring the image here, or, on a host of a remote
/// cluster (which has no copy of the image), taking the measure the controller's `up` left
/// beside the installed spec.
pub fn validate_here(spec: ClusterSpec) -> Result<ValidatedSpec> {
    match installed_image(&spec)? {
        Some(image) => ValidatedSpec::measured(spec, image).map_err(Error::from),
        None => validate(spec).map_err(Error::from),
    }
}

/// Where a host of a remote cluster keeps the cluster's spec: the same path on every host,
/// so that the libvirt hook there finds it.
pub fn installed_spec_path(spec: &ClusterSpec) -> PathBuf {
    spec.cluster.state_dir.join("spec.toml")
}

/// Where a host of a remote cluster keeps what it was told of the image.
pub fn installed_image_path(spec: &ClusterSpec) -> PathBuf {
    spec.cluster.state_dir.join("image.json")
}

/// The image as the controller told this host, if it is a host of a remote cluster.
pub fn installed_image(spec: &ClusterSpec) -> Result<Option<MeasuredImage>> {
    if spec.cluster.mode != Mode::Remote {
        return Ok(None);
    }
    let path = installed_image_path(spec);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::corrupt(path.display().to_string(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Installs a remote cluster's spec (`<state_dir>/spec.toml`, the same path on every host,
/// where the libvirt hook finds it) and the image as measured, owner-only.
pub fn install(spec: &ClusterSpec, spec_text: &str, image: &MeasuredImage) -> Result<()> {
    let dir = &spec.cluster.state_dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let measured = serde_json::to_vec(image).expect("a measure serializes");
    crate::fsutil::write_atomic(&installed_image_path(spec), &measured)?;
    crate::fsutil::write_atomic(&installed_spec_path(spec), spec_text.as_bytes())
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

/// Removes what [`install`] put on a host, and the state directory once it is empty.
pub fn uninstall(spec: &ClusterSpec) -> Result<()> {
    crate::fsutil::remove_file_if_exists(&installed_image_path(spec))?;
    crate::fsutil::remove_file_if_exists(&installed_spec_path(spec))?;
    let _ = std::fs::remove_dir(&spec.cluster.state_dir);
    Ok(())
}
