//! The signal source.
//!
//! Every asynchronous signal is blocked at the first instruction of `main` and
//! read through a signalfd by the event loop. A blocked signal stays pending
//! even for PID 1 (which the kernel otherwise spares from signals it has no
//! handler for), so a `docker stop` that lands while we are still parsing
//! arguments is not lost: it is read as soon as the loop starts. Children get
//! an empty mask and default dispositions back before they exec.

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// Signals that report a fault in the launcher itself: never blocked, so a
/// bug crashes loudly instead of looping.
const SYNCHRONOUS: [Signal; 5] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGTRAP,
];

/// Real-time signals kept for directory watches (`proc::watch`: one per
/// watch, each read by the watch's own signalfd), counted from SIGRTMIN+1
/// (libc keeps the first ones for itself). The main signal source leaves
/// them, and SIGIO (what the kernel sends instead when their queue is
/// full), to the watches.
pub const WATCH_SIGNALS: i32 = 8;

/// The number of the `i`-th watch signal (`i < WATCH_SIGNALS`).
pub fn watch_signal(i: i32) -> i32 {
    nix::libc::SIGRTMIN() + 1 + i
}

/// Add (`on`) or remove a raw signal number: a real-time one has no
/// `Signal` variant.
fn set_raw(set: &mut SigSet, sig: i32, on: bool) {
    let mut raw: nix::libc::sigset_t = *set.as_ref();
    // SAFETY: `raw` is a valid, initialised sigset_t; sigaddset/sigdelset
    // only change one bit and reject a number out of range.
    unsafe {
        if on {
            nix::libc::sigaddset(&mut raw, sig);
        } else {
            nix::libc::sigdelset(&mut raw, sig);
        }
        *set = SigSet::from_sigset_t_unchecked(raw);
    }
}

/// The signalfd mask of watch `i`: its signal and the overflow's SIGIO.
pub fn watch_set(i: i32) -> SigSet {
    let mut set = SigSet::empty();
    set_raw(&mut set, watch_signal(i), true);
    set.add(Signal::SIGIO);
    set
}

fn blocked_set() -> SigSet {
    let mut set = SigSet::all();
    for s in SYNCHRONOUS {
        set.remove(s);
    }
    set
}

/// Block every asynchronous signal in the calling thread (and so in every
/// thread created later). Also ignore SIGTTIN/SIGTTOU so that handing the
/// terminal to a foreground child cannot stop the launcher.
pub fn block_all() {
    // Neither call can fail with valid arguments; if one did, there is no
    // better place to report it than the loop that will not see signals.
    let _ = signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked_set()), None);
    for s in [Signal::SIGTTIN, Signal::SIGTTOU] {
        // SAFETY: installing SIG_IGN runs no code of ours in signal context.
        let _ = unsafe { signal::signal(s, SigHandler::SigIgn) };
    }
}

/// The caller's blocked signals (bit N-1 = signal N), as the launcher
/// was started with them.
static CALLER_MASK: AtomicU64 = AtomicU64::new(0);
/// The caller's ignored signals, the same way.
static CALLER_IGNORED: AtomicU64 = AtomicU64::new(0);

/// The highest signal number (SIGRTMAX on Linux).
const MAX_SIGNAL: i32 = 64;

/// Signals whose disposition cannot change.
fn fixed(sig: i32) -> bool {
    sig == nix::libc::SIGKILL || sig == nix::libc::SIGSTOP
}

/// Record the signal setup the launcher was started with (blocked and
/// ignored signals), for the main command: tini's contract. Called by the
/// binary before Rust's runtime ignores SIGPIPE and before `block_all`.
/// Only raw system calls, no allocation.
pub fn record_caller() {
    use nix::libc;
    let (mut mask, mut ignored) = (0u64, 0u64);
    // SAFETY: zeroed sigset_t and sigaction are valid plain data; the
    // calls only read the process's own setup into them.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut old);
        if libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old) != 0 {
            return;
        }
        for sig in 1..=MAX_SIGNAL {
            let bit = 1u64 << (sig - 1);
            if libc::sigismember(&old, sig) == 1 {
                mask |= bit;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut sa) == 0
                && sa.sa_sigaction == libc::SIG_IGN
            {
                ignored |= bit;
            }
        }
    }
    CALLER_MASK.store(mask, Ordering::Relaxed);
    CALLER_IGNORED.store(ignored, Ordering::Relaxed);
}

/// The caller's blocked and ignored signals (bit N-1 = signal N).
pub fn caller_setup() -> (u64, u64) {
    (
        CALLER_MASK.load(Ordering::Relaxed),
        CALLER_IGNORED.load(Ordering::Relaxed),
    )
}

