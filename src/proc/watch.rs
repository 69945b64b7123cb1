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

    /// Watch these directories from now on.
    pub fn set_dirs(&mut self, dirs: &[PathBuf]) {
        if dirs != self.dirs.as_slice() {
            self.dirs = dirs.to_vec();
            self.rewatch();
        }
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

/// The name of the kubelet's link to the current payload of a ConfigMap or
/// Secret volume: an update renames `..data_tmp` over it, so the visible
/// `pillar.sls -> ..data/pillar.sls` link itself never changes.
pub const KUBELET_DATA: &str = "..data";

/// An inode's identity and the marks any change leaves on it (size, times;
/// ctime moves on every change and cannot be set back).
#[derive(Debug, Clone, PartialEq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            mode: m.mode(),
        }
    }
}

/// What a file looks like from its directory: its own entry (a link is not
/// followed), what a link points to, and what is reached through it.
#[derive(Debug, Clone, PartialEq)]
struct Look {
    entry: Option<Stamp>,
    link: Option<PathBuf>,
    through: Option<Stamp>,
}

fn look(path: &Path) -> Look {
    let entry = std::fs::symlink_metadata(path).ok();
    let link = entry
        .as_ref()
        .filter(|m| m.file_type().is_symlink())
        .and_then(|_| std::fs::read_link(path).ok());
    Look {
        entry: entry.as_ref().map(Stamp::of),
        link,
        through: std::fs::metadata(path).ok().as_ref().map(Stamp::of),
    }
}

/// Watching files (the pillar override, mc-launcher.yml, template
/// sources) through their directories: a file replaced by a rename, an
/// editor's save or the kubelet's `..data` swap is seen, where a watch on
/// the file's own inode would miss it. An event in a directory is a change
/// only when one of the watched names (or the directory's `..data` link)
/// now looks different — so what the launcher itself writes next to them
/// (a template rendered into the same directory) and its own reads change
/// nothing.
pub struct FileWatch {
    dirs: DirWatch,
    files: Vec<PathBuf>,
    /// The files' directories, sorted, each once.
    parents: Vec<PathBuf>,
    /// How each watched name (then each directory's `..data`) looked when
    /// last compared.
    seen: Vec<Look>,
}

impl FileWatch {
    pub fn new(files: &[PathBuf]) -> std::io::Result<FileWatch> {
        let mut w = FileWatch {
            dirs: DirWatch::new(&[])?,
            files: Vec::new(),
            parents: Vec::new(),
            seen: Vec::new(),
        };
        w.set_files(files);
        Ok(w)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dirs.fd()
    }

    /// Watch these files from now on (a reconfigure may change the list);
    /// how they look now is the state later changes are measured from.
    pub fn set_files(&mut self, files: &[PathBuf]) {
        let mut files = files.to_vec();
        files.sort();
        files.dedup();
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        self.files = files;
        self.dirs.set_dirs(&dirs);
        self.parents = dirs;
        self.seen = self.looks();
    }

    fn looks(&self) -> Vec<Look> {
        let mut out: Vec<Look> = self.files.iter().map(|f| look(f)).collect();
        out.extend(self.parents.iter().map(|d| look(&d.join(KUBELET_DATA))));
        out
    }

