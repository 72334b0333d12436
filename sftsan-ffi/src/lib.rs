//! sftsan-ffi: the C ABI over sftsan-core, built as `libsftsan.so` and `libsftsan.a`, with
//! its header `include/sftsan.h` generated from this crate by cbindgen.
//!
//! Conventions (those of rustls-ffi): every fallible call returns an [`sftsan_result`];
//! its message is kept per thread for [`sftsan_last_error`]; outputs are written only on
//! success; strings the library returns are freed with [`sftsan_string_free`], contexts
//! with [`sftsan_ctx_free`]; NULL pointers and invalid UTF-8 are refused with their own
//! codes; no panic crosses the boundary. The rules for callers are in the header's
//! comments (see `cbindgen.toml` and the functions' docs below).

mod ctx;
mod error;

use std::ffi::{c_char, c_void, CString};

pub use ctx::{sftsan_ctx, sftsan_progress_cb};
pub use error::sftsan_result;

use error::{boundary, c_string, null, out_arg, str_arg, Error};

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library's version, e.g. "0.1.0": a static string, never freed.
#[no_mangle]
pub extern "C" fn sftsan_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

/// The name of a result code, e.g. "SFTSAN_RESULT_NOT_UP" (or "SFTSAN_RESULT_UNKNOWN"): a
/// static string, never freed.
#[no_mangle]
pub extern "C" fn sftsan_result_name(result: u32) -> *const c_char {
    sftsan_result::name_with_nul(result).as_ptr().cast()
}

/// Copies the message of this thread's most recent failed call into `buf`, like snprintf:
/// at most `len` bytes including the terminating NUL (cut at a UTF-8 character boundary),
/// and returns the message's full length without the NUL, so a return value >= `len` means
/// it was cut. `buf` may be NULL when `len` is 0, to ask for the length. The message is
/// empty (and 0 is returned) when the most recent call that returns an `sftsan_result`
/// succeeded, or none was made yet on this thread.
///
/// Thread-safe: each thread has its own last error.
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sftsan_last_error(buf: *mut c_char, len: usize) -> usize {
    // SAFETY: forwarded caller guarantee on `buf` and `len`.
    std::panic::catch_unwind(|| unsafe { error::copy_last_error(buf, len) }).unwrap_or(0)
}

/// Frees a string this library returned (JSON, a path, a node name). NULL is ignored.
///
/// # Safety
/// `s` is NULL or a string returned by this library and not freed yet; it is not used
/// after this call.
#[no_mangle]
pub unsafe extern "C" fn sftsan_string_free(s: *mut c_char) {
    if s.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the caller guarantees `s` came from `CString::into_raw` in this library
        // (every returned string does, see `c_string`) and is freed only once.
        drop(unsafe { CString::from_raw(s) })
    });
}

/// Boxes a context for C and writes it into `*ctx_out`.
///
/// # Safety
/// `ctx_out` was checked non-NULL and the caller guarantees it is valid for a write.
unsafe fn give_ctx(ctx: sftsan_ctx, ctx_out: *mut *mut sftsan_ctx) {
    // SAFETY: see the function's contract.
    unsafe { ctx_out.write(Box::into_raw(Box::new(ctx))) }
}

/// Reads the cluster spec (TOML) at `path`, validates it (the image must exist) and plans
/// the cluster; touches nothing on the system. On success `*ctx_out` is a new context that
/// the caller frees with `sftsan_ctx_free`.
///
/// Errors: NOT_FOUND (no such file), INVALID_SPEC (the message names the field),
/// ENGINE_FAILURE (the file cannot be read).
///
/// The context finds the programs it runs when it is opened: qemu-storage-daemon, qemu-img
/// and ip on PATH, and the `sftsan` binary, which runs each node's cache keeper
/// (`sftsan keeper`), from the environment variable SFTSAN_BIN, else beside the running
/// executable, else on PATH.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `ctx_out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn sftsan_ctx_open_file(
    path: *const c_char,
    ctx_out: *mut *mut sftsan_ctx,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `path` is NULL or a NUL-terminated string.
        let path = unsafe { str_arg(path, "path") }?;
        out_arg(ctx_out, "ctx_out")?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => sftsan_result::NotFound,
                _ => sftsan_result::EngineFailure,
            };
            Error::new(code, format!("cannot read the spec {path}: {e}"))
        })?;
        let ctx = sftsan_ctx::open(&text, Some(std::path::Path::new(path)))
            .map_err(|e| e.context(path))?;
        // SAFETY: `ctx_out` is non-NULL (checked) and writable (caller guarantee).
        unsafe { give_ctx(ctx, ctx_out) };
        Ok(())
    })
}

