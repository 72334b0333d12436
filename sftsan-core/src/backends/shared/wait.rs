//! Waiting for a kernel state with a deadline, woken by events rather than by sleeping.
//!
//! The pattern every caller follows: subscribe to the events first, then check the state,
//! then wait for an event and check again. A change between the check and the wait still
//! wakes the waiter, because the subscription was already there when it happened.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Checks `ready` now and after every return of `wake` (given the time left) until it
/// yields a value or `deadline` passes; `Ok(None)` means the deadline passed.
pub fn until<T, E>(
    deadline: Instant,
    mut ready: impl FnMut() -> Result<Option<T>, E>,
    mut wake: impl FnMut(Duration) -> Result<(), E>,
) -> Result<Option<T>, E> {
    loop {
        if let Some(value) = ready()? {
            return Ok(Some(value));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        wake(left)?;
    }
}

/// Waits up to `timeout` for `fd` to become readable; false when the time ran out.
pub fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Round up, so a wait of 0.4 ms does not become a busy loop of zero-length polls.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: `pfd` is one valid pollfd that outlives the call (nfds 1), and its fd is
        // borrowed, so it stays open while poll runs.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            n if n >= 0 => return Ok(n > 0),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    /// A waker over one end of a socket pair: returns when a byte arrives (consuming it) or
    /// the time runs out.
    fn waker(rx: &UnixStream) -> impl FnMut(Duration) -> io::Result<()> + '_ {
        move |left| {
            if readable(rx.as_fd(), left)? {
                let mut byte = [0u8; 1];
                (&*rx).read_exact(&mut byte)?;
            }
            Ok(())
        }
    }

    #[test]
    fn a_state_already_reached_needs_no_wait() {
        let (_tx, rx) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let got = until(
            start + Duration::from_secs(30),
            || Ok::<_, io::Error>(Some(7)),
            |_| panic!("waited although the state was reached"),
        );
        assert_eq!(got.unwrap(), Some(7));
        drop(rx);
    }

    #[test]
    fn an_event_wakes_the_waiter_long_before_the_deadline() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = reached.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100)); // the event happens later
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            tx.write_all(b"e").unwrap();
        });
        let start = Instant::now();
        let mut checks = 0;
        let got = until(
            start + Duration::from_secs(30),
            || {
                checks += 1;
                Ok(reached
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .then_some("there"))
            },
            waker(&rx),
        )
        .unwrap();
        writer.join().unwrap();
        assert_eq!(got, Some("there"));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // Checked once before waiting and once after the one event: no busy polling.
        assert_eq!(checks, 2);
    }

    #[test]
    fn without_the_state_it_gives_up_at_the_deadline() {
        let (_tx, rx) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(200);
        let got = until(deadline, || Ok::<Option<()>, _>(None), waker(&rx)).unwrap();
        assert_eq!(got, None);
        assert!(Instant::now() >= deadline);
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
