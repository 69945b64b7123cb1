//! Step 4 of the prepare phase: fill empty volume directories from the
//! image, never touching one that holds data.
//!
//! A marker file is written in the destination before the copy and removed
//! after it (both made durable), so a copy cut short by kill -9 or a power
//! loss is recognised on the next start, wiped and redone instead of being
//! taken for the operator's data.

use crate::config::model::Prepopulate;
use crate::error::Diag;
use crate::fsutil::{self, at, FsError};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use std::fmt;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const MARKER: &str = ".mc-launcher-prepopulate-incomplete";
const LOST_FOUND: &str = "lost+found";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Copied {
        dest: PathBuf,
        files: u64,
        bytes: u64,
    },
    /// The destination holds data: left alone.
    Kept(PathBuf),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Copied { dest, files, bytes } => write!(
                f,
                "filled {} ({files} files, {bytes} bytes)",
                dest.display()
            ),
            Outcome::Kept(d) => write!(f, "{} holds data: left as it is", d.display()),
        }
    }
}

/// What a destination holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestState {
    /// Missing, or nothing but `lost+found`.
    Empty,
    /// A previous copy was cut short: its marker is there.
    Interrupted,
    HasData,
}

pub fn dest_state(dest: &Path) -> Result<DestState, FsError> {
    let entries = match fs::read_dir(dest) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DestState::Empty),
        Err(e) => {
            return Err(FsError {
                path: dest.to_path_buf(),
                err: e,
            })
        }
    };
    let mut any = false;
    for e in entries {
        let name = at(dest, e)?.file_name();
        if name == MARKER {
            return Ok(DestState::Interrupted);
        }
        if name != LOST_FOUND {
            any = true;
        }
    }
    Ok(if any {
        DestState::HasData
    } else {
        DestState::Empty
    })
}

/// Remove everything in `dest` but `lost+found`.
fn wipe(dest: &Path) -> Result<(), FsError> {
    for e in at(dest, fs::read_dir(dest))? {
        let e = at(dest, e)?;
        if e.file_name() == LOST_FOUND || e.file_name() == MARKER {
            continue;
        }
        let p = e.path();
        let is_dir = at(&p, e.file_type())?.is_dir();
        at(
            &p,
            if is_dir {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            },
        )?;
    }
    Ok(())
}

/// Fill every empty destination. `volume` is the operator's data volume:
/// links planted in it are never followed.
pub fn apply(items: &[Prepopulate], volume: &Path) -> Result<Vec<Outcome>, FsError> {
    let mut out = Vec::new();
    for item in items {
        refuse_links(&item.dest, volume)?;
        out.push(apply_one(item)?);
    }
    Ok(out)
}

/// A destination that is a symbolic link, or that lies in the volume
/// behind one, is refused: a link planted in the volume (`data ->
/// /root/.ssh`) must not make us write outside it.
fn refuse_links(dest: &Path, volume: &Path) -> Result<(), FsError> {
    let refused = |p: &Path| FsError {
        path: p.to_path_buf(),
        err: std::io::Error::other("is a symbolic link: prepopulate does not write through links"),
    };
    let is_link = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    if is_link(dest) {
        return Err(refused(dest));
    }
    if let Ok(below) = dest.strip_prefix(volume) {
        let mut p = volume.to_path_buf();
        for c in below.components() {
            p.push(c);
            if is_link(&p) {
                return Err(refused(&p));
            }
        }
    }
    Ok(())
}

fn apply_one(item: &Prepopulate) -> Result<Outcome, FsError> {
    let dest = &item.dest;
    match dest_state(dest)? {
        DestState::HasData => return Ok(Outcome::Kept(dest.clone())),
        DestState::Interrupted => {
            log::warn!(
                "prepopulate: {} holds an interrupted copy: wiping it and copying again",
                dest.display()
            );
            wipe(dest)?;
        }
        DestState::Empty => {}
    }
    let owner = match &item.owner {
        Some(o) => Some(at(dest, fsutil::resolve_owner(o))?),
        None => None,
    };
    let created = !dest.exists();
    let result = copy_marked(&item.src, dest, owner);
    if result.is_err() {
        // Leave the destination as it was: missing, or empty.
        let _ = wipe(dest);
        let _ = fs::remove_file(dest.join(MARKER));
        if created {
            let _ = fs::remove_dir(dest);
        }
    }
    result
}

fn copy_marked(src: &Path, dest: &Path, owner: Option<(Uid, Gid)>) -> Result<Outcome, FsError> {
    let src_md = at(src, fs::metadata(src))?;
    if !src_md.is_dir() {
        return Err(FsError {
            path: src.to_path_buf(),
            err: std::io::Error::other("the source is not a directory"),
        });
    }
    at(dest, fs::create_dir_all(dest))?;
    let marker = dest.join(MARKER);
    at(&marker, fs::write(&marker, b"copy in progress\n"))?;
    at(&marker, fs::File::open(&marker).and_then(|f| f.sync_all()))?;
    fsutil::fsync_dir(dest)?;

    let (files, bytes) = copy_tree(src, dest, owner)?;
    // The root of the copy takes the source's mode, owner and times too.
    apply_meta(dest, &src_md, owner, false)?;

    // One sync of the whole filesystem instead of an fsync per file: the
    // data is durable before the marker goes.
    let d = at(dest, fs::File::open(dest))?;
    at(dest, nix::unistd::syncfs(&d).map_err(std::io::Error::from))?;
    at(&marker, fs::remove_file(&marker))?;
    fsutil::fsync_dir(dest)?;
    // Removing the marker changed dest's mtime: put the source's back.
    set_times(dest, &src_md, false)?;
    Ok(Outcome::Copied {
        dest: dest.to_path_buf(),
        files,
        bytes,
    })
}

