//! Device events through libudev (the `udev` crate), to wait for a disk to appear or an
//! iSCSI session to go without sleeping in a loop.
//!
//! Where udevd runs (its control socket `/run/udev/control` is there, libudev's own test),
//! the monitor listens to udev's events: they come after udev's rules ran, and a disk
//! counts as there only once udev has initialized it, so nothing sftsan builds on it races
//! udev's own probing of it. Without udevd (the kernel tier's guest, minimal hosts) udev
//! would send nothing, so the monitor listens to the kernel's uevents instead. Either way
//! the state itself is read from sysfs; events only wake the waiter.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::wait;
use crate::error::{Error, Result};

/// Where events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// udevd's events, after its rules ran.
    Udev,
    /// The kernel's uevents (no udevd).
    Kernel,
}

/// udevd's control socket: libudev takes its presence to mean udevd runs.
const UDEV_CONTROL: &str = "/run/udev/control";

/// A change that sends no event of the watched subsystems is still seen this soon.
pub const RECHECK: Duration = Duration::from_secs(1);

impl Source {
    /// udev's events when udevd runs (its control socket exists), else the kernel's.
    pub fn detect() -> Source {
        Source::given_control(Path::new(UDEV_CONTROL))
    }

    fn given_control(control: &Path) -> Source {
        if control.exists() {
            Source::Udev
        } else {
            Source::Kernel
        }
    }
}

/// A subscription to the events of some subsystems, made before the state is checked.
pub struct DeviceEvents {
    socket: udev::MonitorSocket,
    source: Source,
}

impl DeviceEvents {
    /// Subscribes to the events of `subsystems` (e.g. `block`, `iscsi_session`).
    pub fn subscribe(subsystems: &[&str]) -> Result<DeviceEvents> {
        let source = Source::detect();
        let fail = |e: std::io::Error| {
            Error::io("device events", e).context(format!("subscribing to {source:?}"))
        };
        let mut builder = match source {
            Source::Udev => udev::MonitorBuilder::new(),
            Source::Kernel => udev::MonitorBuilder::new_kernel(),
        }
        .map_err(fail)?;
        for s in subsystems {
            builder = builder.match_subsystem(s).map_err(fail)?;
        }
        let socket = builder.listen().map_err(fail)?;
        Ok(DeviceEvents { socket, source })
    }

    /// Where this subscription's events come from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Checks `ready` now and after every event (or [`RECHECK`] without one) until it
    /// yields a value or `timeout` passes; `Ok(None)` means the time ran out.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Result<Option<T>> {
        wait::until(
            Instant::now() + timeout,
            || Ok(ready()),
            |left| {
                wait::readable(self.socket.as_fd(), left.min(RECHECK))
                    .map_err(|e| Error::io("device events", e).context("waiting"))?;
                // Drain what arrived: the state is read from sysfs, not from the events.
                for _ in self.socket.iter() {}
                Ok(())
            },
        )
    }

    /// Whether udev is done with block device `major:minor`: it has initialized it (its
    /// rules ran). Always true without udevd.
    pub fn settled(&self, major: u32, minor: u32) -> bool {
        self.source == Source::Kernel
            || udev::Device::from_devnum(udev::DeviceType::Block, libc::makedev(major, minor))
                .is_ok_and(|d| d.is_initialized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udevs_events_where_its_control_socket_is_else_the_kernels() {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("control");
        assert_eq!(Source::given_control(&control), Source::Kernel);
        std::fs::write(&control, "").unwrap();
        assert_eq!(Source::given_control(&control), Source::Udev);
    }
}
