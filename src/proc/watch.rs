//! Watching directories for changes (the SSH key directories with
//! `ssh.watch`), with one inotify fd in the event loop's poll set: no
//! thread, no polling.
//!
//! Only events that mean a change are asked for — create, delete, moves,
//! close-after-write, attribute changes — never access or open, so the
//! launcher's own reads of what it watches cannot wake it up again. A
//! directory that does not exist yet is waited for from its nearest
//! existing parent, looking only at the name that leads to it. Layer 2.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

struct Watched {
    path: PathBuf,
    /// Watching a parent for a directory to appear: only this name counts.
    only: Option<OsString>,
}

pub struct DirWatch {
    ino: Inotify,
    dirs: Vec<PathBuf>,
    watched: HashMap<WatchDescriptor, Watched>,
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

impl DirWatch {
    pub fn new(dirs: &[PathBuf]) -> std::io::Result<DirWatch> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let mut w = DirWatch {
            ino,
            dirs: dirs.to_vec(),
            watched: HashMap::new(),
        };
        w.rewatch();
        Ok(w)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ino.as_fd()
    }

    /// (Re)attach watches, following directories that appeared or went.
    pub fn rewatch(&mut self) {
        let wanted: Vec<(PathBuf, Option<OsString>)> =
            self.dirs.iter().filter_map(|d| target(d)).collect();
        let stale: Vec<WatchDescriptor> = self
            .watched
            .iter()
            .filter(|(_, w)| !wanted.iter().any(|(p, o)| *p == w.path && *o == w.only))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in stale {
            let _ = self.ino.rm_watch(wd);
            self.watched.remove(&wd);
        }
        for (path, only) in wanted {
            if self
                .watched
                .values()
                .any(|w| w.path == path && w.only == only)
            {
                continue;
            }
            match self.ino.add_watch(&path, mask()) {
                Ok(wd) => {
                    // The same directory watched twice shares one descriptor.
                    self.watched.insert(wd, Watched { path, only });
                }
                Err(e) => log::warn!("cannot watch {}: {e}", path.display()),
            }
        }
    }

    /// Read the pending events; true when one of them means a change of
    /// what is watched.
    pub fn changed(&mut self) -> bool {
        let mut any = false;
        let mut lost = false;
        while let Ok(events) = self.ino.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    any = true;
                    continue;
                }
                if ev.mask.intersects(
                    AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF,
                ) {
                    lost = true;
                    any = true;
                    continue;
                }
                match self.watched.get(&ev.wd) {
                    Some(Watched {
                        only: Some(name), ..
                    }) if ev.name.as_ref() == Some(name) => {
                        lost = true; // the directory appeared: watch it
                        any = true;
                    }
                    Some(Watched { only: Some(_), .. }) | None => {}
                    Some(_) => any = true,
                }
            }
        }
        if lost {
            self.rewatch();
        }
        any
    }
}

/// The name of the kubelet's link to the current payload of a ConfigMap or
/// Secret volume: an update renames `..data_tmp` over it, so the visible
/// `pillar.sls -> ..data/pillar.sls` link itself never changes.
pub const KUBELET_DATA: &str = "..data";

/// Watching files (the pillar override, mc-launcher.yml, template
/// sources) through their directories: a file replaced by a rename, an
/// editor's save or the kubelet's `..data` swap is seen, where a watch on
/// the file's own inode would miss it. Only events about the watched names
/// (and `..data`) count, so what the launcher itself writes next to them
/// (a template rendered into the same directory) wakes nothing.
pub struct FileWatch {
    ino: Inotify,
    files: Vec<PathBuf>,
    /// Directory -> the names in it that count.
    watched: HashMap<WatchDescriptor, (PathBuf, Vec<OsString>)>,
}

