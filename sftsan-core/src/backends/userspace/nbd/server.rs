//! An NBD server for one read-only export whose reads a [`Source`] answers. Each read runs
//! on its own thread, so a slow one never holds up the others on the connection.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};

use super::proto::{
    self, cmd, errno, opt, read_option_data, read_u32, read_u64, rep, tflag, write_option_reply,
    ReplyHeader, Request, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, MAX_READ,
};

/// What the export's reads come from.
pub trait Source: Send + Sync + 'static {
    /// The export's size in bytes.
    fn size(&self) -> u64;
    /// `length` bytes at `offset`, or an NBD error value.
    fn read(&self, offset: u64, length: u32) -> Result<Vec<u8>, u32>;
}

/// Block sizes announced to clients that ask: QEMU splits larger reads.
const PREFERRED_BLOCK: u32 = 64 * 1024;
const MAX_BLOCK: u32 = 4 << 20;
/// Reads of one connection answered at once (QEMU keeps at most 16 in flight).
const MAX_INFLIGHT: usize = 64;

const TRANSMISSION_FLAGS: u16 = tflag::HAS_FLAGS
    | tflag::READ_ONLY
    | tflag::SEND_FLUSH
    | tflag::SEND_CACHE
    | tflag::CAN_MULTI_CONN;

/// A connected socket the server can read on one thread and answer on others.
pub trait Socket: Read + Write + Send + Sized + 'static {
    /// A second handle on the same connection.
    fn duplicate(&self) -> io::Result<Self>;
}

impl Socket for UnixStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
}

impl Socket for std::net::TcpStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
}

/// Serves one client until it disconnects or the connection breaks.
pub fn serve<S: Socket>(mut stream: S, export: &str, source: Arc<dyn Source>) -> io::Result<()> {
    if !negotiate(&mut stream, export, source.size())? {
        return Ok(());
    }
    let writer = Arc::new(Mutex::new(stream.duplicate()?));
    let slots = Arc::new((Mutex::new(0usize), Condvar::new()));
    loop {
        let mut head = [0u8; 28];
        if let Err(e) = stream.read_exact(&mut head) {
            return match e.kind() {
                io::ErrorKind::UnexpectedEof => Ok(()),
                _ => Err(e),
            };
        }
        let req = Request::decode(&head)?;
        let reply = |error: u32| -> io::Result<()> {
            let head = ReplyHeader {
                error,
                handle: req.handle,
            };
            writer.lock().unwrap().write_all(&head.encode())
        };
        match req.kind {
            cmd::READ | cmd::CACHE => {
                let in_range = req
                    .offset
                    .checked_add(u64::from(req.length))
                    .is_some_and(|end| end <= source.size());
                if !in_range || req.length > MAX_READ {
                    reply(errno::EINVAL)?;
                    continue;
                }
                take_slot(&slots);
                let (source, writer, slots) = (source.clone(), writer.clone(), slots.clone());
                std::thread::Builder::new()
                    .name("nbd-read".into())
                    .spawn(move || {
                        answer_read(&req, &*source, &writer);
                        give_slot(&slots);
                    })?;
            }
            // Nothing here is ever written: there is nothing to make durable.
            cmd::FLUSH => reply(0)?,
            cmd::DISC => return Ok(()),
            cmd::WRITE => {
                // Skip the payload to stay in step with the client.
                io::copy(
                    &mut (&mut stream).take(u64::from(req.length)),
                    &mut io::sink(),
                )?;
                reply(errno::EPERM)?;
            }
            _ => reply(errno::EINVAL)?,
        }
    }
}

fn answer_read<S: Socket>(req: &Request, source: &dyn Source, writer: &Mutex<S>) {
    let result = source.read(req.offset, req.length);
    let mut w = writer.lock().unwrap();
    let head = |error| {
        ReplyHeader {
            error,
            handle: req.handle,
        }
        .encode()
    };
    // A client that went away is noticed by the request loop; nothing to do here.
    let _ = match result {
        Ok(data) if req.kind == cmd::READ => {
            w.write_all(&head(0)).and_then(|()| w.write_all(&data))
        }
        Ok(_) => w.write_all(&head(0)),
        Err(e) => w.write_all(&head(e)),
    };
}

fn take_slot(slots: &(Mutex<usize>, Condvar)) {
    let mut busy = slots.0.lock().unwrap();
    while *busy >= MAX_INFLIGHT {
        busy = slots.1.wait(busy).unwrap();
    }
    *busy += 1;
}

fn give_slot(slots: &(Mutex<usize>, Condvar)) {
    *slots.0.lock().unwrap() -= 1;
    slots.1.notify_one();
}

