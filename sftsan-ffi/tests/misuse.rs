//! Misuse of the C ABI, from Rust calling the extern "C" functions directly and from a C
//! program (also under valgrind): NULL arguments, invalid UTF-8, freeing NULL, calls that
//! need a cluster up on one that is down, invalid specs. Each returns its own code with a
//! message that says what was wrong, leaves the outputs alone, and nothing crashes. None
//! of these bring a cluster up, so they need neither root nor qemu.

mod common;

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use sftsan::*;

/// This thread's last error, read through the C function.
fn last_error() -> String {
    // SAFETY: a NULL buffer with length 0 only asks for the length.
    let len = unsafe { sftsan_last_error(ptr::null_mut(), 0) };
    let mut buf = vec![0u8; len + 1];
    // SAFETY: `buf` holds len + 1 bytes.
    let full = unsafe { sftsan_last_error(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(full, len);
    CStr::from_bytes_until_nul(&buf)
        .unwrap()
        .to_str()
        .expect("last errors are UTF-8")
        .to_string()
}

/// Asserts the result and that the message contains `needle`.
#[track_caller]
fn expect(result: sftsan_result, code: sftsan_result, needle: &str) {
    assert_eq!(result, code, "last error: {}", last_error());
    let message = last_error();
    assert!(
        message.contains(needle),
        "{code:?}: message {message:?} does not mention {needle:?}"
    );
}

/// Takes a string the library returned, freeing it.
fn take(s: *mut c_char) -> String {
    assert!(!s.is_null());
    // SAFETY: the library returned a NUL-terminated string; it is freed right after.
    let text = unsafe { CStr::from_ptr(s) }.to_str().unwrap().to_string();
    // SAFETY: a string from the library, freed once.
    unsafe { sftsan_string_free(s) };
    text
}

/// A context on a valid spec of a cluster that is down.
struct Down {
    _dir: tempfile::TempDir,
    spec: CString,
    ctx: *mut sftsan_ctx,
}

impl Down {
    fn open() -> Down {
        let dir = tempfile::tempdir().unwrap();
        let spec = common::down_cluster_spec(dir.path());
        let spec = CString::new(spec.to_str().unwrap()).unwrap();
        let mut ctx = ptr::null_mut();
        // SAFETY: a valid C string and a valid out pointer.
        let r = unsafe { sftsan_ctx_open_file(spec.as_ptr(), &mut ctx) };
        assert_eq!(r, sftsan_result::Ok, "{}", last_error());
        assert!(!ctx.is_null());
        Down {
            _dir: dir,
            spec,
            ctx,
        }
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        // SAFETY: opened in `open`, freed once.
        unsafe { sftsan_ctx_free(self.ctx) };
    }
}

/// A pointer no call may write through: the sentinel must survive every failure.
fn sentinel() -> *mut c_char {
    0x5a5a as *mut c_char
}

#[test]
fn freeing_null_is_a_no_op() {
    // SAFETY: NULL is explicitly allowed.
    unsafe {
        sftsan_ctx_free(ptr::null_mut());
        sftsan_string_free(ptr::null_mut());
    }
}

#[test]
fn null_arguments_are_refused_by_name() {
    let down = Down::open();
    let mut out = sentinel();
    let mut ctx: *mut sftsan_ctx = 0x5a5a as *mut sftsan_ctx;
    let n1 = c"n1";
    // SAFETY: for all calls below, every non-NULL pointer is valid; NULLs are what is tested.
    unsafe {
        expect(
            sftsan_ctx_open_file(ptr::null(), &mut ctx),
            sftsan_result::NullArgument,
            "`path` is NULL",
        );
        expect(
            sftsan_ctx_open_file(down.spec.as_ptr(), ptr::null_mut()),
            sftsan_result::NullArgument,
            "`ctx_out` is NULL",
        );
        expect(
            sftsan_ctx_open_toml(ptr::null(), &mut ctx),
            sftsan_result::NullArgument,
            "`toml` is NULL",
        );
        assert_eq!(ctx, 0x5a5a as *mut sftsan_ctx, "ctx_out written on failure");

        for (name, r) in [
            ("up", sftsan_up(ptr::null_mut())),
            ("down", sftsan_down(ptr::null_mut())),
            ("up_node", sftsan_up_node(ptr::null_mut(), n1.as_ptr())),
            ("down_node", sftsan_down_node(ptr::null_mut(), n1.as_ptr())),
            ("plan", sftsan_plan_json(ptr::null(), &mut out)),
            ("status", sftsan_status_json(ptr::null(), &mut out)),
            ("node_name", sftsan_node_name(ptr::null(), 1, &mut out)),
            ("verify", sftsan_verify_json(ptr::null(), 1, &mut out)),
            (
                "snapshot_path",
                sftsan_snapshot_path(ptr::null(), n1.as_ptr(), 1, &mut out),
            ),
            (
                "snapshot_create",
                sftsan_snapshot_create(ptr::null_mut(), n1.as_ptr(), 1, &mut out),
            ),
            (
                "snapshot_remove",
                sftsan_snapshot_remove(ptr::null_mut(), n1.as_ptr(), 1, ptr::null_mut()),
            ),
            (
                "set_progress",
                sftsan_ctx_set_progress(ptr::null_mut(), None, ptr::null_mut()),
            ),
        ] {
            assert_eq!(r, sftsan_result::NullArgument, "{name}");
            assert_eq!(last_error(), "argument `ctx` is NULL", "{name}");
        }
        expect(
            sftsan_plan_json(down.ctx, ptr::null_mut()),
            sftsan_result::NullArgument,
            "`json_out` is NULL",
        );
        expect(
            sftsan_status_json(down.ctx, ptr::null_mut()),
            sftsan_result::NullArgument,
            "`json_out` is NULL",
        );
        expect(
            sftsan_up_node(down.ctx, ptr::null()),
            sftsan_result::NullArgument,
            "`node` is NULL",
        );
        expect(
            sftsan_down_node(down.ctx, ptr::null()),
            sftsan_result::NullArgument,
            "`node` is NULL",
        );
        expect(
            sftsan_snapshot_create(down.ctx, ptr::null(), 1, &mut out),
            sftsan_result::NullArgument,
            "`node` is NULL",
        );
        expect(
            sftsan_snapshot_create(down.ctx, n1.as_ptr(), 1, ptr::null_mut()),
            sftsan_result::NullArgument,
            "`path_out` is NULL",
        );
        expect(
            sftsan_snapshot_path(down.ctx, n1.as_ptr(), 1, ptr::null_mut()),
            sftsan_result::NullArgument,
            "`path_out` is NULL",
        );
        expect(
            sftsan_snapshot_remove(down.ctx, ptr::null(), 1, ptr::null_mut()),
            sftsan_result::NullArgument,
            "`node` is NULL",
        );
        expect(
            sftsan_node_name(down.ctx, 1, ptr::null_mut()),
            sftsan_result::NullArgument,
            "`name_out` is NULL",
        );
    }
    assert_eq!(out, sentinel(), "an output was written on failure");
}

#[test]
fn invalid_utf8_is_refused() {
    let down = Down::open();
    let bad = c"\xff";
    let bad_later = c"n1\xc3\x28";
    let mut out = sentinel();
    let mut ctx: *mut sftsan_ctx = ptr::null_mut();
    // SAFETY: for all calls below, valid pointers; the strings' bytes are what is tested.
    unsafe {
        expect(
            sftsan_ctx_open_file(bad.as_ptr(), &mut ctx),
            sftsan_result::InvalidUtf8,
            "`path` is not valid UTF-8 (bad byte at offset 0)",
        );
        expect(
            sftsan_ctx_open_toml(bad.as_ptr(), &mut ctx),
            sftsan_result::InvalidUtf8,
            "`toml` is not valid UTF-8",
        );
        assert!(ctx.is_null());
        expect(
            sftsan_up_node(down.ctx, bad.as_ptr()),
            sftsan_result::InvalidUtf8,
            "`node` is not valid UTF-8",
        );
        expect(
            sftsan_down_node(down.ctx, bad_later.as_ptr()),
            sftsan_result::InvalidUtf8,
            "offset 2",
        );
        expect(
            sftsan_snapshot_create(down.ctx, bad.as_ptr(), 1, &mut out),
            sftsan_result::InvalidUtf8,
            "`node`",
        );
        expect(
            sftsan_snapshot_path(down.ctx, bad.as_ptr(), 1, &mut out),
            sftsan_result::InvalidUtf8,
            "`node`",
        );
        expect(
            sftsan_snapshot_remove(down.ctx, bad.as_ptr(), 1, ptr::null_mut()),
            sftsan_result::InvalidUtf8,
            "`node`",
        );
    }
    assert_eq!(out, sentinel());
}

#[test]
fn invalid_specs_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(common::down_cluster_spec(dir.path())).unwrap();
    let mut ctx: *mut sftsan_ctx = ptr::null_mut();
    let cases = [
        ("[cluster\nname = 1".to_string(), "spec line 1"),
        (good.replace("degree = 1", "degree = 1\nbogus = 2"), "bogus"),
        (good.replace("degree = 1", "degree = 0"), "cluster.degree"),
        (good.replace("base.raw", "missing.raw"), "image.source: \""),
        (good.replace("198.18.75.11", "10.9.9.9"), "nodes"),
    ];
    for (text, needle) in cases {
        let text = CString::new(text).unwrap();
        // SAFETY: valid pointers.
        let r = unsafe { sftsan_ctx_open_toml(text.as_ptr(), &mut ctx) };
        expect(r, sftsan_result::InvalidSpec, needle);
        assert!(ctx.is_null());
    }
    // A file: the message names it; a missing one is NOT_FOUND.
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[cluster]\n").unwrap();
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid pointers.
    let r = unsafe { sftsan_ctx_open_file(c_path.as_ptr(), &mut ctx) };
    expect(r, sftsan_result::InvalidSpec, path.to_str().unwrap());
    let missing = CString::new(dir.path().join("nope.toml").to_str().unwrap()).unwrap();
    // SAFETY: valid pointers.
    let r = unsafe { sftsan_ctx_open_file(missing.as_ptr(), &mut ctx) };
    expect(r, sftsan_result::NotFound, "cannot read the spec");
    assert!(ctx.is_null());
}

#[test]
fn calls_that_need_the_cluster_up_say_it_is_down() {
    let down = Down::open();
    let mut out = sentinel();
    // SAFETY: for all calls below, valid pointers.
    unsafe {
        expect(
            sftsan_snapshot_path(down.ctx, c"n1".as_ptr(), 1, &mut out),
            sftsan_result::NotUp,
            "node \"n1\" of cluster ffi-down is not up",
        );
        expect(
            sftsan_verify_json(down.ctx, 1, &mut out),
            sftsan_result::NotUp,
            "cluster ffi-down is not up: origin, n1 down",
        );
        // Unknown nodes and snapshots, and the origin, are told apart from "not up".
        expect(
            sftsan_snapshot_path(down.ctx, c"n9".as_ptr(), 1, &mut out),
            sftsan_result::NotFound,
            "no node named \"n9\"",
        );
        expect(
            sftsan_snapshot_path(down.ctx, c"n1".as_ptr(), 0, &mut out),
            sftsan_result::NotFound,
            "numbered from 1",
        );
        expect(
            sftsan_snapshot_path(down.ctx, c"origin".as_ptr(), 1, &mut out),
            sftsan_result::InvalidArgument,
            "is the origin",
        );
        expect(
            sftsan_snapshot_create(down.ctx, c"origin".as_ptr(), 1, &mut out),
            sftsan_result::InvalidArgument,
            "is the origin",
        );
        expect(
            sftsan_snapshot_create(down.ctx, c"n9".as_ptr(), 1, &mut out),
            sftsan_result::NotFound,
            "no node named \"n9\"",
        );
        expect(
            sftsan_up_node(down.ctx, c"n9".as_ptr()),
            sftsan_result::NotFound,
            "no node named \"n9\"",
        );
        expect(
            sftsan_node_name(down.ctx, 3, &mut out),
            sftsan_result::NotFound,
            "the cluster has 2",
        );
        expect(
            sftsan_node_name(down.ctx, 0, &mut out),
            sftsan_result::NotFound,
            "no node at position 0",
        );
        assert_eq!(out, sentinel());

        // What works on a down cluster works, and clears the last error.
        assert_eq!(sftsan_plan_json(down.ctx, &mut out), sftsan_result::Ok);
        assert_eq!(last_error(), "");
        let plan: serde_json::Value = serde_json::from_str(&take(out)).unwrap();
        assert_eq!(plan["cluster"], "ffi-down");
        out = sentinel();
        assert_eq!(sftsan_status_json(down.ctx, &mut out), sftsan_result::Ok);
        let status: serde_json::Value = serde_json::from_str(&take(out)).unwrap();
        let states: Vec<_> = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["state"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, ["down", "down"]);
        let mut names = Vec::new();
        for position in 1.. {
            let mut name = ptr::null_mut();
            match sftsan_node_name(down.ctx, position, &mut name) {
                sftsan_result::Ok => names.push(take(name)),
                sftsan_result::NotFound => break,
                other => panic!("{other:?}: {}", last_error()),
            }
        }
        assert_eq!(names, ["origin", "n1"]);
    }
}

#[test]
fn last_error_is_cut_like_snprintf_and_kept_per_thread() {
    let mut ctx = ptr::null_mut();
    // SAFETY: valid pointers.
    let r = unsafe { sftsan_ctx_open_file(ptr::null(), &mut ctx) };
    assert_eq!(r, sftsan_result::NullArgument);
    let full = last_error();
    assert_eq!(full, "argument `path` is NULL");

    let mut small = [0x7f as c_char; 8];
    // SAFETY: `small` holds 8 bytes.
    let n = unsafe { sftsan_last_error(small.as_mut_ptr(), small.len()) };
    assert_eq!(n, full.len(), "returns the full length");
    // SAFETY: NUL-terminated by the call.
    let cut = unsafe { CStr::from_ptr(small.as_ptr()) };
    assert_eq!(cut.to_str().unwrap(), &full[..7]);
    // len 1: just the NUL. A NULL buffer with a length is not written.
    // SAFETY: `small` holds 8 bytes; NULL with a length is accepted and not written.
    unsafe {
        assert_eq!(sftsan_last_error(small.as_mut_ptr(), 1), full.len());
        assert_eq!(small[0], 0);
        assert_eq!(sftsan_last_error(ptr::null_mut(), 100), full.len());
    }

    // Another thread has its own last error, and failing there does not touch ours.
    let other = std::thread::spawn(|| {
        let before = last_error();
        // SAFETY: NULL ctx is what is tested.
        let r = unsafe { sftsan_up(ptr::null_mut()) };
        assert_eq!(r, sftsan_result::NullArgument);
        (before, last_error())
    })
    .join()
    .unwrap();
    assert_eq!(other, (String::new(), "argument `ctx` is NULL".to_string()));
    assert_eq!(last_error(), full);
}

#[test]
fn a_message_is_cut_at_a_character_boundary() {
    // A node name with a two-byte character, quoted in the NOT_FOUND message.
    let down = Down::open();
    let mut out = ptr::null_mut();
    // SAFETY: valid pointers.
    let r = unsafe { sftsan_snapshot_path(down.ctx, c"\u{e9}\u{e9}".as_ptr(), 1, &mut out) };
    assert_eq!(r, sftsan_result::NotFound);
    let full = last_error();
    let at = full.find('\u{e9}').unwrap();
    let mut buf = vec![0 as c_char; at + 2]; // room for the first byte of 'é' and the NUL
                                             // SAFETY: `buf` holds buf.len() bytes.
    unsafe { sftsan_last_error(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: NUL-terminated by the call.
    let cut = unsafe { CStr::from_ptr(buf.as_ptr()) };
    assert_eq!(cut.to_str().expect("still UTF-8"), &full[..at]);
}

#[test]
fn version_and_result_names_are_static() {
    // SAFETY: static NUL-terminated strings.
    unsafe {
        assert_eq!(
            CStr::from_ptr(sftsan_version()).to_str().unwrap(),
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(
            CStr::from_ptr(sftsan_result_name(6)).to_str().unwrap(),
            "SFTSAN_RESULT_NOT_UP"
        );
        assert_eq!(
            CStr::from_ptr(sftsan_result_name(12345)).to_str().unwrap(),
            "SFTSAN_RESULT_UNKNOWN"
        );
    }
}

/// The same misuse from C, against both libraries; the shared one also under valgrind.
#[test]
fn misuse_from_c() {
    common::require_tools(&["gcc"]);
    let dir = tempfile::tempdir().unwrap();
    let spec = common::down_cluster_spec(dir.path());
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/misuse.c");
    for link in [common::Link::Shared, common::Link::Static] {
        let exe = dir.path().join(format!("misuse-{link:?}"));
        common::compile_c(&source, &exe, link);
        let out = std::process::Command::new(&exe)
            .arg(&spec)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{link:?}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("misuse: all checks passed"), "{stdout}");
    }
    common::require_tools(&["valgrind"]);
    let exe = dir.path().join("misuse-Shared");
    let out = common::valgrind().arg(&exe).arg(&spec).output().unwrap();
    assert!(
        out.status.success(),
        "valgrind: {} (99: invalid access or definite leak)\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
