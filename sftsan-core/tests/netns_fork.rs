//! A command in a network namespace enters it between fork and exec, where only
//! async-signal-safe calls are allowed: nothing may allocate there (another thread may have
//! held the allocator's lock at the fork). This binary's allocator ends any forked child
//! that allocates before it execs, so the test sees it. Needs no root: the namespace does
//! not exist, and entering it must fail with its errno.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI32, Ordering};

use sftsan_core::transport::{NetnsTransport, Transport};

/// The test process's pid; 0 until the test starts.
static PARENT: AtomicI32 = AtomicI32::new(0);

/// Exit status of a forked child that allocated before exec.
const ALLOCATED_AFTER_FORK: i32 = 99;

struct ForkWatch;

// SAFETY: every allocation and deallocation is passed on to `System` unchanged; the check
// before it only reads an atomic and calls getpid, and may end a forked child.
unsafe impl GlobalAlloc for ForkWatch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let parent = PARENT.load(Ordering::Relaxed);
        // SAFETY: getpid and _exit are async-signal-safe and allocate nothing.
        if parent != 0 && unsafe { libc::getpid() } != parent {
            // SAFETY: _exit ends the forked child at once, running no destructors.
            unsafe { libc::_exit(ALLOCATED_AFTER_FORK) };
        }
        // SAFETY: the caller upholds `alloc`'s contract for `layout`; it is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from `System`, with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: ForkWatch = ForkWatch;

#[test]
fn entering_a_missing_namespace_fails_without_allocating_after_fork() {
    // SAFETY: getpid has no preconditions and cannot fail.
    PARENT.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    let transport = NetnsTransport::new("sftsan-test-no-such-namespace");
    let spawned = transport.command("true").spawn();
    match spawned {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
        Ok(mut child) => {
            let status = child.wait().unwrap();
            panic!(
                "the command ran in no namespace ({status}){}",
                if status.code() == Some(ALLOCATED_AFTER_FORK) {
                    ": the child allocated between fork and exec"
                } else {
                    ""
                }
            );
        }
    }
}
