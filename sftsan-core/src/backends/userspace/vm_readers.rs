//! Who may read a node's local NBD socket: root, and the group libvirt runs QEMU as, so
//! that the node's VMs open their disks' backing there and no other local user can.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{IoContext, Result};

/// The user libvirt's QEMU runs as on Debian and Ubuntu (`user` in qemu.conf).
const QEMU_USER: &str = "libvirt-qemu";

/// Makes `socket` readable and writable by root and QEMU's group only (0660).
pub(crate) fn admit(socket: &Path) -> Result<()> {
    if let Some(gid) = primary_group(QEMU_USER) {
        std::os::unix::fs::chown(socket, None, Some(gid)).at(socket)?;
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660)).at(socket)
}

/// The primary group of `user`, if the user exists.
fn primary_group(user: &str) -> Option<u32> {
    let name = CString::new(user).ok()?;
    let mut record = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to memory that lives through the call, `buf` with its length;
    // getpwnam_r (unlike getpwnam) keeps no shared state, so threads may call it at once.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            record.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    // SAFETY: on success a non-null `found` points to `record`, now filled in.
    (rc == 0 && !found.is_null()).then(|| unsafe { (*found).pw_gid })
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_has_group_zero_and_no_such_user_has_none() {
        assert_eq!(super::primary_group("root"), Some(0));
        assert_eq!(super::primary_group("no-such-user-sftsan"), None);
    }
}
