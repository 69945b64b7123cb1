//! Watching the SSH key directories while running (`ssh.watch`).
//!
//! notify's callback runs on its own thread; all it does is write a byte to
//! a non-blocking pipe that the event loop polls, so the supervisor stays a
//! single-threaded event loop and reacts only when something changed.

use notify::{RecursiveMode, Watcher};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

pub struct KeyWatch {
    watcher: notify::RecommendedWatcher,
    wake: File,
    watched: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

/// The directory to watch for `dir`: itself, or its nearest existing parent
/// (so that a key directory created later is noticed).
fn watch_target(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find(|a| a.is_dir()).map(Path::to_path_buf)
}

impl KeyWatch {
    pub fn new(dirs: &[PathBuf]) -> Option<KeyWatch> {
        let (r, w) = crate::proc::output::pipe().ok()?;
        let mut w = File::from(w);
        let _ = nix::fcntl::fcntl(
            &w,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                // A full pipe already means "something changed".
                let _ = w.write(b"!");
            }
        })
        .map_err(|e| log::warn!("ssh: cannot watch the key directories: {e}"))
        .ok()?;
        let mut kw = KeyWatch {
            watcher,
            wake: File::from(r),
            watched: Vec::new(),
            dirs: dirs.to_vec(),
        };
        kw.rewatch();
        Some(kw)
    }

    /// (Re)attach watches, following key directories that appeared.
    pub fn rewatch(&mut self) {
        let wanted: Vec<PathBuf> = self.dirs.iter().filter_map(|d| watch_target(d)).collect();
        for old in self.watched.clone() {
            if !wanted.contains(&old) {
                let _ = self.watcher.unwatch(&old);
                self.watched.retain(|w| w != &old);
            }
        }
        for dir in wanted {
            if !self.watched.contains(&dir) {
                match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    Ok(()) => self.watched.push(dir),
                    Err(e) => log::warn!("ssh: cannot watch {}: {e}", dir.display()),
                }
            }
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Empty the wake-up pipe.
    pub fn drain(&mut self) {
        let mut buf = [0u8; 256];
        while matches!(self.wake.read(&mut buf), Ok(n) if n > 0) {}
    }
}
