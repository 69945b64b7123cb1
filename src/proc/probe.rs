//! Probes that never block the event loop: TCP connects and HTTP GETs on
//! non-blocking sockets in the poll set, host names resolved on one helper
//! thread (with a cache), command probes as children (spawned and reaped by the loop),
//! files checked with one `stat`. Each probe has a deadline; past it, it
//! fails (a command probe's group is killed). Layer 2.

use crate::config::model::{HostPort, ReadyCheck};
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};
use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::time::Instant;

/// How much of an HTTP answer is read: the status line is all we need.
const HTTP_HEAD: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Fail(String),
}

/// What [`Probes::start`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Started<'c> {
    /// The verdict, known at once.
    Done(Verdict),
    /// In flight: the verdict comes later.
    Pending,
    /// A command probe: the caller spawns this argv (as its service would
    /// run it) and follows the pid with [`Probes::start_cmd`].
    Spawn(&'c [String]),
}

enum Stage {
    /// Waiting for the resolver thread.
    Resolving {
        port: u16,
        http: Option<Vec<u8>>,
    },
    Connecting {
        sock: OwnedFd,
        rest: Vec<SocketAddr>,
        http: Option<Vec<u8>>,
    },
    Writing {
        sock: OwnedFd,
        req: Vec<u8>,
        sent: usize,
    },
    Reading {
        sock: OwnedFd,
        got: Vec<u8>,
    },
    /// A command probe: the loop reaps `pid` and calls `exited`.
    Cmd {
        pid: i32,
    },
}

struct Flight {
    deadline: Instant,
    stage: Stage,
}

/// What the resolver answered for a host name.
type Resolution = Result<Vec<SocketAddr>, String>;

/// How long an answer of the resolver is used again, and a failure.
const CACHE_OK: std::time::Duration = std::time::Duration::from_secs(30);
const CACHE_FAIL: std::time::Duration = std::time::Duration::from_secs(5);

/// The probes in flight, by the caller's id.
pub struct Probes {
    flights: HashMap<u64, Flight>,
    /// Command probes whose deadline passed: killed, still to be reaped.
    killed: Vec<i32>,
    wake_r: OwnedFd,
    wake_w: OwnedFd,
    /// The one resolver thread's queue (started with the first host name):
    /// getaddrinfo blocks (a DNS server that never answers), so it runs
    /// there, one name at a time, never in the loop, and the thread count
    /// stays the same whatever DNS does.
    resolver: Option<mpsc::Sender<String>>,
    tx: mpsc::Sender<(String, Resolution)>,
    rx: mpsc::Receiver<(String, Resolution)>,
    /// Host names asked of the resolver, with the probes waiting for each
    /// (a name is asked once however many probes want it).
    waiting: HashMap<String, Vec<u64>>,
    /// Recent answers, with when they go stale.
    cache: HashMap<String, (Resolution, Instant)>,
}

impl Probes {
    pub fn new() -> std::io::Result<Probes> {
        let (r, w) = super::output::pipe()?;
        nix::fcntl::fcntl(
            &w,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        let (tx, rx) = mpsc::channel();
        Ok(Probes {
            flights: HashMap::new(),
            killed: Vec::new(),
            wake_r: r,
            wake_w: w,
            resolver: None,
            tx,
            rx,
            waiting: HashMap::new(),
            cache: HashMap::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }

    /// Start probe `id` of `check`, whatever its kind, to end by
    /// `deadline`: a verdict known at once (a file check), one to come
    /// from `ready`, `resolved` or `expire`, or a command for the caller to
    /// spawn in its service's environment and hand to [`Probes::start_cmd`].
    pub fn start<'c>(&mut self, id: u64, check: &'c ReadyCheck, deadline: Instant) -> Started<'c> {
        let verdict = match check {
            ReadyCheck::Tcp(addr) => self.start_net(id, addr, None, deadline),
            ReadyCheck::Http(url) => {
                let req = format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mc-launcher\r\nConnection: close\r\n\r\n",
                    url.path, url.addr.host
                );
                self.start_net(id, &url.addr, Some(req.into_bytes()), deadline)
            }
            ReadyCheck::Cmd(argv) => return Started::Spawn(argv),
            ReadyCheck::File(p) => Some(if p.exists() {
                Verdict::Ok
            } else {
                Verdict::Fail(format!("{} does not exist", p.display()))
            }),
            // The core never probes it: READY=1 comes on the socket.
            ReadyCheck::Notify => Some(Verdict::Fail("notify is not probed".into())),
        };
        match verdict {
            Some(v) => Started::Done(v),
            None => Started::Pending,
        }
    }

