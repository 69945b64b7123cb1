//! `GET|HEAD /metrics`, `/livez`, `/readyz` and `/status` over HTTP/1.1
//! (`http.listen`, alias `metrics.listen`), inside the event loop
//! like the control socket: non-blocking sockets, a bounded number of
//! connections, a bounded request, one deadline per connection (a client
//! that sends nothing, or never reads the answer, is dropped when it
//! passes), and `Connection: close` after each answer. The body is the
//! shell's to supply (the core builds it). Layer 2.

use super::server::{read_available, write_queued, Conn, Conns, Drained, Written};
use nix::poll::PollFlags;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Connections served at once; one more makes the oldest go.
const MAX_CONNS: usize = 16;
/// The whole exchange (request in, answer out) must fit in this.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// The longest request head accepted (Prometheus sends ~300 bytes).
const MAX_REQUEST: usize = 8 * 1024;
/// The longest answer queued (the exposition of thousands of services).
const MAX_ANSWER: usize = 8 << 20;

/// What the server follows of an exchange, beyond its bytes.
struct Exchange {
    deadline: Instant,
    /// The request was read: now only writing.
    answered: bool,
    /// A `HEAD` request: the answer's head only.
    head_only: bool,
}

/// What a client asked, of which connection: answer with `respond`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub id: u64,
    pub page: Page,
}

/// The pages served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The Prometheus exposition.
    Metrics,
    /// 200 or 503 by the rules of `ctl health --live`.
    Live,
    /// 200 or 503 by the rules of `ctl health --ready`.
    Ready,
    /// The JSON of `ctl --json status`.
    Status,
}

impl Page {
    fn of(path: &[u8]) -> Option<Page> {
        Some(match path {
            b"/metrics" => Page::Metrics,
            b"/livez" => Page::Live,
            b"/readyz" => Page::Ready,
            b"/status" => Page::Status,
            _ => return None,
        })
    }
}

pub struct HttpServer {
    listener: TcpListener,
    pub addr: SocketAddr,
    conns: Conns<Conn<TcpStream, Exchange>>,
}

impl HttpServer {
    pub fn bind(addr: SocketAddr) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(HttpServer {
            listener,
            addr,
            conns: Conns::default(),
        })
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The connections to poll, with what to wait for.
    pub fn poll_fds(&self) -> Vec<(u64, BorrowedFd<'_>, PollFlags)> {
        self.conns.poll_fds(|c| {
            let ev = if c.state.answered {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            (c.stream.as_fd(), ev)
        })
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().map(|c| c.state.deadline).min()
    }

    /// Drop the connections past their deadline.
    pub fn expire(&mut self, now: Instant) {
        self.conns.retain(|_, c| c.state.deadline > now);
    }

    pub fn accept(&mut self, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock, or a connection that went away before we
                // took it, or no fd left (EMFILE): try again next round.
                Err(_) => break,
            };
            let exchange = Exchange {
                deadline: now + DEADLINE,
                answered: false,
                head_only: false,
            };
            let Some(conn) = Conn::accepted(stream, exchange) else {
                continue;
            };
            self.conns.admit(MAX_CONNS, |c| c.state.deadline, conn);
        }
    }

    /// Read what `id` sent; a complete request head is answered here
    /// (errors) or handed back (a page to answer).
    pub fn read(&mut self, id: u64) -> Option<Ask> {
        let conn = self.conns.get_mut(&id)?;
        if conn.state.answered {
            return None;
        }
        // Ended: the client closed its side, so what it sent is all there
        // is (a request then `shutdown(SHUT_WR)` still gets its answer).
        let ended = match read_available(&mut conn.stream, &mut conn.inbuf, MAX_REQUEST) {
            Drained::Open => false,
            Drained::Ended => true,
            Drained::Failed => {
                self.conns.remove(&id);
                return None;
            }
        };
        let end = memchr::memmem::find(&conn.inbuf, b"\r\n\r\n");
        // The head, its blank line included, within MAX_REQUEST bytes.
        if end.map_or(conn.inbuf.len(), |e| e + 4) > MAX_REQUEST {
            self.respond(id, 431, "text/plain", b"request too large\n");
            return None;
        }
        let Some(end) = end else {
            if ended {
                // Gone before asking anything complete.
                self.conns.remove(&id);
            }
            return None;
        };
        let head = conn.inbuf.get(..end).unwrap_or_default();
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let mut words = line.split(|&b| b == b' ');
        let (method, target, version) = (words.next(), words.next(), words.next());
        let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
        conn.state.head_only = method == Some(b"HEAD".as_slice());
        let method = if conn.state.head_only {
            Some(b"GET".as_slice())
        } else {
            method
        };
        match (method, path, version) {
            (Some(_), Some(_), Some(v)) if !v.starts_with(b"HTTP/1.") => {
                self.respond(id, 505, "text/plain", b"HTTP/1.x only\n");
                None
            }
            (Some(b"GET"), Some(path), Some(_)) => match Page::of(path) {
                Some(page) => Some(Ask { id, page }),
                None => {
                    self.respond(
                        id,
                        404,
                        "text/plain",
                        b"not found: try /metrics, /livez, /readyz or /status\n",
                    );
                    None
                }
            },
            (Some(_), Some(_), Some(_)) => {
                self.respond(id, 405, "text/plain", b"only GET and HEAD\n");
                None
            }
            _ => {
                self.respond(id, 400, "text/plain", b"bad request\n");
                None
            }
        }
    }

    /// Queue the answer to `id` and write what the socket takes now.
    pub fn respond(&mut self, id: u64, status: u16, content_type: &str, body: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Error",
        };
        let allow = if status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            body.len()
        );
        if head.len() + body.len() > MAX_ANSWER {
            self.conns.remove(&id);
            return;
        }
        conn.inbuf = Vec::new();
        conn.outbuf.clear();
        conn.outbuf.extend_from_slice(head.as_bytes());
        if !conn.state.head_only {
            conn.outbuf.extend_from_slice(body);
        }
        conn.state.answered = true;
        self.write(id);
    }

    /// Write more of the answer (the socket polled writable); the
    /// connection closes once all of it went out.
    pub fn write(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if write_queued(&mut conn.stream, &mut conn.outbuf) == Written::Blocked {
            return;
        }
        // All written, or the peer is gone: done either way. Unread
        // request bytes (a head too large) are read away first: closing
        // with them would reset the connection before the client reads
        // the answer.
        let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            if !matches!(conn.stream.read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
        self.conns.remove(&id);
    }

    /// A hang-up or error on `id`.
    pub fn drop_conn(&mut self, id: u64) {
        self.conns.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_by_path() {
        let rows: &[(&[u8], Option<Page>)] = &[
            (b"/metrics", Some(Page::Metrics)),
            (b"/livez", Some(Page::Live)),
            (b"/readyz", Some(Page::Ready)),
            (b"/status", Some(Page::Status)),
            (b"/", None),
            (b"/livez/", None),
            (b"/LIVEZ", None),
            (b"livez", None),
        ];
        for (path, page) in rows {
            assert_eq!(Page::of(path), *page, "{}", String::from_utf8_lossy(path));
        }
    }
}
