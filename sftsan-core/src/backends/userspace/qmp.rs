//! A small synchronous QMP client over a UNIX socket, speaking the typed commands and
//! events of [`super::qapi`].

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::qapi::{Command, Event, QmpCapabilities};
use crate::error::{Error, Result};

/// A connection to a QMP monitor, past capabilities negotiation; events are kept for waits.
pub struct Qmp {
    path: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The read timeout of every call but a timed wait (which restores it).
    timeout: Duration,
    /// A message read in part when a read timed out: the rest comes with the next read.
    pending: String,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode. `Ok(None)`:
    /// nothing listens at `path` (no socket, or a socket nobody accepts on).
    pub fn try_connect(path: &Path, timeout: Duration) -> Result<Option<Qmp>> {
        let stream = match super::nbd::client::connect_unix(path, timeout) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(Error::timeout(
                    format!("QMP socket {}", path.display()),
                    e.to_string(),
                ))
            }
            Err(e) => return Err(Error::io(path, e).context("QMP")),
        };
        let io = |e| Error::io(path, e).context("QMP");
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut qmp = Qmp {
            path: path.display().to_string(),
            reader: BufReader::new(stream),
            writer,
            timeout,
            pending: String::new(),
            events: Vec::new(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(qmp.protocol(&greeting.to_string()));
        }
        qmp.run(&QmpCapabilities {})?;
        Ok(Some(qmp))
    }

    /// Like [`Qmp::try_connect`]; nothing listening is an error.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        Self::try_connect(path, timeout)?.ok_or_else(|| {
            Error::unreachable(format!("QMP socket {}", path.display()), "nobody listens")
        })
    }

    fn protocol(&self, got: &str) -> Error {
        Error::corrupt(
            format!("QMP socket {}", self.path),
            format!("not a QMP message: {got:?}"),
        )
    }

    /// The next message. A read that times out keeps what it got of a message, so a later
    /// read continues it instead of parsing its second half alone.
    fn read_message(&mut self) -> Result<Value> {
        let read = self.reader.read_line(&mut self.pending);
        let what = || format!("QMP socket {}", self.path);
        match read {
            Ok(0) => Err(Error::unreachable(what(), "the daemon closed it")),
            Ok(_) if !self.pending.ends_with('\n') => Err(Error::unreachable(
                what(),
                "the daemon closed it mid-message",
            )),
            Ok(_) => {
                let line = std::mem::take(&mut self.pending);
                serde_json::from_str(&line).map_err(|_| self.protocol(line.trim()))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(Error::timeout(what(), "no answer in time"))
            }
            Err(e) => Err(Error::unreachable(what(), e.to_string())),
        }
    }

    /// Runs one command and returns what it returns. Events that arrive meanwhile are kept.
    pub fn run<C: Command>(&mut self, command: &C) -> Result<C::Returns> {
        let path = self.path.clone();
        let what = || format!("QMP {} on {path}", C::NAME);
        let arguments = serde_json::to_value(command)
            .map_err(|e| Error::invalid(what(), format!("cannot be encoded: {e}")))?;
        let answer = self.call(C::NAME, arguments)?;
        serde_json::from_value(answer.clone())
            .map_err(|e| Error::corrupt(what(), format!("unexpected answer {answer}: {e}")))
    }

    /// Sends `command` and returns its raw `return` value.
    fn call(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let msg = json!({"execute": command, "arguments": arguments});
        tracing::trace!(target: "sftsan::qmp", "-> {msg}");
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| Error::unreachable(format!("QMP socket {}", self.path), e.to_string()))?;
        loop {
            let reply = self.read_message()?;
            tracing::trace!(target: "sftsan::qmp", "<- {reply}");
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                return Err(Error::refused(
                    format!("QMP {command}"),
                    format!(
                        "{}: {}",
                        err["class"].as_str().unwrap_or("Error"),
                        err["desc"].as_str().unwrap_or("")
                    ),
                ));
            }
            if reply.get("event").is_some() {
                self.events.push(reply);
            }
        }
    }

    /// Waits for an event `E` whose data satisfies `matches`. The socket's read timeout is
    /// back to the connection's when this returns, however it returns.
    pub fn wait_event<E: Event>(
        &mut self,
        timeout: Duration,
        matches: impl Fn(&E) -> bool,
    ) -> Result<E> {
        let data = |e: &Value| -> Option<E> {
            (e["event"] == E::NAME)
                .then(|| serde_json::from_value(e.get("data").cloned().unwrap_or(json!({}))).ok())
                .flatten()
        };
        let hit = |e: &Value| data(e).is_some_and(|d| matches(&d));
        if let Some(i) = self.events.iter().position(hit) {
            let event = self.events.remove(i);
            return Ok(data(&event).expect("matched above"));
        }
        let result = self.wait_for(E::NAME, timeout, hit);
        let restored = self
            .reader
            .get_ref()
            .set_read_timeout(Some(self.timeout))
            .map_err(|e| Error::io(&self.path, e).context("QMP"));
        let event = result?;
        restored?;
        Ok(data(&event).expect("matched in wait_for"))
    }

    fn wait_for(
        &mut self,
        name: &str,
        timeout: Duration,
        hit: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::timeout(
                    format!("QMP event {name}"),
                    format!("none within {timeout:?}"),
                ));
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| Error::io(&self.path, e).context("QMP"))?;
            match self.read_message() {
                Ok(e) if hit(&e) => return Ok(e),
                Ok(e) => self.events.push(e),
                Err(e) if e.kind() == crate::error::ErrorKind::Timeout => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The socket's current read timeout (what the next call waits at most).
    pub fn read_timeout(&self) -> Option<Duration> {
        self.reader.get_ref().read_timeout().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::io::Read;

    /// Test events: any name, any data.
    macro_rules! test_event {
        ($type:ident, $name:literal) => {
            #[derive(Debug, Deserialize)]
            #[allow(dead_code)] // not every test reads the data
            struct $type {
                #[serde(default)]
                id: u32,
            }
            impl Event for $type {
                const NAME: &'static str = $name;
            }
        };
    }
    test_event!(Never, "NEVER");
    test_event!(Other, "OTHER");
    test_event!(Split, "SPLIT");
    use std::os::unix::net::UnixListener;

    /// A QMP peer on a socket in `dir`: greets, accepts capabilities, then runs `script`
    /// on the connection.
    fn peer(
        dir: &Path,
        script: impl FnOnce(&mut UnixStream) + Send + 'static,
    ) -> (std::path::PathBuf, std::thread::JoinHandle<()>) {
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"{\"QMP\": {\"version\": {}}}\n").unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).contains("qmp_capabilities"));
            s.write_all(b"{\"return\": {}}\n").unwrap();
            script(&mut s);
        });
        (path, handle)
    }

    /// A timed wait used to leave its short timeout on the socket: every later call then
    /// failed after that timeout, whatever the connection's own.
    #[test]
    fn a_timed_wait_restores_the_read_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let (path, peer) = peer(dir.path(), move |s| {
            gate_rx.recv().unwrap();
            s.write_all(b"{\"event\": \"OTHER\", \"data\": {}}\n")
                .unwrap();
            gate_rx.recv().unwrap();
        });
        let mut qmp = Qmp::connect(&path, Duration::from_secs(7)).unwrap();
        assert_eq!(qmp.read_timeout(), Some(Duration::from_secs(7)));
        let err = qmp
            .wait_event::<Never>(Duration::from_millis(50), |_| true)
            .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Timeout, "{err}");
        assert_eq!(qmp.read_timeout(), Some(Duration::from_secs(7)));
        gate_tx.send(()).unwrap();
        let event = qmp
            .wait_event::<Other>(Duration::from_secs(5), |_| true)
            .unwrap();
        assert_eq!(event.id, 0);
        assert_eq!(qmp.read_timeout(), Some(Duration::from_secs(7)));
        gate_tx.send(()).unwrap();
        peer.join().unwrap();
    }

    /// A message that arrives in two parts, the second after a read timed out, is read
    /// whole: the first part is not dropped.
    #[test]
    fn a_message_split_by_a_timeout_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let (path, peer) = peer(dir.path(), move |s| {
            s.write_all(b"{\"event\": \"SPLIT\", ").unwrap();
            gate_rx.recv().unwrap();
            s.write_all(b"\"data\": {\"id\": 3}}\n").unwrap();
        });
        let mut qmp = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        let err = qmp
            .wait_event::<Split>(Duration::from_millis(100), |_| true)
            .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Timeout, "{err}");
        gate_tx.send(()).unwrap();
        let event = qmp
            .wait_event::<Split>(Duration::from_secs(5), |_| true)
            .unwrap();
        assert_eq!(event.id, 3);
        peer.join().unwrap();
    }

    #[test]
    fn nobody_listening_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        assert!(Qmp::try_connect(&missing, Duration::from_secs(1))
            .unwrap()
            .is_none());
        let err = Qmp::connect(&missing, Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(err.kind(), crate::error::ErrorKind::Unreachable);
    }
}