/// The server side of the fixed newstyle handshake. True when transmission begins.
fn negotiate<S: Socket>(s: &mut S, export: &str, size: u64) -> io::Result<bool> {
    let mut greeting = Vec::with_capacity(18);
    greeting.extend_from_slice(&proto::NBDMAGIC.to_be_bytes());
    greeting.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
    greeting.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&greeting)?;
    let client_flags = read_u32(s)?;
    if client_flags & u32::from(FLAG_FIXED_NEWSTYLE) == 0 {
        return Ok(false);
    }
    let no_zeroes = client_flags & u32::from(FLAG_NO_ZEROES) != 0;
    let known = |name: &[u8]| name.is_empty() || name == export.as_bytes();
    loop {
        if read_u64(s)? != proto::IHAVEOPT {
            return Err(proto::invalid("bad option magic"));
        }
        let option = read_u32(s)?;
        let len = read_u32(s)?;
        let data = read_option_data(s, len)?;
        match option {
            opt::EXPORT_NAME => {
                if !known(&data) {
                    return Ok(false); // the protocol's only answer: hang up
                }
                let mut msg = Vec::with_capacity(134);
                msg.extend_from_slice(&size.to_be_bytes());
                msg.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                if !no_zeroes {
                    msg.extend_from_slice(&[0u8; 124]);
                }
                s.write_all(&msg)?;
                return Ok(true);
            }
            opt::GO | opt::INFO => {
                let Some((name, infos)) = parse_go(&data) else {
                    write_option_reply(s, option, rep::ERR_INVALID, b"malformed request")?;
                    continue;
                };
                if !known(name) {
                    write_option_reply(s, option, rep::ERR_UNKNOWN, b"no such export")?;
                    continue;
                }
                let mut info = Vec::with_capacity(12);
                info.extend_from_slice(&proto::INFO_EXPORT.to_be_bytes());
                info.extend_from_slice(&size.to_be_bytes());
                info.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                write_option_reply(s, option, rep::INFO, &info)?;
                if infos.contains(&proto::INFO_BLOCK_SIZE) {
                    let mut sizes = Vec::with_capacity(14);
                    sizes.extend_from_slice(&proto::INFO_BLOCK_SIZE.to_be_bytes());
                    for v in [1u32, PREFERRED_BLOCK, MAX_BLOCK] {
                        sizes.extend_from_slice(&v.to_be_bytes());
                    }
                    write_option_reply(s, option, rep::INFO, &sizes)?;
                }
                write_option_reply(s, option, rep::ACK, &[])?;
                if option == opt::GO {
                    return Ok(true);
                }
            }
            opt::ABORT => {
                write_option_reply(s, option, rep::ACK, &[])?;
                return Ok(false);
            }
            opt::LIST => {
                let mut entry = Vec::with_capacity(4 + export.len());
                entry.extend_from_slice(&(export.len() as u32).to_be_bytes());
                entry.extend_from_slice(export.as_bytes());
                write_option_reply(s, option, rep::SERVER, &entry)?;
                write_option_reply(s, option, rep::ACK, &[])?;
            }
            // Structured replies, meta contexts, TLS: declined; QEMU goes on without them.
            _ => write_option_reply(s, option, rep::ERR_UNSUP, &[])?,
        }
    }
}

/// `NBD_OPT_GO`'s data: the export name and the information types asked for.
fn parse_go(data: &[u8]) -> Option<(&[u8], Vec<u16>)> {
    let name_len = proto::be32(data.get(..4)?) as usize;
    let name = data.get(4..4 + name_len)?;
    let rest = data.get(4 + name_len..)?;
    let count = proto::be16(rest.get(..2)?) as usize;
    let infos = rest.get(2..2 + 2 * count)?;
    Some((name, infos.chunks(2).map(proto::be16).collect()))
}

#[cfg(test)]
mod tests {
    use super::super::client::{Address, Connection, Failure};
    use super::*;
    use std::time::Duration;

    /// Byte `i` of the export is `i % 251`.
    struct Pattern(u64);

    impl Source for Pattern {
        fn size(&self) -> u64 {
            self.0
        }
        fn read(&self, offset: u64, length: u32) -> Result<Vec<u8>, u32> {
            if offset == 4096 {
                return Err(errno::EIO);
            }
            Ok((offset..offset + u64::from(length))
                .map(|i| (i % 251) as u8)
                .collect())
        }
    }

    fn served(size: u64) -> (tempfile::TempDir, Address) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || serve(conn, "img", Arc::new(Pattern(size))));
            }
        });
        (dir, Address::Unix(path))
    }

    #[test]
    fn the_client_reads_what_the_server_serves_and_sees_its_errors() {
        let (_dir, addr) = served(1 << 20);
        let c = Connection::open(&addr, "img", Duration::from_secs(5)).unwrap();
        assert_eq!(c.size(), 1 << 20);
        let data = c.read(1000, 3000, Duration::from_secs(5)).unwrap();
        assert_eq!(data.len(), 3000);
        assert!(data
            .iter()
            .enumerate()
            .all(|(i, b)| *b == ((1000 + i) % 251) as u8));
        assert_eq!(
            c.read(4096, 512, Duration::from_secs(5)),
            Err(Failure::Errno(errno::EIO))
        );
        assert_eq!(
            c.read((1 << 20) - 10, 512, Duration::from_secs(5)),
            Err(Failure::Errno(errno::EINVAL))
        );
        c.flush(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn an_unknown_export_is_refused_by_name() {
        let (_dir, addr) = served(4096);
        let err = Connection::open(&addr, "other", Duration::from_secs(5))
            .err()
            .unwrap();
        assert!(err.to_string().contains("\"other\""), "{err}");
    }

    #[test]
    fn a_closed_connection_fails_requests_at_once() {
        let (_dir, addr) = served(4096);
        let c = Connection::open(&addr, "img", Duration::from_secs(5)).unwrap();
        c.close();
        let started = std::time::Instant::now();
        assert!(matches!(
            c.read(0, 512, Duration::from_secs(5)),
            Err(Failure::Lost(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