    /// Read the pending events; true when a watched file changed.
    pub fn changed(&mut self) -> bool {
        if !self.dirs.changed() {
            return false;
        }
        let now = self.looks();
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}

/// At most this many entries of a watched directory are compared (sorted
/// by name): a change among the others is not seen.
pub const MAX_DIR_ENTRIES: usize = 1000;

/// How one watched path looks (see `look_path`).
type PathLook = Vec<(OsString, Look)>;

/// How a watched path looks: the path itself, its directory's `..data`,
/// and when it is a directory, each entry in it (and their targets).
fn look_path(path: &Path) -> PathLook {
    let mut out = vec![(OsString::new(), look(path))];
    if let Some(parent) = path.parent() {
        out.push((
            OsString::from(KUBELET_DATA),
            look(&parent.join(KUBELET_DATA)),
        ));
    }
    if path.is_dir() {
        if let Ok(rd) = std::fs::read_dir(path) {
            let mut names: Vec<OsString> = rd
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .take(MAX_DIR_ENTRIES * 4)
                .collect();
            names.sort();
            names.truncate(MAX_DIR_ENTRIES);
            for n in names {
                let l = look(&path.join(&n));
                out.push((n, l));
            }
        }
    }
    out
}

/// The files and directories of services' `watch` (README "File
/// watches"), in one watch (one signal): each group is a service's list of
/// paths, and `changed` names the groups whose paths now look different.
/// A listed file is watched through its directory (a rename over it, the
/// kubelet's `..data` swap); a listed directory through itself too (a file
/// in it created, removed, written or replaced). Reads change nothing.
pub struct PathsWatch {
    dirs: DirWatch,
    groups: Vec<(String, Vec<PathBuf>, Vec<PathLook>)>,
}

impl PathsWatch {
    pub fn new(groups: Vec<(String, Vec<PathBuf>)>) -> std::io::Result<PathsWatch> {
        let mut w = PathsWatch {
            dirs: DirWatch::new(&[])?,
            groups: Vec::new(),
        };
        w.set_groups(groups);
        Ok(w)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dirs.fd()
    }