fn set_times(path: &Path, md: &fs::Metadata, link: bool) -> Result<(), FsError> {
    let atime = TimeSpec::new(md.atime(), md.atime_nsec());
    let mtime = TimeSpec::new(md.mtime(), md.mtime_nsec());
    let flag = if link {
        UtimensatFlags::NoFollowSymlink
    } else {
        UtimensatFlags::FollowSymlink
    };
    at(
        path,
        utimensat(nix::fcntl::AT_FDCWD, path, &atime, &mtime, flag).map_err(std::io::Error::from),
    )
}

/// Owner (as root: the source's, or `owner`), mode (not for links), times.
fn apply_meta(
    path: &Path,
    md: &fs::Metadata,
    owner: Option<(Uid, Gid)>,
    link: bool,
) -> Result<(), FsError> {
    let ids = owner.or_else(|| {
        Uid::effective()
            .is_root()
            .then(|| (Uid::from_raw(md.uid()), Gid::from_raw(md.gid())))
    });
    if let Some((uid, gid)) = ids {
        at(
            path,
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                path,
                Some(uid),
                Some(gid),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(std::io::Error::from),
        )?;
    }
    if !link {
        at(
            path,
            fs::set_permissions(path, fs::Permissions::from_mode(md.mode() & 0o7777)),
        )?;
    }
    set_times(path, md, link)
}

/// Copy the content of `src` into `dest`: files, directories and symlinks
/// (never followed); directory metadata is applied after their content.
fn copy_tree(src: &Path, dest: &Path, owner: Option<(Uid, Gid)>) -> Result<(u64, u64), FsError> {
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    for entry in walkdir::WalkDir::new(src).follow_links(false).min_depth(1) {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| src.to_path_buf());
            FsError {
                path,
                err: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("walk error")),
            }
        })?;
        let rel = entry.path().strip_prefix(src).unwrap_or(entry.path());
        let to = dest.join(rel);
        let md = at(
            entry.path(),
            entry.metadata().map_err(|e| {
                e.into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("metadata"))
            }),
        )?;
        let ft = md.file_type();
        if ft.is_dir() {
            at(&to, fs::create_dir(&to))?;
            // Writable for us while we fill it; its own mode comes after.
            at(
                &to,
                fs::set_permissions(&to, fs::Permissions::from_mode(0o700)),
            )?;
            dirs.push((to, md));
        } else if ft.is_symlink() {
            let target = at(entry.path(), fs::read_link(entry.path()))?;
            at(&to, std::os::unix::fs::symlink(&target, &to))?;
            apply_meta(&to, &md, owner, true)?;
        } else if ft.is_file() {
            bytes += at(&to, fs::copy(entry.path(), &to))?;
            files += 1;
            apply_meta(&to, &md, owner, false)?;
        } else {
            log::warn!(
                "prepopulate: {} is not a file, directory or link: skipped",
                entry.path().display()
            );
        }
    }
    for (dir, md) in dirs.iter().rev() {
        apply_meta(dir, md, owner, false)?;
    }
    Ok((files, bytes))
}