/// Like `sftsan_ctx_open_file`, from the spec's TOML text itself.
///
/// # Safety
/// `toml` is NULL or a NUL-terminated string; `ctx_out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn sftsan_ctx_open_toml(
    toml: *const c_char,
    ctx_out: *mut *mut sftsan_ctx,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `toml` is NULL or a NUL-terminated string.
        let toml = unsafe { str_arg(toml, "toml") }?;
        out_arg(ctx_out, "ctx_out")?;
        let ctx = sftsan_ctx::open(toml, None)?;
        // SAFETY: `ctx_out` is non-NULL (checked) and writable (caller guarantee).
        unsafe { give_ctx(ctx, ctx_out) };
        Ok(())
    })
}

/// Frees a context. NULL is ignored. Leaves the cluster as it is (up stays up).
///
/// # Safety
/// `ctx` is NULL or a context from `sftsan_ctx_open_*` not freed yet, not in use by
/// another thread, and not used after this call.
#[no_mangle]
pub unsafe extern "C" fn sftsan_ctx_free(ctx: *mut sftsan_ctx) {
    if ctx.is_null() {
        return;
    }
    // AssertUnwindSafe: the context is gone after this whatever happens.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the caller guarantees `ctx` came from `Box::into_raw` in `give_ctx` and
        // is freed only once.
        drop(unsafe { Box::from_raw(ctx) })
    }));
}

/// The context behind a pointer argument.
///
/// # Safety
/// `ctx` is NULL or a live context, not used mutably elsewhere during `'a`.
unsafe fn ctx_arg<'a>(ctx: *const sftsan_ctx) -> Result<&'a sftsan_ctx, Error> {
    // SAFETY: see the function's contract.
    unsafe { ctx.as_ref() }.ok_or_else(|| null("ctx"))
}

/// Writes a returned string into `*out` (checked non-NULL before).
///
/// # Safety
/// `out` is non-NULL and valid for a write.
unsafe fn give_string(s: String, out: *mut *mut c_char) -> Result<(), Error> {
    let s = c_string(s)?;
    // SAFETY: see the function's contract.
    unsafe { out.write(s) };
    Ok(())
}

/// Sets (or, with `callback` NULL, clears) the function told of every step `sftsan_up`,
/// `sftsan_up_node`, `sftsan_down`, `sftsan_down_node` and the snapshot calls take.
///
/// The callback runs on sftsan's worker threads (nodes of one tree level are set up in
/// parallel), never two at a time, and only during one of those calls; `userdata` is
/// passed to it as given, so it must be usable from any thread. The callback must not call
/// into sftsan with the same context.
///
/// # Safety
/// `ctx` is NULL or a live context; `callback`, if not NULL, is safe to call with the
/// documented arguments from any thread until it is replaced or the context is freed.
#[no_mangle]
pub unsafe extern "C" fn sftsan_ctx_set_progress(
    ctx: *mut sftsan_ctx,
    callback: sftsan_progress_cb,
    userdata: *mut c_void,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        ctx.set_progress(callback, userdata);
        Ok(())
    })
}

/// The plan as JSON (what `sftsan plan --json` prints): the tree and every node's stack.
/// Touches nothing. On success `*json_out` is a string to free with `sftsan_string_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `json_out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn sftsan_plan_json(
    ctx: *const sftsan_ctx,
    json_out: *mut *mut c_char,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        out_arg(json_out, "json_out")?;
        let json = serde_json::to_string_pretty(ctx.plan())?;
        // SAFETY: `json_out` is non-NULL (checked) and writable (caller guarantee).
        unsafe { give_string(json, json_out) }
    })
}

