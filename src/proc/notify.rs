//! sd_notify both ways (README "Readiness notification"): the socket the
//! `ready: {notify: true}` services send `READY=1` to, and the launcher's
//! own messages to whoever supervises it (podman `--sdnotify=container`,
//! systemd) when it runs with `NOTIFY_SOCKET`. Layer 2.
//!
//! The services' socket is one datagram socket in the abstract namespace
//! (no file: works on a read-only root) with a random name. The kernel
//! tells each sender's pid (`SO_PASSCRED`); a message counts only from a
//! process of the process group of a service that asked for it.

use nix::sys::socket::{
    self, recvmsg, setsockopt, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The longest message read; sd_notify messages are a few lines.
const MAX_MESSAGE: usize = 4096;

pub struct NotifySocket {
    fd: OwnedFd,
    /// What goes into the services' `NOTIFY_SOCKET` (`@name`).
    pub env_value: String,
}

impl NotifySocket {
    pub fn bind(nonce: u64) -> std::io::Result<NotifySocket> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let name = format!("mc-launcher-notify-{}-{nonce:016x}", std::process::id());
        let addr = UnixAddr::new_abstract(name.as_bytes())?;
        socket::bind(fd.as_raw_fd(), &addr)?;
        setsockopt(&fd, sockopt::PassCred, &true)?;
        Ok(NotifySocket {
            fd,
            env_value: format!("@{name}"),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Every pending message, with its sender's pid and uid (`None` when
    /// the kernel gave no credentials).
    pub fn receive(&self) -> Vec<(Option<(i32, u32)>, String)> {
        let mut out = Vec::new();
        loop {
            let mut buf = [0u8; MAX_MESSAGE];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let res = recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_DONTWAIT,
            );
            let Ok(msg) = res else { break };
            let who = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmCredentials(cred) => Some((cred.pid(), cred.uid())),
                    _ => None,
                })
            });
            let n = msg.bytes;
            let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
            out.push((who, text));
        }
        out
    }
}

/// How many times a message the outer supervisor's full queue refused is
/// tried before it is dropped, and how long apart.
pub const OUT_TRIES: u32 = 20;
pub const OUT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// The launcher's own messages to its outer supervisor (`NOTIFY_SOCKET`):
/// sent without ever blocking (a receiver whose queue is full would hold
/// PID 1 in the kernel), kept in order and tried again from the loop
/// every [`OUT_RETRY`] while the queue stays full, dropped after
/// [`OUT_TRIES`] tries (counted, logged).
pub struct Outbox {
    target: String,
    pending: std::collections::VecDeque<(String, u32)>,
    next: Option<std::time::Instant>,
    /// Messages given up.
    pub dropped: u64,
}

impl Outbox {
    pub fn new(target: String) -> Outbox {
        Outbox {
            target,
            pending: Default::default(),
            next: None,
            dropped: 0,
        }
    }

    pub fn send(&mut self, message: String, now: std::time::Instant) {
        // A full queue of our own is bounded too: the oldest goes.
        if self.pending.len() >= 8 {
            self.pending.pop_front();
            self.drop_one("the queue of unsent messages is full");
        }
        self.pending.push_back((message, 0));
        self.flush(now);
    }

    /// When the loop should call [`Outbox::flush`] again.
    pub fn next_deadline(&self) -> Option<std::time::Instant> {
        self.next
    }

    /// Send what is pending, in order, until the receiver is full.
    pub fn flush(&mut self, now: std::time::Instant) {
        self.next = None;
        while let Some((message, tries)) = self.pending.front_mut() {
            match send_nonblocking(&self.target, message) {
                Ok(()) => {
                    self.pending.pop_front();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    *tries += 1;
                    if *tries >= OUT_TRIES {
                        self.pending.pop_front();
                        self.drop_one("its queue stayed full");
                        continue;
                    }
                    self.next = Some(now + OUT_RETRY);
                    return;
                }
                Err(e) => {
                    self.pending.pop_front();
                    self.drop_one(&e.to_string());
                }
            }
        }
    }

    /// The launcher is about to exit: what is still pending is dropped.
    pub fn give_up(&mut self) {
        while self.pending.pop_front().is_some() {
            self.drop_one("still unsent at the launcher's exit");
        }
        self.next = None;
    }

    fn drop_one(&mut self, why: &str) {
        self.dropped += 1;
        log::warn!(
            "sd_notify to {}: a message dropped ({why}); {} dropped so far",
            self.target,
            self.dropped
        );
    }
}

/// Send `message` to `target` (a path, or `@name` for the abstract
/// namespace), as sd_notify does; errors are the caller's to log.
pub fn send(target: &str, message: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    send_on(&sock, target, message)
}

/// [`send`] that never blocks: `WouldBlock` when the receiver is full.
pub fn send_nonblocking(target: &str, message: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    send_on(&sock, target, message)
}

fn send_on(
    sock: &std::os::unix::net::UnixDatagram,
    target: &str,
    message: &str,
) -> std::io::Result<()> {
    match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(message.as_bytes(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_with_their_sender() {
        let s = NotifySocket::bind(0x5eed).expect("bind");
        assert!(s.env_value.starts_with("@mc-launcher-notify-"));
        send(&s.env_value, "READY=1\nSTATUS=warming up").expect("send");
        let got = s.receive();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].0,
            Some((std::process::id() as i32, nix::unistd::getuid().as_raw()))
        );
        assert_eq!(got[0].1, "READY=1\nSTATUS=warming up");
        assert!(s.receive().is_empty());
    }
}