impl FileWatch {
    pub fn new(files: &[PathBuf]) -> std::io::Result<FileWatch> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let mut w = FileWatch {
            ino,
            files: Vec::new(),
            watched: HashMap::new(),
        };
        w.set_files(files);
        Ok(w)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ino.as_fd()
    }

    /// Watch these files from now on (a reconfigure may change the list).
    pub fn set_files(&mut self, files: &[PathBuf]) {
        let mut files = files.to_vec();
        files.sort();
        files.dedup();
        if files != self.files {
            self.files = files;
        }
        self.rewatch();
    }

    /// What to watch: for each file's directory (or its nearest existing
    /// parent), the names that count there.
    fn wanted(&self) -> Vec<(PathBuf, Vec<OsString>)> {
        let mut out: Vec<(PathBuf, Vec<OsString>)> = Vec::new();
        for f in &self.files {
            let (Some(dir), Some(name)) = (f.parent(), f.file_name()) else {
                continue;
            };
            let (path, names) = match target(dir) {
                Some((path, None)) => (path, vec![name.to_os_string(), KUBELET_DATA.into()]),
                Some((path, Some(first))) => (path, vec![first]),
                None => continue,
            };
            match out.iter_mut().find(|(p, _)| *p == path) {
                Some((_, n)) => n.extend(names),
                None => out.push((path, names)),
            }
        }
        for (_, n) in &mut out {
            n.sort();
            n.dedup();
        }
        out
    }

    /// (Re)attach the watches, following directories that appeared or went.
    pub fn rewatch(&mut self) {
        let wanted = self.wanted();
        let stale: Vec<WatchDescriptor> = self
            .watched
            .iter()
            .filter(|(_, w)| !wanted.contains(w))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in stale {
            let _ = self.ino.rm_watch(wd);
            self.watched.remove(&wd);
        }
        for w in wanted {
            if self.watched.values().any(|x| *x == w) {
                continue;
            }
            match self.ino.add_watch(&w.0, mask()) {
                Ok(wd) => {
                    self.watched.insert(wd, w);
                }
                Err(e) => log::warn!("cannot watch {}: {e}", w.0.display()),
            }
        }
    }

    /// Read the pending events; true when one is about a watched name.
    pub fn changed(&mut self) -> bool {
        let mut any = false;
        let mut lost = false;
        while let Ok(events) = self.ino.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    any = true;
                    lost = true;
                    continue;
                }
                if ev.mask.intersects(
                    AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF,
                ) {
                    // A watch we removed ourselves (rewatch) says so too:
                    // only a directory still watched going away counts.
                    if self.watched.contains_key(&ev.wd) {
                        lost = true;
                        any = true;
                    }
                    continue;
                }
                let counts = match (self.watched.get(&ev.wd), &ev.name) {
                    (Some((_, names)), Some(n)) => names.contains(n),
                    _ => false,
                };
                if counts {
                    any = true;
                    // A directory on the way appeared, or a link was
                    // replaced: the targets may have moved.
                    lost = true;
                }
            }
        }
        if lost {
            self.rewatch();
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_watch_sees_the_kubelet_swap_and_edits_not_neighbours() {
        let base = std::env::temp_dir().join(format!("mcl-fwatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("base");
        let conf = base.join("configuration");
        let pillar = conf.join("pillar.sls");
        let mut w = FileWatch::new(std::slice::from_ref(&pillar)).expect("watch");
        std::fs::write(base.join("unrelated"), "x").expect("w");
        assert!(!w.changed(), "a neighbour of the missing directory");
        // The kubelet's first projection: payload dir, ..data, visible link.
        std::fs::create_dir_all(conf.join("..2026_12_02_12_00_00.1")).expect("mkdir");
        assert!(w.changed(), "the directory appeared");
        std::fs::write(conf.join("..2026_12_02_12_00_00.1/pillar.sls"), "a: 1\n").expect("w");
        assert!(!w.changed(), "inside a payload dir: not yet visible");
        std::os::unix::fs::symlink("..2026_12_02_12_00_00.1", conf.join("..data_tmp")).expect("ln");
        assert!(!w.changed(), "..data_tmp alone");
        std::fs::rename(conf.join("..data_tmp"), conf.join("..data")).expect("mv");
        assert!(w.changed(), "the ..data swap");
        std::os::unix::fs::symlink("..data/pillar.sls", &pillar).expect("ln");
        assert!(w.changed(), "the visible link");
        // The launcher's own reads and a file rendered next to it: nothing.
        let _ = std::fs::read(&pillar).expect("read");
        std::fs::write(conf.join("app.conf"), "rendered").expect("w");
        assert!(!w.changed(), "reads and neighbours must not wake the watch");
        // A second update: only the swap changes a watched name.
        std::fs::create_dir_all(conf.join("..2026_12_02_12_00_01.2")).expect("mkdir");
        std::os::unix::fs::symlink("..2026_12_02_12_00_01.2", conf.join("..data_tmp")).expect("ln");
        std::fs::rename(conf.join("..data_tmp"), conf.join("..data")).expect("mv");
        std::fs::remove_dir_all(conf.join("..2026_12_02_12_00_00.1")).expect("rm");
        assert!(w.changed(), "the second swap");
        assert!(!w.changed(), "nothing more");
        // A plain edit of a plain file.
        std::fs::remove_file(&pillar).expect("rm");
        assert!(w.changed(), "removed");
        std::fs::write(&pillar, "a: 2\n").expect("w");
        assert!(w.changed(), "written");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn changes_wake_reads_do_not() {
        let base = std::env::temp_dir().join(format!("mcl-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("base");
        let keys = base.join("data/ssh");
        let mut w = DirWatch::new(std::slice::from_ref(&keys)).expect("watch");
        // An unrelated name in the parent wakes nobody.
        std::fs::write(base.join("other"), "x").expect("w");
        assert!(!w.changed(), "unrelated file in the waiting parent");
        // The directory appears: noticed, and from then on watched itself.
        std::fs::create_dir_all(&keys).expect("mkdir");
        assert!(w.changed(), "the key dir appeared");
        let f = keys.join("a.pub");
        std::fs::write(&f, "ssh-ed25519 AAAA x\n").expect("w");
        assert!(w.changed(), "a new key");
        assert!(!w.changed(), "nothing more");
        // Our own reads and directory listings are not changes.
        let _ = std::fs::read(&f).expect("read");
        let _ = std::fs::read_dir(&keys).expect("ls").count();
        assert!(!w.changed(), "reads must not wake the watch");
        std::fs::rename(&f, keys.join("b.pub")).expect("mv");
        assert!(w.changed(), "a rename");
        std::fs::remove_file(keys.join("b.pub")).expect("rm");
        assert!(w.changed(), "a removal");
        // A Secret volume's update: a new payload dir, `..data_tmp` renamed
        // over `..data`.
        std::fs::create_dir_all(keys.join("..2026_12_02_12_00_00.1")).expect("mkdir");
        let _ = w.changed();
        std::os::unix::fs::symlink("..2026_12_02_12_00_00.1", keys.join("..data_tmp")).expect("ln");
        std::fs::rename(keys.join("..data_tmp"), keys.join("..data")).expect("mv");
        assert!(w.changed(), "the kubelet's ..data swap");
        let _ = std::fs::remove_dir_all(&base);
    }
}