    /// Connect to `addr` (then send `http`, a request, and read the
    /// answer's status line).
    fn start_net(
        &mut self,
        id: u64,
        addr: &HostPort,
        http: Option<Vec<u8>>,
        deadline: Instant,
    ) -> Option<Verdict> {
        let port = addr.port;
        let stage = match addr.host.literal() {
            Some(ip) => match connect_next(vec![SocketAddr::new(ip, port)]) {
                Ok((sock, rest)) => Stage::Connecting { sock, rest, http },
                Err(e) => return Some(Verdict::Fail(e)),
            },
            None => {
                let host = addr.host.to_string();
                let host = host.as_str();
                let now = Instant::now();
                match self.cache.get(host).filter(|(_, until)| *until > now) {
                    Some((res, _)) => match with_port(res.clone(), port).and_then(connect_next) {
                        Ok((sock, rest)) => Stage::Connecting { sock, rest, http },
                        Err(e) => return Some(Verdict::Fail(e)),
                    },
                    None => {
                        let asked = self.waiting.contains_key(host);
                        self.waiting.entry(host.to_string()).or_default().push(id);
                        if !asked {
                            if let Err(e) = self.ask(host) {
                                self.waiting.remove(host);
                                return Some(Verdict::Fail(format!("cannot resolve {host}: {e}")));
                            }
                        }
                        Stage::Resolving { port, http }
                    }
                }
            }
        };
        self.flights.insert(id, Flight { deadline, stage });
        None
    }

    /// Queue `host` for the resolver thread (started the first time).
    fn ask(&mut self, host: &str) -> std::io::Result<()> {
        if self.resolver.is_none() {
            let (qtx, qrx) = mpsc::channel::<String>();
            let tx = self.tx.clone();
            let wake = self.wake_w.try_clone()?;
            std::thread::Builder::new()
                .name("resolve".into())
                .spawn(move || {
                    for host in qrx {
                        let res = (host.as_str(), 0u16)
                            .to_socket_addrs()
                            .map(|a| a.collect())
                            .map_err(|e| e.to_string());
                        if tx.send((host, res)).is_err() {
                            break;
                        }
                        let _ = nix::unistd::write(&wake, b"!");
                    }
                })?;
            self.resolver = Some(qtx);
        }
        self.resolver
            .as_ref()
            .map(|q| q.send(host.to_string()))
            .transpose()
            .map_err(|_| std::io::Error::other("the resolver thread is gone"))?;
        Ok(())
    }

    /// Follow a command probe the caller spawned.
    pub fn start_cmd(&mut self, id: u64, pid: i32, deadline: Instant) {
        self.flights.insert(
            id,
            Flight {
                deadline,
                stage: Stage::Cmd { pid },
            },
        );
    }

    /// A reaped child: the verdict of its probe, if it was one. `Some(None)`
    /// for a probe that was already given up (consumed, no verdict).
    pub fn exited(&mut self, pid: i32, ok: bool, detail: &str) -> Option<Option<(u64, Verdict)>> {
        if let Some(i) = self.killed.iter().position(|&p| p == pid) {
            self.killed.swap_remove(i);
            return Some(None);
        }
        let id = self
            .flights
            .iter()
            .find(|(_, f)| matches!(f.stage, Stage::Cmd { pid: p } if p == pid))
            .map(|(&id, _)| id)?;
        self.flights.remove(&id);
        let v = if ok {
            Verdict::Ok
        } else {
            Verdict::Fail(detail.to_string())
        };
        Some(Some((id, v)))
    }

    /// Give up a probe (the service stopped): a command probe is killed.
    pub fn cancel(&mut self, id: u64) {
        if let Some(f) = self.flights.remove(&id) {
            if let Stage::Cmd { pid } = f.stage {
                super::spawn::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                self.killed.push(pid);
            }
        }
    }

    /// Pids of command probes still running (to kill at the very end).
    pub fn cmd_pids(&self) -> Vec<i32> {
        self.flights
            .values()
            .filter_map(|f| match f.stage {
                Stage::Cmd { pid } => Some(pid),
                _ => None,
            })
            .chain(self.killed.iter().copied())
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.flights.values().map(|f| f.deadline).min()
    }