/// The cluster's status as JSON (what `sftsan status --json` prints): per node its state
/// ("up", "down", "partial", "external"), cache fill, bytes from upstream and served, and
/// snapshots. Works on a cluster in any state; touches nothing. On success `*json_out` is
/// a string to free with `sftsan_string_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `json_out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn sftsan_status_json(
    ctx: *const sftsan_ctx,
    json_out: *mut *mut c_char,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        out_arg(json_out, "json_out")?;
        let status = sftsan_core::status::status(ctx.plan(), ctx.tools());
        let json = serde_json::to_string_pretty(&status)?;
        // SAFETY: `json_out` is non-NULL (checked) and writable (caller guarantee).
        unsafe { give_string(json, json_out) }
    })
}

/// The name of the node at tree position `position`: 1 is the origin, 2, 3, ... the nodes
/// in the spec's order. NOT_FOUND past the last one (or for 0), so a loop from 1 up to
/// NOT_FOUND lists them all. On success `*name_out` is a string to free with
/// `sftsan_string_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `name_out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn sftsan_node_name(
    ctx: *const sftsan_ctx,
    position: usize,
    name_out: *mut *mut c_char,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        out_arg(name_out, "name_out")?;
        let nodes = &ctx.plan().nodes;
        let node = position
            .checked_sub(1)
            .and_then(|i| nodes.get(i))
            .ok_or_else(|| {
                Error::new(
                    sftsan_result::NotFound,
                    format!(
                        "no node at position {position}: the cluster has {} (origin = 1)",
                        nodes.len()
                    ),
                )
            })?;
        // SAFETY: `name_out` is non-NULL (checked) and writable (caller guarantee).
        unsafe { give_string(node.name.clone(), name_out) }
    })
}

/// Brings the whole cluster up (the origin, then every level of nodes, each with its
/// cache, relay, keeper and planned snapshots), resuming whatever an earlier run left. On
/// failure it removes what this call created and returns ENGINE_FAILURE; BUSY when another
/// sftsan works on the cluster. Blocks until done (seconds to minutes).
///
/// # Safety
/// `ctx` is NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn sftsan_up(ctx: *mut sftsan_ctx) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        ctx.engine().up().map_err(|e| ctx.keeper_hint(e.into()))?;
        Ok(())
    })
}

/// Brings up one node and the nodes between it and the origin, each with its whole stack.
/// NOT_FOUND for an unknown node.
///
/// # Safety
/// `ctx` is NULL or a live context; `node` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sftsan_up_node(
    ctx: *mut sftsan_ctx,
    node: *const c_char,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        // SAFETY: the caller guarantees `node` is NULL or a NUL-terminated string.
        let node = unsafe { str_arg(node, "node") }?;
        ctx.engine()
            .up_node(node)
            .map_err(|e| ctx.keeper_hint(e.into()))?;
        Ok(())
    })
}

/// Removes everything the cluster created, children before parents (also after a partial
/// or crashed `up`). A cluster that is already down is fine.
///
/// # Safety
/// `ctx` is NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn sftsan_down(ctx: *mut sftsan_ctx) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        ctx.engine().down()?;
        Ok(())
    })
}

/// Tears down one node's stack (its snapshots included). BUSY while one of its children
/// still has anything up; NOT_FOUND for an unknown node.
///
/// # Safety
/// `ctx` is NULL or a live context; `node` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sftsan_down_node(
    ctx: *mut sftsan_ctx,
    node: *const c_char,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        // SAFETY: the caller guarantees `node` is NULL or a NUL-terminated string.
        let node = unsafe { str_arg(node, "node") }?;
        ctx.engine().down_node(node)?;
        Ok(())
    })
}

/// Makes sure snapshot `index` (from 1) of `node` exists, bringing the node (and its
/// ancestors) up if needed: a VM's disk, a qcow2 overlay backed by the node's export.
/// `index` may exceed the spec's `snapshots.per_node`. On success `*path_out` is the
/// snapshot's file, to free with `sftsan_string_free`. NOT_FOUND for an unknown node or
/// index 0, INVALID_ARGUMENT for the origin.
///
/// # Safety
/// `ctx` is NULL or a live context; `node` is NULL or a NUL-terminated string; `path_out`
/// is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn sftsan_snapshot_create(
    ctx: *mut sftsan_ctx,
    node: *const c_char,
    index: u32,
    path_out: *mut *mut c_char,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        // SAFETY: the caller guarantees `node` is NULL or a NUL-terminated string.
        let node = unsafe { str_arg(node, "node") }?;
        out_arg(path_out, "path_out")?;
        ctx.node(node)?; // "no such node" rather than the engine's "no snapshot N"
        let file = ctx
            .engine()
            .ensure_snapshot(node, index)
            .map_err(|e| ctx.keeper_hint(e.into()))?;
        let file = file.into_os_string().into_string().map_err(|f| {
            Error::new(
                sftsan_result::InvalidUtf8,
                format!("snapshot file {f:?} is not valid UTF-8"),
            )
        })?;
        // SAFETY: `path_out` is non-NULL (checked) and writable (caller guarantee).
        unsafe { give_string(file, path_out) }
    })
}

