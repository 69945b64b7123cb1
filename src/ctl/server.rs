//! The server side of the control socket, inside the supervisor's event
//! loop (no thread). Every connection is non-blocking both ways: requests
//! are read into a per-connection buffer, replies queued and written when
//! the socket takes them. A client that does not read its replies, sends
//! an endless line or stays idle is dropped; when every slot is taken, the
//! connection idle the longest makes room, so `ctl health` always gets in.
//! Layer 2.

use super::proto::{candidate_paths, parse_request, Command, Reply, MAX_LINE};
use crate::config::model::Config;
use crate::proc::output::{logs, Follower};
use nix::poll::PollFlags;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Connections served at once.
const MAX_CONNS: usize = 32;
/// A connection that sends nothing for this long is closed.
pub const IDLE: Duration = Duration::from_secs(10);
/// Replies a client has not read, at most; beyond, it is dropped.
const MAX_UNREAD: usize = 1 << 20;

/// What the server follows of a client, beyond its bytes.
struct Session {
    last: Instant,
    /// Close once the queued replies are written.
    closing: bool,
    /// `ctl logs -f`: where it is in the rings; it is sent more as it
    /// reads, never more than `FOLLOW_CHUNK` waiting for it.
    follow: Option<Follower>,
}

/// What a follower is sent at once, at most (of log text, before JSON
/// escaping): it gets more when it has read that.
const FOLLOW_CHUNK: usize = 64 * 1024;

pub struct Server {
    listener: UnixListener,
    pub path: PathBuf,
    conns: Conns<Conn<UnixStream, Session>>,
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
    Request(Command),
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
        let paths = candidate_paths(cfg);
        for path in paths.iter().cloned() {
            match listen_at(&path) {
                Ok(listener) => {
                    log::debug!("control socket: {}", path.display());
                    return Some(Server {
                        listener,
                        path,
                        conns: Conns::default(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => log::warn!(
                    "control socket {}: another launcher is listening there",
                    path.display()
                ),
                Err(e) => log::debug!("control socket {}: {e}", path.display()),
            }
        }
        // The one line about it in a run (`check` says the same beforehand).
        let tried: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        log::warn!(
            "control socket: none of {} can be created: `mc-launcher ctl` and a HEALTHCHECK using it will not reach the launcher (add to docker run: --tmpfs /run)",
            tried.join(", ")
        );
        None
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The connections to poll, with what to wait for.
    pub fn poll_fds(&self) -> Vec<(u64, BorrowedFd<'_>, PollFlags)> {
        self.conns.poll_fds(|c| {
            let mut ev = PollFlags::empty();
            if !c.state.closing {
                ev |= PollFlags::POLLIN;
            }
            if !c.outbuf.is_empty() || c.state.follow.as_ref().is_some_and(|f| logs().has_news(f)) {
                ev |= PollFlags::POLLOUT;
            }
            (c.stream.as_fd(), ev)
        })
    }

    /// When the next idle connection is due to be closed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter(|c| c.state.follow.is_none())
            .map(|c| c.state.last + IDLE)
            .min()
    }

    /// Close connections idle past `IDLE` (a follower is not idle: it
    /// waits for lines).
    pub fn expire(&mut self, now: Instant) {
        self.conns
            .retain(|_, c| c.state.follow.is_some() || c.state.last + IDLE > now);
    }

    /// Accept pending connections from our own user (or root); their ids.
    pub fn accept(&mut self, now: Instant) -> Vec<u64> {
        let mut fresh = Vec::new();
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
            let session = Session {
                last: now,
                closing: false,
                follow: None,
            };
            let Some(conn) = Conn::accepted(stream, session) else {
                continue;
            };
            // Make room: the connection idle the longest goes.
            fresh.push(self.conns.admit(MAX_CONNS, |c| c.state.last, conn));
        }
        fresh
    }

    /// Read what connection `id` sent: complete lines become requests. A
    /// closed connection is dropped.
    pub fn read(&mut self, id: u64, now: Instant) -> Vec<Incoming> {
        let mut out = Vec::new();
        let Some(conn) = self.conns.get_mut(&id) else {
            return out;
        };
        let before = conn.inbuf.len();
        let closed = read_available(&mut conn.stream, &mut conn.inbuf, MAX_LINE) != Drained::Open;
        if conn.inbuf.len() > before {
            conn.state.last = now;
        }
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', conn.inbuf.get(start..).unwrap_or_default()) {
            let line = conn.inbuf.get(start..start + nl).unwrap_or_default();
            start += nl + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(match parse_request(line) {
                Ok(c) => Incoming::Request(c),
                Err(e) => Incoming::Bad(e),
            });
        }
        conn.inbuf.drain(..start);
        if conn.inbuf.len() > MAX_LINE {
            conn.inbuf.clear();
            out.push(Incoming::TooLong);
        }
        if closed {
            if out.is_empty() && conn.outbuf.is_empty() {
                self.conns.remove(&id);
            } else {
                conn.state.closing = true;
            }
        }
        out
    }

    /// Queue one reply line and write what the socket takes now.
    pub fn reply(&mut self, id: u64, reply: &Reply) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.outbuf.extend_from_slice(reply.to_line().as_bytes());
        if conn.outbuf.len() > MAX_UNREAD {
            log::debug!("control socket: a client that does not read its replies was dropped");
            self.conns.remove(&id);
            return;
        }
        self.write(id);
    }