    /// Probes past their deadline fail.
    pub fn expire(&mut self, now: Instant) -> Vec<(u64, Verdict)> {
        let due: Vec<u64> = self
            .flights
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        let mut out = Vec::new();
        for id in due {
            if let Some(f) = self.flights.remove(&id) {
                if let Stage::Cmd { pid } = f.stage {
                    super::spawn::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    self.killed.push(pid);
                }
                out.push((id, Verdict::Fail("timed out".into())));
            }
        }
        // A name still being resolved keeps its entry (it is asked once);
        // the probes that gave up meanwhile leave it.
        let flights = &self.flights;
        for ids in self.waiting.values_mut() {
            ids.retain(|id| flights.contains_key(id));
        }
        out
    }

    /// The fds to poll: (probe id or `None` for the resolver's wake-up, fd, events).
    pub fn poll_fds(&self) -> Vec<(Option<u64>, BorrowedFd<'_>, PollFlags)> {
        let mut out = vec![(None, self.wake_r.as_fd(), PollFlags::POLLIN)];
        for (&id, f) in &self.flights {
            match &f.stage {
                Stage::Connecting { sock, .. } | Stage::Writing { sock, .. } => {
                    out.push((Some(id), sock.as_fd(), PollFlags::POLLOUT))
                }
                Stage::Reading { sock, .. } => {
                    out.push((Some(id), sock.as_fd(), PollFlags::POLLIN))
                }
                _ => {}
            }
        }
        out
    }

    /// The resolver thread answered.
    pub fn resolved(&mut self) -> Vec<(u64, Verdict)> {
        let mut buf = [0u8; 64];
        while let Ok(n) = nix::unistd::read(&self.wake_r, &mut buf) {
            if n == 0 {
                break;
            }
        }
        let mut out = Vec::new();
        let now = Instant::now();
        while let Ok((host, res)) = self.rx.try_recv() {
            let ttl = if res.is_ok() { CACHE_OK } else { CACHE_FAIL };
            self.cache.retain(|_, (_, until)| *until > now);
            self.cache.insert(host.clone(), (res.clone(), now + ttl));
            for id in self.waiting.remove(&host).unwrap_or_default() {
                let Some(f) = self.flights.get_mut(&id) else {
                    continue; // given up meanwhile
                };
                let Stage::Resolving { port, http } = &mut f.stage else {
                    continue;
                };
                let (port, http) = (*port, http.take());
                match with_port(res.clone(), port).and_then(connect_next) {
                    Ok((sock, rest)) => f.stage = Stage::Connecting { sock, rest, http },
                    Err(e) => {
                        self.flights.remove(&id);
                        out.push((id, Verdict::Fail(e)));
                    }
                }
            }
        }
        out
    }

    /// Probe `id`'s socket is ready: advance it; a verdict when it is done.
    pub fn ready(&mut self, id: u64) -> Option<Verdict> {
        let f = self.flights.remove(&id)?;
        let deadline = f.deadline;
        let (stage, verdict) = advance(f.stage);
        match (stage, verdict) {
            (_, Some(v)) => Some(v),
            (Some(stage), None) => {
                self.flights.insert(id, Flight { deadline, stage });
                None
            }
            (None, None) => Some(Verdict::Fail("probe lost".into())),
        }
    }
}

/// One step of a network probe.
fn advance(stage: Stage) -> (Option<Stage>, Option<Verdict>) {
    match stage {
        Stage::Connecting { sock, rest, http } => {
            match socket::getsockopt(&sock, sockopt::SocketError) {
                Ok(0) => match http {
                    None => (None, Some(Verdict::Ok)),
                    Some(req) => (Some(Stage::Writing { sock, req, sent: 0 }), None),
                },
                Ok(err) => {
                    let e = Errno::from_raw(err);
                    match connect_next(rest) {
                        Ok((sock, rest)) => (Some(Stage::Connecting { sock, rest, http }), None),
                        Err(_) => (None, Some(Verdict::Fail(format!("connect: {}", e.desc())))),
                    }
                }
                Err(e) => (None, Some(Verdict::Fail(format!("connect: {e}")))),
            }
        }
        Stage::Writing { sock, req, sent } => {
            let rest = req.get(sent..).unwrap_or_default();
            match nix::unistd::write(&sock, rest) {
                Ok(n) if sent + n >= req.len() => (
                    Some(Stage::Reading {
                        sock,
                        got: Vec::new(),
                    }),
                    None,
                ),
                Ok(n) => (
                    Some(Stage::Writing {
                        sock,
                        req,
                        sent: sent + n,
                    }),
                    None,
                ),
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    (Some(Stage::Writing { sock, req, sent }), None)
                }
                Err(e) => (None, Some(Verdict::Fail(format!("send: {e}")))),
            }
        }
        Stage::Reading { sock, mut got } => {
            let mut buf = [0u8; 512];
            let mut file = std::fs::File::from(sock);
            let res = file.read(&mut buf);
            let sock = OwnedFd::from(file);
            match res {
                Ok(0) => (None, Some(http_verdict(&got))),
                Ok(n) => {
                    got.extend_from_slice(buf.get(..n).unwrap_or_default());
                    if got.contains(&b'\n') || got.len() >= HTTP_HEAD {
                        (None, Some(http_verdict(&got)))
                    } else {
                        (Some(Stage::Reading { sock, got }), None)
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    (Some(Stage::Reading { sock, got }), None)
                }
                Err(e) => (None, Some(Verdict::Fail(format!("receive: {e}")))),
            }
        }
        other => (Some(other), None),
    }
}