/// Removes snapshot `index` of `node`: the VM's writes are gone. Removing one that is not
/// there is not an error; `*existed_out` (if `existed_out` is not NULL) tells whether there
/// was one.
///
/// # Safety
/// `ctx` is NULL or a live context; `node` is NULL or a NUL-terminated string;
/// `existed_out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn sftsan_snapshot_remove(
    ctx: *mut sftsan_ctx,
    node: *const c_char,
    index: u32,
    existed_out: *mut bool,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        // SAFETY: the caller guarantees `node` is NULL or a NUL-terminated string.
        let node = unsafe { str_arg(node, "node") }?;
        ctx.node(node)?;
        let existed = ctx.engine().remove_snapshot(node, index)?;
        if !existed_out.is_null() {
            // SAFETY: non-NULL, and the caller guarantees it is writable.
            unsafe { existed_out.write(existed) };
        }
        Ok(())
    })
}

/// The file of snapshot `index` of `node`, which must exist already; changes nothing.
/// NOT_UP when the node is not up, NOT_FOUND for an unknown node or a snapshot that is not
/// there, INVALID_ARGUMENT for the origin. On success `*path_out` is a string to free with
/// `sftsan_string_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `node` is NULL or a NUL-terminated string; `path_out`
/// is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn sftsan_snapshot_path(
    ctx: *const sftsan_ctx,
    node: *const c_char,
    index: u32,
    path_out: *mut *mut c_char,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        // SAFETY: the caller guarantees `node` is NULL or a NUL-terminated string.
        let node = unsafe { str_arg(node, "node") }?;
        out_arg(path_out, "path_out")?;
        let file = ctx.snapshot_path(node, index)?;
        let file = file.to_str().map(String::from).ok_or_else(|| {
            Error::new(
                sftsan_result::InvalidUtf8,
                format!("snapshot file {file:?} is not valid UTF-8"),
            )
        })?;
        // SAFETY: `path_out` is non-NULL (checked) and writable (caller guarantee).
        unsafe { give_string(file, path_out) }
    })
}

/// The libvirt domain XML of VM `index` on `node`, as `sftsan vm define` defines it: the
/// default name pattern, a UUID and MACs derived from (cluster, node, index), the snapshot
/// as the boot disk, and sftsan's `<metadata>` element (with the spec file's path when the
/// context was opened from a file, so the libvirt hook can serve the domain). From
/// `template_xml` (a libvirt domain; its boot disk, if it has one, gets the snapshot as its
/// source), or the built-in default when it is NULL. `stateless`: the hook discards the VM's snapshot whenever it stops.
/// Touches nothing. NOT_FOUND for an unknown node, INVALID_ARGUMENT for the origin, index
/// 0 or a template that is not domain XML. On success `*xml_out` is a string to free with
/// `sftsan_string_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `node` is NULL or a NUL-terminated string;
/// `template_xml` is NULL or a NUL-terminated string; `xml_out` is NULL or valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn sftsan_domain_xml(
    ctx: *const sftsan_ctx,
    node: *const c_char,
    index: u32,
    template_xml: *const c_char,
    stateless: bool,
    xml_out: *mut *mut c_char,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        // SAFETY: the caller guarantees `node` is NULL or a NUL-terminated string.
        let node = unsafe { str_arg(node, "node") }?;
        let template = if template_xml.is_null() {
            None
        } else {
            // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string.
            Some(unsafe { str_arg(template_xml, "template_xml") }?)
        };
        out_arg(xml_out, "xml_out")?;
        ctx.node(node)?;
        let mode = if stateless {
            sftsan_libvirt::xml::VmMode::Stateless
        } else {
            sftsan_libvirt::xml::VmMode::Persistent
        };
        let xml = sftsan_libvirt::vms::domain_xml(
            ctx.plan(),
            ctx.spec_path(),
            node,
            index,
            template,
            mode,
        )
        .map_err(Error::from)?;
        // SAFETY: `xml_out` is non-NULL (checked) and writable (caller guarantee).
        unsafe { give_string(xml, xml_out) }
    })
}