/// A sigset of the signals whose bits are set. Async-signal-safe.
pub fn sigset_of(bits: u64) -> nix::libc::sigset_t {
    use nix::libc;
    // SAFETY: a zeroed sigset_t is valid; sigemptyset/sigaddset only set
    // bits (and refuse numbers libc keeps for itself).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in 1..=MAX_SIGNAL {
            if bits & (1u64 << (sig - 1)) != 0 {
                libc::sigaddset(&mut set, sig);
            }
        }
        set
    }
}

/// Every signal whose disposition can be set (bit N-1 = signal N).
pub const ALL_SIGNALS: u64 =
    !((1u64 << (nix::libc::SIGKILL - 1)) | (1u64 << (nix::libc::SIGSTOP - 1)));

/// Undo `block_all` in a forked child, before exec: a service gets the
/// default disposition of every signal and an empty mask; the main
/// command (`caller`) gets the caller's ignored and blocked signals back.
/// Async-signal-safe: only raw system calls, no allocation.
pub fn reset_for_child(caller: bool) -> std::io::Result<()> {
    use nix::libc;
    let (mask, ignored) = if caller { caller_setup() } else { (0, 0) };
    for sig in (1..=MAX_SIGNAL).filter(|&s| !fixed(s)) {
        let h = if ignored & (1u64 << (sig - 1)) != 0 {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        // SAFETY: setting SIG_DFL or SIG_IGN runs no code of ours; libc
        // refuses the numbers it keeps for itself, which is fine.
        unsafe { libc::signal(sig, h) };
    }
    let set = sigset_of(mask);
    // SAFETY: a valid set, read by the call.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
    match rc {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// For a short-lived client (`ctl`): SIGINT, SIGTERM and SIGHUP end the
/// process at once with 128 + the signal (130, 143, 129), whatever it is
/// waiting for; every other signal stays as `block_all` left it.
pub fn exit_on_stop_signals() {
    extern "C" fn stop(sig: nix::libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { nix::libc::_exit(crate::error::Outcome::Signaled(sig).exit_code()) }
    }
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let act = signal::SigAction::new(
            SigHandler::Handler(stop),
            signal::SaFlags::empty(),
            SigSet::all(),
        );
        // SAFETY: the handler only calls _exit.
        let _ = unsafe { signal::sigaction(s, &act) };
        set.add(s);
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
}

/// A signal read from the signalfd, with who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub signal: Signal,
    pub sender_pid: i32,
}

pub struct SignalSource {
    fd: SignalFd,
}

impl SignalSource {
    pub fn new() -> std::io::Result<SignalSource> {
        // Blocked, but read by the directory watches.
        let mut set = blocked_set();
        for i in 0..WATCH_SIGNALS {
            set_raw(&mut set, watch_signal(i), false);
        }
        set.remove(Signal::SIGIO);
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(SignalSource { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Every pending signal, in the order the kernel gives them: read
    /// several at a time (one `read` usually takes them all; a read that
    /// does not fill the buffer took the last, no second read to hear
    /// `EAGAIN`).
    pub fn drain(&mut self) -> Vec<Received> {
        const INFO: usize = std::mem::size_of::<nix::libc::signalfd_siginfo>();
        const AT_ONCE: usize = 16;
        let mut out = Vec::new();
        let mut buf = [0u8; INFO * AT_ONCE];
        loop {
            let n = match nix::unistd::read(&self.fd, &mut buf) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            };
            for chunk in buf.get(..n).unwrap_or_default().chunks_exact(INFO) {
                // SAFETY: `chunk` holds INFO bytes written by the kernel as
                // one signalfd_siginfo (plain integers: any bytes are a
                // value); read unaligned from the byte buffer.
                let info: nix::libc::signalfd_siginfo =
                    unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) };
                if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                    out.push(Received {
                        signal,
                        sender_pid: info.ssi_pid as i32,
                    });
                }
            }
            if n < buf.len() {
                break;
            }
        }
        out
    }
}

/// Parse `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(text: &str) -> Option<Signal> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().ok()
}

/// `TERM` for SIGTERM: the short name operators write.
pub fn short_name(s: Signal) -> &'static str {
    let full = s.as_str();
    full.strip_prefix("SIG").unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_signal_forms() {
        let cases = [
            ("TERM", Some(Signal::SIGTERM)),
            ("SIGINT", Some(Signal::SIGINT)),
            ("hup", Some(Signal::SIGHUP)),
            ("9", Some(Signal::SIGKILL)),
            (" usr1 ", Some(Signal::SIGUSR1)),
            ("NOPE", None),
            ("0", None),
            ("999", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_signal(text), want, "{text}");
        }
        assert_eq!(short_name(Signal::SIGQUIT), "QUIT");
    }
}
