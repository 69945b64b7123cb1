//! The server side of the control socket: non-blocking, inside the
//! supervisor's event loop (no thread). Layer 2.

use super::proto::{candidate_paths, parse_request, Request, MAX_LINE};
use crate::config::model::Config;
use serde_json::Value;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNS: usize = 32;

pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

pub struct Server {
    listener: UnixListener,
    pub path: PathBuf,
    pub conns: Vec<Option<Conn>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A non-blocking listening socket at `path`, created 0600 (no moment where
/// others may connect). `AddrInUse` means a live launcher answers there.
fn listen_at(path: &Path) -> io::Result<UnixListener> {
    match bind_0600(path) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            bind_0600(path)
        }
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(e);
            }
            // Left by a launcher that is gone: replace it.
            let _ = std::fs::remove_file(path);
            bind_0600(path)
        }
        r => r,
    }
}

fn bind_0600(path: &Path) -> io::Result<UnixListener> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let res = bind(fd.as_raw_fd(), &addr);
    nix::sys::stat::umask(old);
    res.map_err(io::Error::from)?;
    // umask made it 0600; chmod again in case a default ACL on the directory
    // widened it.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    listen(&fd, Backlog::MAXCONN).map_err(io::Error::from)?;
    Ok(UnixListener::from(fd))
}

/// What reading a connection produced.
pub enum Incoming {
    Request(Request),
    /// A bad request: reply with this error, keep the connection.
    Bad(String),
    /// A line too long: reply and close.
    TooLong,
}

impl Server {
    /// Bind the first usable path. A socket left by a dead launcher is
    /// replaced; one a live launcher answers on is left alone. The usual
    /// case (a fresh path in an existing directory) costs socket, bind,
    /// listen and chmod: the directory is created, and a leftover socket
    /// probed and removed, only when bind says so.
    pub fn bind(cfg: &Config) -> Option<Server> {
        for path in candidate_paths(cfg) {
            match listen_at(&path) {
                Ok(listener) => {
                    log::debug!("control socket: {}", path.display());
                    return Some(Server {
                        listener,
                        path,
                        conns: Vec::new(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => log::warn!(
                    "control socket {}: another launcher is listening there",
                    path.display()
                ),
                Err(e) => log::debug!("control socket {}: {e}", path.display()),
            }
        }
        log::warn!("no control socket: none of the candidate paths was usable");
        None
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Accept pending connections from our own user (or root).
    pub fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let me = nix::unistd::Uid::effective().as_raw();
            let peer =
                nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                    .map(|c| c.uid())
                    .unwrap_or(u32::MAX);
            if peer != me && peer != 0 {
                log::warn!("control socket: refused a connection from uid {peer}");
                continue;
            }
            let live = self.conns.iter().filter(|c| c.is_some()).count();
            if live >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
                continue;
            }
            let conn = Conn {
                stream,
                buf: Vec::new(),
            };
            match self.conns.iter_mut().find(|c| c.is_none()) {
                Some(slot) => *slot = Some(conn),
                None => self.conns.push(Some(conn)),
            }
        }
    }

    /// Read what connection `i` sent: complete lines become requests. A
    /// closed connection is dropped.
    pub fn read(&mut self, i: usize) -> Vec<Incoming> {
        let mut out = Vec::new();
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return out;
        };
        let mut chunk = [0u8; 4096];
        let mut closed = false;
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => conn
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
            if conn.buf.len() > MAX_LINE {
                break;
            }
        }
        while let Some(nl) = conn.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = conn.buf.drain(..=nl).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(match parse_request(line) {
                Ok(r) => Incoming::Request(r),
                Err(e) => Incoming::Bad(e),
            });
        }
        if conn.buf.len() > MAX_LINE {
            out.push(Incoming::TooLong);
        }
        if closed && out.is_empty() {
            if let Some(slot) = self.conns.get_mut(i) {
                *slot = None;
            }
        }
        out
    }

    /// Send one reply line; a client that does not read is dropped.
    pub fn reply(&mut self, i: usize, v: &Value) {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return;
        };
        let mut line = v.to_string();
        line.push('\n');
        let _ = conn.stream.set_nonblocking(false);
        let _ = conn.stream.set_write_timeout(Some(Duration::from_secs(1)));
        let ok = conn.stream.write_all(line.as_bytes()).is_ok();
        let _ = conn.stream.set_nonblocking(true);
        if !ok {
            self.close(i);
        }
    }

    pub fn close(&mut self, i: usize) {
        if let Some(slot) = self.conns.get_mut(i) {
            *slot = None;
        }
    }
}