/// Every compute node reads its planned snapshot `index` through its cache and compares
/// it with the image (what `sftsan verify` does; run it before VMs write to their disks).
/// NOT_UP unless every node is up; NOT_FOUND when no node plans snapshot `index`;
/// ENGINE_FAILURE when a snapshot differs or cannot be read (the message names the first).
/// On success `*json_out` is a JSON array of {node, snapshot, seconds, error: null}, to
/// free with `sftsan_string_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `json_out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn sftsan_verify_json(
    ctx: *const sftsan_ctx,
    index: u32,
    json_out: *mut *mut c_char,
) -> sftsan_result {
    boundary(|| {
        // SAFETY: the caller guarantees `ctx` is NULL or live.
        let ctx = unsafe { ctx_arg(ctx) }?;
        out_arg(json_out, "json_out")?;
        let mut down = Vec::new();
        for node in ctx.plan().nodes.iter().filter(|n| !n.stack.is_empty()) {
            if !ctx.node_up(node)? {
                down.push(node.name.clone());
            }
        }
        if !down.is_empty() {
            return Err(Error::new(
                sftsan_result::NotUp,
                format!(
                    "cluster {} is not up: {} down (sftsan_up brings it up)",
                    ctx.plan().cluster,
                    down.join(", ")
                ),
            ));
        }
        let results = sftsan_core::verify::verify(ctx.plan(), ctx.tools(), index, ctx.source());
        if results.is_empty() {
            return Err(Error::new(
                sftsan_result::NotFound,
                format!("no node plans a snapshot {index} (snapshots.per_node is lower)"),
            ));
        }
        let failed: Vec<_> = results.iter().filter(|r| r.error.is_some()).collect();
        if let Some(first) = failed.first() {
            return Err(Error::new(
                sftsan_result::EngineFailure,
                format!(
                    "{} of {} snapshots differ from the image or could not be read (first: \
                     {}/snapshot/{}: {})",
                    failed.len(),
                    results.len(),
                    first.node,
                    first.snapshot,
                    first
                        .error
                        .as_deref()
                        .unwrap_or_default()
                        .replace('\n', " ")
                ),
            ));
        }
        let json = serde_json::to_string_pretty(&results)?;
        // SAFETY: `json_out` is non-NULL (checked) and writable (caller guarantee).
        unsafe { give_string(json, json_out) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        let mut buf = [0 as c_char; 512];
        // SAFETY: `buf` holds 512 bytes.
        let n = unsafe { sftsan_last_error(buf.as_mut_ptr(), buf.len()) };
        assert!(n < buf.len());
        // SAFETY: sftsan_last_error NUL-terminated it.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_is_caught_and_reported() {
        let result = boundary(|| panic!("boom {}", 42));
        assert_eq!(result, sftsan_result::Panic);
        assert!(last_error().contains("sftsan panicked"), "{}", last_error());
        assert!(last_error().contains("boom 42"));
        let result = boundary(|| std::panic::panic_any(7u8));
        assert_eq!(result, sftsan_result::Panic);
        assert!(last_error().contains("non-string payload"));
        // A later success clears it.
        assert_eq!(boundary(|| Ok(())), sftsan_result::Ok);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn result_names_match_the_enum() {
        for (code, name) in [
            (sftsan_result::Ok, "SFTSAN_RESULT_OK"),
            (sftsan_result::NotUp, "SFTSAN_RESULT_NOT_UP"),
            (sftsan_result::Busy, "SFTSAN_RESULT_BUSY"),
        ] {
            // SAFETY: sftsan_result_name returns a static NUL-terminated string.
            let got = unsafe { std::ffi::CStr::from_ptr(sftsan_result_name(code as u32)) };
            assert_eq!(got.to_str().unwrap(), name);
        }
    }
}
