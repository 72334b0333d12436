//! An NBD client connection that keeps many requests in flight: a reader thread hands each
//! reply to the request waiting for it, and a request that waits past its deadline says so
//! instead of hanging.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::proto::{
    self, cmd, opt, read_option_data, read_u16, read_u32, read_u64, rep, write_option, ReplyHeader,
    Request, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES,
};

/// Where an export is served.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Address {
    /// A TCP server (a parent's daemon).
    Tcp(SocketAddr),
    /// A unix socket (a node's own export in remote mode, the switch).
    Unix(PathBuf),
}

impl std::str::FromStr for Address {
    type Err = String;

    /// An absolute path is a unix socket; anything else must be `address:port`.
    fn from_str(s: &str) -> Result<Address, String> {
        if s.starts_with('/') {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        s.parse()
            .map(Address::Tcp)
            .map_err(|_| format!("{s:?} is neither an absolute socket path nor address:port"))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A connected socket of either kind.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(addr: &Address, timeout: Duration) -> io::Result<Stream> {
        let s = match addr {
            Address::Tcp(a) => {
                let s = TcpStream::connect_timeout(a, timeout)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Address::Unix(p) => Stream::Unix(connect_unix(p, timeout)?),
        };
        s.set_timeouts(Some(timeout))?;
        Ok(s)
    }

    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }

    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a request got no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with this error.
    Errno(u32),
    /// The connection broke (or was closed) before the answer came.
    Lost(String),
    /// No answer within the request's deadline.
    Deadline,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Errno(e) => write!(f, "the server answered error {e}"),
            Failure::Lost(why) => write!(f, "connection lost: {why}"),
            Failure::Deadline => write!(f, "no answer in time"),
        }
    }
}

type Answer = Result<Vec<u8>, Failure>;

/// Requests sent and not answered yet, by handle: the data length each expects.
#[derive(Default)]
struct Inflight {
    waiting: HashMap<u64, (u32, SyncSender<Answer>)>,
    /// Set once the reader stops: nothing more will be answered.
    lost: Option<String>,
}

/// One client connection to one export.
pub struct Connection {
    writer: Mutex<Stream>,
    /// A handle on the socket that can shut it down while others read and write.
    control: Stream,
    inflight: Arc<Mutex<Inflight>>,
    next_handle: AtomicU64,
    size: u64,
}