/// `HTTP/1.x 2xx` or `3xx` is a pass.
pub fn http_verdict(head: &[u8]) -> Verdict {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace();
    let proto = words.next().unwrap_or("");
    let code = words.next().and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(200..=399) if proto.starts_with("HTTP/") => Verdict::Ok,
        Some(c) if proto.starts_with("HTTP/") => Verdict::Fail(format!("HTTP status {c}")),
        _ => Verdict::Fail("not an HTTP answer".into()),
    }
}

/// The resolver's answer as addresses to connect to, on `port`.
fn with_port(res: Resolution, port: u16) -> Result<Vec<SocketAddr>, String> {
    match res {
        Ok(a) if !a.is_empty() => Ok(a
            .into_iter()
            .map(|mut s| {
                s.set_port(port);
                s
            })
            .collect()),
        Ok(_) => Err("no address".into()),
        Err(e) => Err(format!("cannot resolve: {e}")),
    }
}

/// Start a non-blocking connect to the first address that takes one.
fn connect_next(mut addrs: Vec<SocketAddr>) -> Result<(OwnedFd, Vec<SocketAddr>), String> {
    let mut last = String::from("no address");
    while !addrs.is_empty() {
        let addr = addrs.remove(0);
        let family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let sock = match socket::socket(
            family,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        ) {
            Ok(s) => s,
            Err(e) => {
                last = format!("socket: {e}");
                continue;
            }
        };
        let res = match addr {
            SocketAddr::V4(a) => socket::connect(sock.as_raw_fd(), &SockaddrIn::from(a)),
            SocketAddr::V6(a) => socket::connect(sock.as_raw_fd(), &SockaddrIn6::from(a)),
        };
        match res {
            Ok(()) | Err(Errno::EINPROGRESS) => return Ok((sock, addrs)),
            Err(e) => last = format!("connect {addr}: {}", e.desc()),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn http_answers() {
        let rows: &[(&[u8], bool)] = &[
            (b"HTTP/1.1 200 OK\r\n", true),
            (b"HTTP/1.0 302 Found\r\n", true),
            (b"HTTP/1.1 503 Service Unavailable\r\n", false),
            (b"SSH-2.0-OpenSSH\r\n", false),
            (b"", false),
        ];
        for (head, ok) in rows {
            assert_eq!(
                http_verdict(head) == Verdict::Ok,
                *ok,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    fn tcp(addr: &str) -> ReadyCheck {
        ReadyCheck::Tcp(HostPort::parse(addr, None).expect(addr))
    }

    fn http(url: &str) -> ReadyCheck {
        ReadyCheck::Http(crate::config::model::HttpUrl::parse(url).expect(url))
    }

    /// The kinds known at once, and a command probe started through `start`.
    #[test]
    fn every_kind_starts_through_start() {
        let far = Instant::now() + Duration::from_secs(30);
        let mut p = Probes::new().expect("probes");
        let rows: &[(ReadyCheck, Started)] = &[
            (ReadyCheck::File("/".into()), Started::Done(Verdict::Ok)),
            (
                ReadyCheck::File("/nonexistent/x".into()),
                Started::Done(Verdict::Fail("/nonexistent/x does not exist".into())),
            ),
            (
                ReadyCheck::Notify,
                Started::Done(Verdict::Fail("notify is not probed".into())),
            ),
            // Nobody listens on port 1; the verdict comes from the socket.
            (tcp("127.0.0.1:1"), Started::Pending),
        ];
        for (i, (check, want)) in rows.iter().enumerate() {
            assert_eq!(p.start(i as u64, check, far), *want, "{check:?}");
        }
        // Only the network probe is in flight.
        assert_eq!(p.next_deadline(), Some(far));
        p.cancel(3);
        assert!(p.is_empty());
        let cmd = ReadyCheck::Cmd(vec!["probe".into(), "-x".into()]);
        assert_eq!(
            p.start(10, &cmd, far),
            Started::Spawn(&["probe".into(), "-x".into()])
        );
        assert!(
            p.is_empty(),
            "nothing to follow before the caller spawned it"
        );
        p.start_cmd(10, 4_000_000, far);
        assert_eq!(p.cmd_pids(), vec![4_000_000]);
        assert_eq!(p.exited(4_000_000, true, ""), Some(Some((10, Verdict::Ok))));
        assert!(p.is_empty());
    }

    /// Drive probes the way the loop does: poll their fds, advance.
    fn drive(p: &mut Probes, id: u64) -> Verdict {
        let limit = Instant::now() + Duration::from_secs(5);
        loop {
            let fds: Vec<(Option<u64>, i32, PollFlags)> = p
                .poll_fds()
                .into_iter()
                .map(|(i, fd, ev)| (i, fd.as_raw_fd(), ev))
                .collect();
            let mut pfds: Vec<nix::poll::PollFd> = fds
                .iter()
                .map(|(_, fd, ev)| {
                    nix::poll::PollFd::new(unsafe { BorrowedFd::borrow_raw(*fd) }, *ev)
                })
                .collect();
            nix::poll::poll(&mut pfds, nix::poll::PollTimeout::from(100u16)).expect("poll");
            for ((who, _, _), pfd) in fds.iter().zip(&pfds) {
                if pfd.revents().is_some_and(|r| !r.is_empty()) {
                    match who {
                        None => {
                            if let Some((_, v)) = p.resolved().into_iter().find(|(i, _)| *i == id) {
                                return v;
                            }
                        }
                        Some(i) if *i == id => {
                            if let Some(v) = p.ready(id) {
                                return v;
                            }
                        }
                        _ => {}
                    }
                }
            }
            assert!(Instant::now() < limit, "probe never finished");
        }
    }

    #[test]
    fn tcp_and_http_against_local_listeners() {
        let far = Instant::now() + Duration::from_secs(30);
        let mut p = Probes::new().expect("probes");
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        assert_eq!(p.start(1, &tcp(&addr), far), Started::Pending);
        assert_eq!(drive(&mut p, 1), Verdict::Ok);
        // Nobody listens there any more.
        let closed = {
            let l2 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l2.local_addr().expect("addr").to_string()
        };
        p.start(2, &tcp(&closed), far);
        assert!(matches!(drive(&mut p, 2), Verdict::Fail(_)));
        // HTTP: a server thread answering 503 then 200 (a fresh listener:
        // the TCP probe's connection waits in the first one's backlog).
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let server = std::thread::spawn(move || {
            for status in ["503 Busy", "200 OK"] {
                let (mut s, _) = l.accept().expect("accept");
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let url = format!("http://{addr}/health");
        p.start(3, &http(&url), far);
        assert_eq!(drive(&mut p, 3), Verdict::Fail("HTTP status 503".into()));
        p.start(4, &http(&url), far);
        assert_eq!(drive(&mut p, 4), Verdict::Ok);
        server.join().expect("server");
        // A host name goes through the resolver thread.
        let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or("1");
        p.start(5, &tcp(&format!("localhost.:{port}")), far);
        assert!(matches!(drive(&mut p, 5), Verdict::Ok | Verdict::Fail(_)));
        assert!(p.is_empty());
    }

    #[test]
    fn deadlines_fail_probes() {
        use std::os::unix::process::CommandExt;
        let mut p = Probes::new().expect("probes");
        let now = Instant::now();
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        p.start_cmd(7, pid, now);
        assert_eq!(p.next_deadline(), Some(now));
        assert_eq!(p.expire(now), vec![(7, Verdict::Fail("timed out".into()))]);
        let st = child.wait().expect("wait");
        assert!(!st.success(), "killed at its deadline");
        // Its exit is consumed without a second verdict.
        assert_eq!(p.exited(pid, true, ""), Some(None));
        assert_eq!(p.exited(pid, true, ""), None);
    }
}