    /// From now on, send `id` the lines `follower` has not read, as they
    /// come and as fast as it reads them (`ctl logs -f`).
    pub fn follow(&mut self, id: u64, follower: Follower) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.state.follow = Some(follower);
        }
        self.write(id);
    }

    /// Write queued replies of `id` (the socket polled writable); a
    /// follower whose replies are all written gets its next lines.
    pub fn write(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.outbuf.is_empty() && !conn.state.closing {
            if let Some(f) = &mut conn.state.follow {
                // A reader that does not follow is done once it has read
                // what was there when it asked.
                conn.state.closing = follow_lines(f, &mut conn.outbuf);
            }
        }
        if write_queued(&mut conn.stream, &mut conn.outbuf) == Written::Failed {
            self.conns.remove(&id);
            return;
        }
        if conn.outbuf.is_empty() && conn.state.closing {
            self.conns.remove(&id);
        }
    }

    /// Close `id` once what is queued for it is written.
    pub fn close_after_replies(&mut self, id: u64) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.state.closing = true;
        }
        self.write(id);
    }

    /// A hang-up or error on `id`: drop it.
    pub fn drop_conn(&mut self, id: u64) {
        self.conns.remove(&id);
    }
}

/// A follower's next lines, as one reply `{"ok":true,"log":"…"}` (none
/// when it has read everything); `true` when it will read no more.
fn follow_lines(f: &mut Follower, out: &mut Vec<u8>) -> bool {
    let mut text = Vec::new();
    let done = logs().read(f, &mut text, FOLLOW_CHUNK);
    if text.is_empty() {
        return done;
    }
    out.extend_from_slice(b"{\"ok\":true,\"log\":\"");
    crate::proc::frame::escape_json(&text, out);
    out.extend_from_slice(b"\"}\n");
    done
}

/// An accepted connection of a listener: the bytes it sent not yet used,
/// those queued for it, and what the listener follows of it (`state`).
pub(crate) struct Conn<S, T> {
    pub(crate) stream: S,
    pub(crate) inbuf: Vec<u8>,
    pub(crate) outbuf: Vec<u8>,
    pub(crate) state: T,
}

/// A stream a listener accepts (Unix or TCP).
pub(crate) trait Stream {
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
}

impl Stream for UnixStream {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        UnixStream::set_nonblocking(self, on)
    }
}

impl Stream for std::net::TcpStream {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        std::net::TcpStream::set_nonblocking(self, on)
    }
}

impl<S: Stream, T> Conn<S, T> {
    /// A `stream` just accepted, made non-blocking; `None` (it is closed)
    /// when it cannot be.
    pub(crate) fn accepted(stream: S, state: T) -> Option<Self> {
        stream.set_nonblocking(true).ok()?;
        Some(Conn {
            stream,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            state,
        })
    }
}

/// The open connections of a listener, by id.
pub(crate) struct Conns<C> {
    map: HashMap<u64, C>,
    next_id: u64,
}

impl<C> Default for Conns<C> {
    fn default() -> Self {
        Conns {
            map: HashMap::new(),
            next_id: 0,
        }
    }
}

impl<C> std::ops::Deref for Conns<C> {
    type Target = HashMap<u64, C>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<C> std::ops::DerefMut for Conns<C> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

impl<C> Conns<C> {
    /// Take `conn` under a new id (the one returned). When `max` are open,
    /// the one whose `key` is the oldest (longest idle, or nearest its
    /// deadline) is dropped first.
    pub(crate) fn admit(&mut self, max: usize, key: impl Fn(&C) -> Instant, conn: C) -> u64 {
        if self.map.len() >= max {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, c)| key(c))
                .map(|(&id, _)| id)
            {
                self.map.remove(&oldest);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.map.insert(id, conn);
        id
    }

    /// Each connection's id, fd and what to wait for on it (`wait`).
    pub(crate) fn poll_fds<'a>(
        &'a self,
        wait: impl Fn(&'a C) -> (BorrowedFd<'a>, PollFlags),
    ) -> Vec<(u64, BorrowedFd<'a>, PollFlags)> {
        self.map
            .iter()
            .map(|(&id, c)| {
                let (fd, ev) = wait(c);
                (id, fd, ev)
            })
            .collect()
    }
}

/// How a [`read_available`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Nothing more to read now (or `max` reached); the peer may send more.
    Open,
    /// The peer closed its side.
    Ended,
    /// A read failed.
    Failed,
}

/// Append what a non-blocking `stream` holds now to `inbuf`, stopping once
/// `inbuf` holds more than `max` bytes.
pub(crate) fn read_available(stream: &mut impl Read, inbuf: &mut Vec<u8>, max: usize) -> Drained {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Drained::Ended,
            Ok(n) => inbuf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Open,
            Err(_) => return Drained::Failed,
        }
        if inbuf.len() > max {
            return Drained::Open;
        }
    }
}

/// How a [`write_queued`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// All of `outbuf` went out, or the socket took nothing.
    Stopped,
    /// The socket is full: poll it writable and call again.
    Blocked,
    /// A write failed: the peer is gone.
    Failed,
}

/// Write what a non-blocking `stream` takes now from the front of `outbuf`,
/// removing what went out.
pub(crate) fn write_queued(stream: &mut impl Write, outbuf: &mut Vec<u8>) -> Written {
    while !outbuf.is_empty() {
        match stream.write(outbuf) {
            Ok(0) => break,
            Ok(n) => {
                outbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Written::Blocked,
            Err(_) => return Written::Failed,
        }
    }
    Written::Stopped
}