impl Connection {
    /// Connects and negotiates `export`, all within `timeout`.
    pub fn open(addr: &Address, export: &str, timeout: Duration) -> io::Result<Connection> {
        let mut stream = Stream::connect(addr, timeout)?;
        let size = handshake(&mut stream, export)?;
        stream.set_timeouts(None)?;
        let reader = stream.try_clone()?;
        let control = stream.try_clone()?;
        let inflight = Arc::new(Mutex::new(Inflight::default()));
        let shared = inflight.clone();
        std::thread::Builder::new()
            .name("nbd-replies".into())
            .spawn(move || read_replies(reader, &shared))?;
        Ok(Connection {
            writer: Mutex::new(stream),
            control,
            inflight,
            next_handle: AtomicU64::new(1),
            size,
        })
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the connection is broken (every later request fails at once).
    pub fn is_lost(&self) -> bool {
        self.inflight.lock().unwrap().lost.is_some()
    }

    /// Reads `length` bytes at `offset`, waiting at most `deadline` for the answer.
    pub fn read(&self, offset: u64, length: u32, deadline: Duration) -> Answer {
        self.request(cmd::READ, offset, length, length, deadline)
    }

    /// Asks the server to make what it wrote durable.
    pub fn flush(&self, deadline: Duration) -> Result<(), Failure> {
        self.request(cmd::FLUSH, 0, 0, 0, deadline).map(drop)
    }

    fn request(
        &self,
        kind: u16,
        offset: u64,
        length: u32,
        reply_len: u32,
        deadline: Duration,
    ) -> Answer {
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(1);
        {
            let mut inflight = self.inflight.lock().unwrap();
            if let Some(why) = &inflight.lost {
                return Err(Failure::Lost(why.clone()));
            }
            inflight.waiting.insert(handle, (reply_len, tx));
        }
        let req = Request {
            flags: 0,
            kind,
            handle,
            offset,
            length,
        };
        if let Err(e) = self.writer.lock().unwrap().write_all(&req.encode()) {
            self.close();
            return Err(Failure::Lost(e.to_string()));
        }
        match rx.recv_timeout(deadline) {
            Ok(answer) => answer,
            // The entry stays: the reader still needs its length should the answer come.
            Err(RecvTimeoutError::Timeout) => Err(Failure::Deadline),
            Err(RecvTimeoutError::Disconnected) => Err(Failure::Lost("reader gone".into())),
        }
    }

    /// Breaks the connection: every request waiting on it fails at once.
    pub fn close(&self) {
        self.control.shutdown();
    }

    /// Tells the server goodbye, then closes.
    pub fn disconnect(&self) {
        let req = Request {
            flags: 0,
            kind: cmd::DISC,
            handle: 0,
            offset: 0,
            length: 0,
        };
        let _ = self.writer.lock().unwrap().write_all(&req.encode());
        self.close();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

fn read_replies(mut stream: Stream, inflight: &Mutex<Inflight>) {
    let why = loop {
        let mut head = [0u8; 16];
        if let Err(e) = stream.read_exact(&mut head) {
            break e.to_string();
        }
        let reply = match ReplyHeader::decode(&head) {
            Ok(r) => r,
            Err(e) => break e.to_string(),
        };
        let Some((len, tx)) = inflight.lock().unwrap().waiting.remove(&reply.handle) else {
            break format!("answer to unknown request {}", reply.handle);
        };
        let answer = if reply.error != 0 {
            Err(Failure::Errno(reply.error))
        } else {
            let mut data = vec![0u8; len as usize];
            if let Err(e) = stream.read_exact(&mut data) {
                let _ = tx.try_send(Err(Failure::Lost(e.to_string())));
                break e.to_string();
            }
            Ok(data)
        };
        // The requester may have given up waiting: its answer is dropped.
        let _ = tx.try_send(answer);
    };
    let mut inflight = inflight.lock().unwrap();
    inflight.lost = Some(why.clone());
    for (_, (_, tx)) in inflight.waiting.drain() {
        let _ = tx.try_send(Err(Failure::Lost(why.clone())));
    }
}

/// The client side of the fixed newstyle handshake with `NBD_OPT_GO`; returns the size.
fn handshake(s: &mut Stream, export: &str) -> io::Result<u64> {
    if read_u64(s)? != proto::NBDMAGIC || read_u64(s)? != proto::IHAVEOPT {
        return Err(proto::invalid("not a newstyle NBD server"));
    }
    let server_flags = read_u16(s)?;
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(proto::invalid(
            "the server lacks fixed newstyle negotiation",
        ));
    }
    let flags = u32::from(FLAG_FIXED_NEWSTYLE | (server_flags & FLAG_NO_ZEROES));
    s.write_all(&flags.to_be_bytes())?;
    let mut data = Vec::with_capacity(6 + export.len());
    data.extend_from_slice(&(export.len() as u32).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    write_option(s, opt::GO, &data)?;
    let mut size = None;
    loop {
        if read_u64(s)? != proto::OPTION_REPLY_MAGIC {
            return Err(proto::invalid("bad option reply magic"));
        }
        let _option = read_u32(s)?;
        let reply = read_u32(s)?;
        let len = read_u32(s)?;
        let body = read_option_data(s, len)?;
        match reply {
            rep::ACK => break,
            rep::INFO if body.len() >= 12 && proto::be16(&body) == proto::INFO_EXPORT => {
                size = Some(proto::be64(&body[2..]));
            }
            rep::INFO => {}
            r if r & 0x8000_0000 != 0 => {
                let msg = String::from_utf8_lossy(&body);
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("export {export:?} refused (NBD error {r:#x}): {msg}"),
                ));
            }
            _ => return Err(proto::invalid("unexpected option reply")),
        }
    }
    size.ok_or_else(|| proto::invalid("the server did not say the export's size"))
}

/// Connects to a unix socket within `timeout`. A plain connect blocks without limit while
/// the listener's backlog is full, which is what a stopped daemon's socket looks like after
/// a few attempts; a non-blocking connect says so instead (EAGAIN), and is tried again.
/// (Nothing signals room in a backlog, so the retry is paced.)
pub(crate) fn connect_unix(path: &std::path::Path, timeout: Duration) -> io::Result<UnixStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain syscall; on success the fd is ours.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // SAFETY: `addr` is a valid sockaddr_un of the given length.
        let rc = unsafe {
            libc::connect(
                fd,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the listener accepts no connection (its backlog is full)",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stream = UnixStream::from(socket);
    stream.set_nonblocking(false)?;
    Ok(stream)
}
