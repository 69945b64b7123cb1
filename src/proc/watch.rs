//! Watching directories for changes (the SSH key directories with
//! `ssh.watch`): no thread, no polling, one fd in the event loop's poll set.
//!
//! The kernel's directory notification (`fcntl(F_NOTIFY)`, "dnotify") marks
//! each directory, and reports through a real-time signal of the watch's
//! own (`signals::watch_signal`), read from a signalfd. Not inotify: closing
//! an inotify instance that has watches waits for an SRCU grace period
//! (8–25 ms measured on this project's machine), and a process's exit closes
//! it — so every stop paid that before the launcher's parent saw it gone.
//! dnotify marks belong to one group that lives as long as the kernel;
//! dropping them is free.
//!
//! Only what means a change is asked for — create, delete, rename, write,
//! attribute change — never access, so the launcher's own reads of what it
//! watches cannot wake it up again. A directory that does not exist yet is
//! waited for from its nearest existing parent (a change there counts only
//! once the directory exists). A watched directory's parent is watched for
//! removals and renames too, so a directory removed or replaced (an empty one
//! makes no event of its own) is noticed and followed. Layer 2.

use nix::libc;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

// <linux/fcntl.h>; the libc crate does not export them all for every target.
const F_SETSIG: libc::c_int = 10;
const DN_MODIFY: libc::c_int = 0x2;
const DN_CREATE: libc::c_int = 0x4;
const DN_DELETE: libc::c_int = 0x8;
const DN_RENAME: libc::c_int = 0x10;
const DN_ATTRIB: libc::c_int = 0x20;
const DN_MULTISHOT: libc::c_int = 0x8000_0000_u32 as libc::c_int;

/// Which watch signals are taken (bit i: `signals::watch_signal(i)`).
static SLOTS: AtomicU32 = AtomicU32::new(0);

