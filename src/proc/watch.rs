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

#[cfg(test)]
mod tests {
    use super::*;

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
        let _ = std::fs::remove_dir_all(&base);
    }
}