/// Problems `check` reports: sources that are missing or not directories,
/// destinations that cannot be read.
pub fn check(items: &[Prepopulate]) -> Vec<Diag> {
    let mut out = Vec::new();
    for item in items {
        let file = item.origin.file.as_path();
        match fs::metadata(&item.src) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => out.push(Diag::new(
                file,
                item.origin.pos,
                format!("prepopulate: {} is not a directory", item.src.display()),
            )),
            Err(e) => out.push(Diag::new(
                file,
                item.origin.pos,
                format!("prepopulate: {}: {e}", item.src.display()),
            )),
        }
        if let Err(e) = dest_state(&item.dest) {
            out.push(Diag::new(
                file,
                item.origin.pos,
                format!("prepopulate: {e}"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Origin;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("mcl-prepop-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("tmp");
        Tmp(p)
    }
    fn item(src: &Path, dest: &Path) -> Prepopulate {
        Prepopulate {
            src: src.to_path_buf(),
            dest: dest.to_path_buf(),
            owner: None,
            origin: Origin::default(),
        }
    }
    fn source(root: &Path) -> PathBuf {
        let src = root.join("src");
        fs::create_dir_all(src.join("sub/deeper")).expect("mkdir");
        fs::write(src.join("a.txt"), "alpha").expect("w");
        fs::write(src.join("sub/b.sh"), "#!/bin/sh\n").expect("w");
        fs::set_permissions(src.join("sub/b.sh"), fs::Permissions::from_mode(0o751))
            .expect("chmod");
        std::os::unix::fs::symlink("../a.txt", src.join("sub/link")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", src.join("abs-link")).expect("link");
        fs::set_permissions(src.join("sub/deeper"), fs::Permissions::from_mode(0o2750))
            .expect("chmod");
        src
    }

    #[test]
    fn empty_destinations_are_filled_exactly() {
        let t = tmp("fill");
        let src = source(&t.0);
        let old = TimeSpec::new(1_000_000_000, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &src.join("a.txt"),
            &old,
            &old,
            UtimensatFlags::FollowSymlink,
        )
        .expect("utime");
        for (name, prepare) in [("missing", 0), ("empty", 1), ("lostfound", 2)] {
            let dest = t.0.join(name);
            if prepare >= 1 {
                fs::create_dir_all(&dest).expect("mkdir");
            }
            if prepare == 2 {
                fs::create_dir_all(dest.join("lost+found")).expect("mkdir");
            }
            let out = apply(&[item(&src, &dest)], Path::new("/nonexistent-volume")).expect("copy");
            assert!(
                matches!(out[0], Outcome::Copied { files: 2, .. }),
                "{name}: {:?}",
                out
            );
            assert_eq!(fs::read_to_string(dest.join("a.txt")).expect("r"), "alpha");
            assert_eq!(
                fs::metadata(dest.join("sub/b.sh")).expect("md").mode() & 0o7777,
                0o751
            );
            assert_eq!(
                fs::metadata(dest.join("sub/deeper")).expect("md").mode() & 0o7777,
                0o2750
            );
            assert_eq!(
                fs::read_link(dest.join("sub/link")).expect("link"),
                Path::new("../a.txt")
            );
            assert_eq!(
                fs::read_link(dest.join("abs-link")).expect("link"),
                Path::new("/etc/passwd"),
                "links are copied, not followed"
            );
            assert_eq!(
                fs::metadata(dest.join("a.txt")).expect("md").mtime(),
                1_000_000_000
            );
            assert!(!dest.join(MARKER).exists());
        }
    }

    #[test]
    fn destinations_with_data_are_untouched() {
        let t = tmp("keep");
        let src = source(&t.0);
        let dest = t.0.join("dest");
        fs::create_dir_all(&dest).expect("mkdir");
        fs::write(dest.join("mine.db"), "precious").expect("w");
        let out = apply(&[item(&src, &dest)], Path::new("/nonexistent-volume")).expect("ok");
        assert_eq!(out[0], Outcome::Kept(dest.clone()));
        assert_eq!(fs::read_dir(&dest).expect("ls").count(), 1);
        assert_eq!(
            fs::read_to_string(dest.join("mine.db")).expect("r"),
            "precious"
        );
    }

    #[test]
    fn an_interrupted_copy_is_wiped_and_redone() {
        let t = tmp("interrupted");
        let src = source(&t.0);
        let dest = t.0.join("dest");
        fs::create_dir_all(dest.join("sub")).expect("mkdir");
        fs::write(dest.join(MARKER), "").expect("w");
        fs::write(dest.join("sub/half-written"), "xx").expect("w");
        assert_eq!(dest_state(&dest).expect("state"), DestState::Interrupted);
        apply(&[item(&src, &dest)], Path::new("/nonexistent-volume")).expect("copy");
        assert!(!dest.join("sub/half-written").exists());
        assert_eq!(fs::read_to_string(dest.join("a.txt")).expect("r"), "alpha");
        assert_eq!(dest_state(&dest).expect("state"), DestState::HasData);
    }

    #[test]
    fn a_missing_source_is_an_error_that_leaves_nothing() {
        let t = tmp("nosrc");
        let dest = t.0.join("dest");
        let err = apply(
            &[item(&t.0.join("nope"), &dest)],
            Path::new("/nonexistent-volume"),
        )
        .expect_err("missing source");
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(!dest.exists(), "nothing created");
        assert_eq!(check(&[item(&t.0.join("nope"), &dest)]).len(), 1);
    }

    #[test]
    fn links_in_the_volume_are_refused() {
        let t = tmp("links");
        let vol = t.0.join("vol");
        fs::create_dir_all(vol.join("real")).expect("mkdir");
        fs::create_dir_all(t.0.join("outside")).expect("mkdir");
        std::os::unix::fs::symlink(t.0.join("outside"), vol.join("data")).expect("link");
        // (dest, refused?)
        let rows = [
            (vol.join("data"), true),
            (vol.join("data/www"), true),
            (vol.join("real/www"), false),
            (vol.join("new"), false),
        ];
        for (dest, refused) in rows {
            assert_eq!(
                refuse_links(&dest, &vol).is_err(),
                refused,
                "{}",
                dest.display()
            );
        }
        // A link outside the volume (the image's own layout) is not ours to judge.
        assert!(refuse_links(&t.0.join("outside/x"), &vol).is_ok());
    }
}