fn take_slot() -> Option<i32> {
    let mut cur = SLOTS.load(Ordering::Relaxed);
    loop {
        let free = (0..crate::signals::WATCH_SIGNALS).find(|i| cur & (1 << i) == 0)?;
        match SLOTS.compare_exchange(cur, cur | (1 << free), Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Some(free),
            Err(now) => cur = now,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// One of the watched directories itself: any event is a change.
    Dir,
    /// The nearest existing parent of a directory that does not exist yet:
    /// a change once it does.
    Awaiting,
    /// The parent of a watched directory: a change if the directory went.
    Guard,
}

struct Watched {
    path: PathBuf,
    kind: Kind,
    /// For `Awaiting`: the name under `path` that leads to the directory.
    only: Option<OsString>,
    /// Device and inode when opened: a directory replaced at the same path
    /// is a different one.
    id: (u64, u64),
    fd: OwnedFd,
}

pub struct DirWatch {
    sfd: SignalFd,
    slot: i32,
    dirs: Vec<PathBuf>,
    watched: Vec<Watched>,
}

/// What to watch for `dir`: itself, or its nearest existing parent and the
/// name under it that leads to `dir`.
fn target(dir: &Path) -> Option<(PathBuf, Option<OsString>)> {
    if dir.is_dir() {
        return Some((dir.to_path_buf(), None));
    }
    let mut child = dir;
    for a in dir.ancestors().skip(1) {
        if a.is_dir() {
            return Some((a.to_path_buf(), child.file_name().map(|n| n.to_os_string())));
        }
        child = a;
    }
    None
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl DirWatch {
    pub fn new(dirs: &[PathBuf]) -> std::io::Result<DirWatch> {
        let slot =
            take_slot().ok_or_else(|| std::io::Error::other("too many directory watches"))?;
        let set = crate::signals::watch_set(slot);
        // Blocked here too (the launcher blocks every signal at its start,
        // before any thread exists): a pending one waits for the signalfd.
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&set),
            None,
        );
        let sfd = match SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(s) => s,
            Err(e) => {
                SLOTS.fetch_and(!(1 << slot), Ordering::AcqRel);
                return Err(e.into());
            }
        };
        let mut w = DirWatch {
            sfd,
            slot,
            dirs: dirs.to_vec(),
            watched: Vec::new(),
        };
        w.rewatch();
        Ok(w)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sfd.as_fd()
    }

    /// Mark `path` for the events of `kind`; the mark lives as long as the fd.
    fn mark(&self, path: &Path, kind: Kind, only: Option<OsString>) -> std::io::Result<Watched> {
        let fd = nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC
                | nix::fcntl::OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        )?;
        let st = nix::sys::stat::fstat(&fd)?;
        let events = match kind {
            Kind::Dir => DN_CREATE | DN_DELETE | DN_RENAME | DN_MODIFY | DN_ATTRIB,
            Kind::Awaiting => DN_CREATE | DN_RENAME,
            Kind::Guard => DN_DELETE | DN_RENAME,
        };
        let sig = crate::signals::watch_signal(self.slot);
        // SAFETY: plain fcntl commands on an fd this frame owns.
        unsafe {
            if libc::fcntl(fd.as_raw_fd(), F_SETSIG, sig) < 0
                || libc::fcntl(fd.as_raw_fd(), libc::F_NOTIFY, events | DN_MULTISHOT) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Watched {
            path: path.to_path_buf(),
            kind,
            only,
            id: (st.st_dev as u64, st.st_ino as u64),
            fd,
        })
    }

    /// (Re)attach the marks, following directories that appeared, went or
    /// were replaced.
    pub fn rewatch(&mut self) {
        let mut wanted: Vec<(PathBuf, Kind, Option<OsString>)> = Vec::new();
        for dir in &self.dirs {
            match target(dir) {
                Some((path, None)) => {
                    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                        wanted.push((parent.to_path_buf(), Kind::Guard, None));
                    }
                    wanted.push((path, Kind::Dir, None));
                }
                Some((path, only)) => wanted.push((path, Kind::Awaiting, only)),
                None => {}
            }
        }
        // Keep a mark that is still wanted and still on the same directory.
        self.watched.retain(|w| {
            wanted
                .iter()
                .any(|(p, k, o)| *p == w.path && *k == w.kind && *o == w.only)
                && identity(&w.path) == Some(w.id)
        });
        for (path, kind, only) in wanted {
            if self
                .watched
                .iter()
                .any(|w| w.path == path && w.kind == kind && w.only == only)
            {
                continue;
            }
            match self.mark(&path, kind, only) {
                Ok(w) => self.watched.push(w),
                Err(e) => log::warn!("cannot watch {}: {e}", path.display()),
            }
        }
    }

    /// Read the pending events; true when one of them means a change of
    /// what is watched.
    pub fn changed(&mut self) -> bool {
        let mut fds: Vec<i32> = Vec::new();
        let mut overflow = false;
        while let Ok(Some(info)) = self.sfd.read_signal() {
            if info.ssi_signo as i32 == libc::SIGIO {
                // The kernel could not queue an event: assume a change.
                overflow = true;
            } else if !fds.contains(&info.ssi_fd) {
                fds.push(info.ssi_fd);
            }
        }
        if fds.is_empty() && !overflow {
            return false;
        }
        let mut any = overflow;
        let mut follow = overflow;
        for w in &self.watched {
            if !fds.contains(&w.fd.as_raw_fd()) {
                continue;
            }
            match w.kind {
                Kind::Dir => any = true,
                Kind::Awaiting => {
                    // Only the awaited name, once it is a directory, counts.
                    if w.only.as_ref().is_some_and(|n| w.path.join(n).is_dir()) {
                        any = true;
                        follow = true;
                    }
                }
                Kind::Guard => {
                    let gone = self.watched.iter().any(|d| {
                        d.kind == Kind::Dir
                            && d.path.parent() == Some(w.path.as_path())
                            && identity(&d.path) != Some(d.id)
                    });
                    if gone {
                        any = true;
                        follow = true;
                    }
                }
            }
        }
        if follow {
            self.rewatch();
        }
        any
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        // The marks go with their fds (free, unlike inotify's); the signal
        // number is free for the next watch.
        self.watched.clear();
        SLOTS.fetch_and(!(1 << self.slot), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks, in a child process: the watch's signal must be blocked
    /// in every thread of the process, which the test harness's own threads
    /// do not do (the launcher blocks every signal before it makes any).
    fn in_child(check: fn() -> Result<(), String>) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        // SAFETY: the child makes only its own checks and leaves with
        // _exit; it never returns into the harness.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                drop(r);
                let _ = nix::sys::signal::sigprocmask(
                    nix::sys::signal::SigmaskHow::SIG_BLOCK,
                    Some(&nix::sys::signal::SigSet::all()),
                    None,
                );
                let msg = match check() {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e,
                };
                let _ = nix::unistd::write(&w, msg.as_bytes());
                // SAFETY: leaving the forked child without running the
                // harness's exit handlers.
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let mut out = String::new();
                let _ = std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut out);
                let status = nix::sys::wait::waitpid(child, None);
                // A child killed or gone early says nothing: that fails too.
                assert_eq!(out, "ok", "{status:?}");
            }
        }
    }

    fn expect(cond: bool, what: &str) -> Result<(), String> {
        if cond {
            Ok(())
        } else {
            Err(what.to_string())
        }
    }

    #[test]
    fn changes_wake_reads_do_not() {
        in_child(|| {
            let base = std::env::temp_dir().join(format!("mcl-watch-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
            let keys = base.join("data/ssh");
            let mut w = DirWatch::new(std::slice::from_ref(&keys)).map_err(|e| e.to_string())?;
            let res = (|| {
                // An unrelated name in the waiting parent is no change.
                std::fs::write(base.join("other"), "x").map_err(|e| e.to_string())?;
                expect(!w.changed(), "unrelated file in the waiting parent")?;
                // The directory appears: noticed, and from then on watched.
                std::fs::create_dir_all(&keys).map_err(|e| e.to_string())?;
                expect(w.changed(), "the key dir appeared")?;
                let f = keys.join("a.pub");
                std::fs::write(&f, "ssh-ed25519 AAAA x\n").map_err(|e| e.to_string())?;
                expect(w.changed(), "a new key")?;
                expect(!w.changed(), "nothing more")?;
                // Our own reads and directory listings are not changes.
                let _ = std::fs::read(&f).map_err(|e| e.to_string())?;
                let _ = std::fs::read_dir(&keys).map_err(|e| e.to_string())?.count();
                expect(!w.changed(), "reads must not wake the watch")?;
                std::fs::rename(&f, keys.join("b.pub")).map_err(|e| e.to_string())?;
                expect(w.changed(), "a rename")?;
                std::fs::remove_file(keys.join("b.pub")).map_err(|e| e.to_string())?;
                expect(w.changed(), "a removal")?;
                // The (empty) directory removed and made again: followed.
                std::fs::remove_dir(&keys).map_err(|e| e.to_string())?;
                expect(w.changed(), "the key dir went")?;
                std::fs::create_dir(&keys).map_err(|e| e.to_string())?;
                expect(w.changed(), "the key dir came back")?;
                std::fs::write(keys.join("c.pub"), "x\n").map_err(|e| e.to_string())?;
                expect(w.changed(), "a key in the new directory")?;
                // Something else in the parent of a watched dir: no change.
                let beside = base.join("data/other");
                std::fs::write(&beside, "x").map_err(|e| e.to_string())?;
                std::fs::remove_file(&beside).map_err(|e| e.to_string())?;
                expect(!w.changed(), "unrelated removal beside the key dir")?;
                Ok(())
            })();
            let _ = std::fs::remove_dir_all(&base);
            res
        });
    }

    #[test]
    fn watches_do_not_share_signals() {
        in_child(|| {
            let base = std::env::temp_dir().join(format!("mcl-watch2-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            let (a, b) = (base.join("a"), base.join("b"));
            std::fs::create_dir_all(&a).map_err(|e| e.to_string())?;
            std::fs::create_dir_all(&b).map_err(|e| e.to_string())?;
            let mut wa = DirWatch::new(std::slice::from_ref(&a)).map_err(|e| e.to_string())?;
            let mut wb = DirWatch::new(std::slice::from_ref(&b)).map_err(|e| e.to_string())?;
            let res = (|| {
                std::fs::write(b.join("x"), "x").map_err(|e| e.to_string())?;
                expect(!wa.changed(), "a saw the change of b")?;
                expect(wb.changed(), "b missed its change")?;
                Ok(())
            })();
            drop(wa);
            drop(wb);
            let _ = std::fs::remove_dir_all(&base);
            res
        });
    }
}