    /// Watch these groups from now on; how they look now is the state
    /// later changes are measured from (a group kept keeps its state).
    pub fn set_groups(&mut self, groups: Vec<(String, Vec<PathBuf>)>) {
        let old = std::mem::take(&mut self.groups);
        for (name, paths) in groups {
            let seen = match old.iter().find(|(n, p, _)| *n == name && *p == paths) {
                Some((_, _, seen)) => seen.clone(),
                None => paths.iter().map(|p| look_path(p)).collect(),
            };
            self.groups.push((name, paths, seen));
        }
        self.rewatch();
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn rewatch(&mut self) {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (_, paths, _) in &self.groups {
            for p in paths {
                if let Some(parent) = p.parent() {
                    dirs.push(parent.to_path_buf());
                }
                if p.is_dir() {
                    dirs.push(p.clone());
                }
            }
        }
        dirs.sort();
        dirs.dedup();
        self.dirs.set_dirs(&dirs);
    }

    /// Read the pending events; the groups whose paths changed.
    pub fn changed(&mut self) -> Vec<String> {
        if !self.dirs.changed() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (name, paths, seen) in &mut self.groups {
            let now: Vec<_> = paths.iter().map(|p| look_path(p)).collect();
            if now != *seen {
                *seen = now;
                out.push(name.clone());
            }
        }
        // A listed path that became a directory (or stopped being one).
        self.rewatch();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks, in a child process: the watch's signal must be blocked
    /// in every thread of the process, which the test harness's own threads
    /// do not do (the launcher blocks every signal before it makes any).
    fn in_child(check: impl FnOnce() -> Result<(), String>) {
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

    /// [`in_child`], `check` given a fresh directory `mcl-<name>-<pid>` in
    /// the temp dir, which is removed afterwards whatever the outcome.
    fn in_child_dir(name: &str, check: fn(&Path) -> Result<(), String>) {
        in_child(|| {
            let base = std::env::temp_dir().join(format!("mcl-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            let res = std::fs::create_dir_all(&base)
                .map_err(|e| e.to_string())
                .and_then(|()| check(&base));
            let _ = std::fs::remove_dir_all(&base);
            res
        });
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
        in_child_dir("watch", |base| {
            let keys = base.join("data/ssh");
            let mut w = DirWatch::new(std::slice::from_ref(&keys)).map_err(|e| e.to_string())?;
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
            // A Secret volume's update: a new payload dir, `..data_tmp`
            // renamed over `..data`.
            std::fs::create_dir_all(keys.join("..2026_12_02_12_00_00.1"))
                .map_err(|e| e.to_string())?;
            let _ = w.changed();
            std::os::unix::fs::symlink("..2026_12_02_12_00_00.1", keys.join("..data_tmp"))
                .map_err(|e| e.to_string())?;
            std::fs::rename(keys.join("..data_tmp"), keys.join("..data"))
                .map_err(|e| e.to_string())?;
            expect(w.changed(), "the kubelet's ..data swap")?;
            std::fs::remove_dir_all(&keys).map_err(|e| e.to_string())?;
            std::fs::create_dir(&keys).map_err(|e| e.to_string())?;
            let _ = w.changed();
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
        });
    }

    #[test]
    fn file_watch_sees_the_kubelet_swap_and_edits_not_neighbours() {
        in_child_dir("fwatch", |base| {
            let conf = base.join("configuration");
            let pillar = conf.join("pillar.sls");
            let mut w = FileWatch::new(std::slice::from_ref(&pillar)).map_err(|e| e.to_string())?;
            let e = |r: std::io::Result<()>| r.map_err(|e| e.to_string());
            e(std::fs::write(base.join("unrelated"), "x"))?;
            expect(!w.changed(), "a neighbour of the missing directory")?;
            // The kubelet's first projection: payload dir, ..data, link.
            e(std::fs::create_dir_all(
                conf.join("..2026_12_02_12_00_00.1"),
            ))?;
            expect(!w.changed(), "the directory alone holds no file yet")?;
            e(std::fs::write(
                conf.join("..2026_12_02_12_00_00.1/pillar.sls"),
                "a: 1\n",
            ))?;
            expect(!w.changed(), "inside a payload dir: not yet visible")?;
            e(std::os::unix::fs::symlink(
                "..2026_12_02_12_00_00.1",
                conf.join("..data_tmp"),
            ))?;
            expect(!w.changed(), "..data_tmp alone")?;
            e(std::fs::rename(
                conf.join("..data_tmp"),
                conf.join("..data"),
            ))?;
            expect(w.changed(), "the ..data swap")?;
            e(std::os::unix::fs::symlink("..data/pillar.sls", &pillar))?;
            expect(w.changed(), "the visible link")?;
            // The launcher's own reads and a file rendered beside it.
            let _ = std::fs::read(&pillar).map_err(|e| e.to_string())?;
            e(std::fs::write(conf.join("app.conf"), "rendered"))?;
            expect(!w.changed(), "reads and neighbours must not count")?;
            // A second update: only the swap changes what is seen.
            e(std::fs::create_dir_all(
                conf.join("..2026_12_02_12_00_01.2"),
            ))?;
            e(std::fs::write(
                conf.join("..2026_12_02_12_00_01.2/pillar.sls"),
                "a: 2\n",
            ))?;
            e(std::os::unix::fs::symlink(
                "..2026_12_02_12_00_01.2",
                conf.join("..data_tmp"),
            ))?;
            e(std::fs::rename(
                conf.join("..data_tmp"),
                conf.join("..data"),
            ))?;
            e(std::fs::remove_dir_all(
                conf.join("..2026_12_02_12_00_00.1"),
            ))?;
            expect(w.changed(), "the second swap")?;
            expect(!w.changed(), "nothing more")?;
            // A plain file: removed, written, edited in place.
            e(std::fs::remove_file(&pillar))?;
            expect(w.changed(), "removed")?;
            e(std::fs::write(&pillar, "a: 2\n"))?;
            expect(w.changed(), "written")?;
            e(std::fs::write(&pillar, "a: 3, and longer\n"))?;
            expect(w.changed(), "edited in place")?;
            // The list of files changes: the new one counts, the old not.
            let other = base.join("templates/app.j2");
            w.set_files(std::slice::from_ref(&other));
            e(std::fs::write(&pillar, "a: 4\n"))?;
            expect(!w.changed(), "a file no longer watched")?;
            e(std::fs::create_dir_all(base.join("templates")))?;
            e(std::fs::write(&other, "{{ x }}"))?;
            expect(w.changed(), "the new file")?;
            Ok(())
        });
    }

    #[test]
    fn watches_do_not_share_signals() {
        in_child_dir("watch2", |base| {
            let (a, b) = (base.join("a"), base.join("b"));
            std::fs::create_dir_all(&a).map_err(|e| e.to_string())?;
            std::fs::create_dir_all(&b).map_err(|e| e.to_string())?;
            let mut wa = DirWatch::new(std::slice::from_ref(&a)).map_err(|e| e.to_string())?;
            let mut wb = DirWatch::new(std::slice::from_ref(&b)).map_err(|e| e.to_string())?;
            std::fs::write(b.join("x"), "x").map_err(|e| e.to_string())?;
            expect(!wa.changed(), "a saw the change of b")?;
            expect(wb.changed(), "b missed its change")?;
            Ok(())
        });
    }
}
