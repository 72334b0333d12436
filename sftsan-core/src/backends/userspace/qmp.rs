//! A small synchronous QMP client over a UNIX socket.
//!
//! sftsan needs a handful of commands (blockdev-add/del, block-export-add/del, queries,
//! blockdev-reopen, quit) and the BLOCK_EXPORT_DELETED event; plain serde_json keeps this
//! independent of a generated schema that lags QEMU releases.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("QMP {command}: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP {0}: malformed reply")]
    Protocol(String),
    #[error("QMP: no {event} event within {timeout:?}")]
    EventTimeout { event: String, timeout: Duration },
}

pub struct Qmp {
    path: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let p = path.display().to_string();
        let io = |source| QmpError::Io {
            path: p.clone(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut qmp = Qmp {
            path: p.clone(),
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol("greeting".into()));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Io {
                path: self.path.clone(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol(line.trim().to_string()))
    }

    /// Runs one command and returns its `return` value. Events that arrive meanwhile are kept.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let msg = json!({"execute": command, "arguments": arguments});
        tracing::trace!(target: "sftsan::qmp", "-> {msg}");
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        loop {
            let reply = self.read_message()?;
            tracing::trace!(target: "sftsan::qmp", "<- {reply}");
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                return Err(QmpError::Command {
                    command: command.into(),
                    class: err["class"].as_str().unwrap_or("Error").into(),
                    desc: err["desc"].as_str().unwrap_or("").into(),
                });
            }
            if reply.get("event").is_some() {
                self.events.push(reply);
            }
        }
    }

    /// Waits for an event named `name` whose `data` satisfies `matches`.
    pub fn wait_event(
        &mut self,
        name: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Value, QmpError> {
        let hit = |e: &Value| e["event"] == name && matches(&e["data"]);
        if let Some(i) = self.events.iter().position(hit) {
            return Ok(self.events.remove(i));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QmpError::EventTimeout {
                    event: name.into(),
                    timeout,
                });
            }
            let _ = self.reader.get_ref().set_read_timeout(Some(left));
            match self.read_message() {
                Ok(e) if hit(&e) => return Ok(e),
                Ok(e) => self.events.push(e),
                Err(QmpError::Io { source, .. })
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }
}
