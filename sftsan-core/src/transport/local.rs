//! Commands run directly by this process.

use super::Transport;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// Runs commands directly, in this process's own namespaces.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalTransport;

impl Transport for LocalTransport {
    fn command(&self, program: &str) -> Command {
        Command::new(program)
    }

    fn probe_tcp(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<()> {
        TcpStream::connect_timeout(&addr, timeout).map(drop)
    }

    fn describe(&self) -> String {
        "local".into()
    }
}
