//! Step 4 of the prepare phase: fill empty volume directories from the
//! image, never touching one that holds data.
//!
//! A marker file is written in the destination before the copy and removed
//! after it (both made durable), so a copy cut short by kill -9 or a power
//! loss is recognised on the next start, wiped and redone instead of being
//! taken for the operator's data.
//!
//! The destination lies in the volume, which others write: it is opened
//! (or created) beneath the volume's fd without following any link, and
//! everything in it — the marker, every directory, file and link of the
//! copy — is made relative to the fd of the directory that holds it, each
//! new directory opened `O_NOFOLLOW` right after `mkdirat`. A link that
//! appears during the copy therefore cannot redirect it, and owners, modes
//! and times are set on fds. Like `cp -a`, sparse files stay sparse
//! (`SEEK_DATA`/`SEEK_HOLE`) and hard links stay hard links.

use crate::config::model::Prepopulate;
use crate::error::Diag;
use crate::fsutil::{self, at, DirFd, FsError, Links, Refusal};
use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
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

/// What `dest` holds (under an untrusted root, looked at beneath it).
pub fn dest_state(dest: &Path) -> Result<DestState, FsError> {
    match open_dest(dest, None)? {
        None => Ok(DestState::Empty),
        Some(d) => state_of(&d),
    }
}

fn state_of(d: &DirFd) -> Result<DestState, FsError> {
    let mut any = false;
    for name in d.entries()? {
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

/// The directory and last component of `dest`.
fn split_dest(dest: &Path) -> Result<(PathBuf, OsString), FsError> {
    match (dest.parent(), dest.file_name()) {
        (Some(p), Some(n)) if !p.as_os_str().is_empty() => Ok((p.to_path_buf(), n.to_os_string())),
        _ => Err(FsError::new(
            dest,
            io::Error::new(io::ErrorKind::InvalidInput, "not a directory path"),
        )),
    }
}

/// A destination that is a link, or lies behind one in the volume.
fn link_refused(e: FsError) -> FsError {
    if e.refusal() == Some(&Refusal::Link) {
        FsError::new(
            &e.path,
            io::Error::other("is a symbolic link: prepopulate does not write through links"),
        )
    } else {
        e
    }
}

/// The existing destination, opened without following a link: beneath
/// `volume` when it lies in it (or under an untrusted root), else its
/// parent by path and itself `O_NOFOLLOW`. `None` when it does not exist.
fn open_dest(dest: &Path, volume: Option<&Path>) -> Result<Option<DirFd>, FsError> {
    let (parent, name) = split_dest(dest)?;
    let Some(p) = fsutil::open_dir_in(&parent, volume, Links::Refuse).map_err(link_refused)? else {
        return Ok(None);
    };
    match p.dir(Path::new(&name), Links::Refuse) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(link_refused(e)),
    }
}

/// Remove everything in `d` but `lost+found` and the marker, never
/// following a link.
fn wipe(d: &DirFd) -> Result<(), FsError> {
    for name in d.entries()? {
        if name == LOST_FOUND || name == MARKER {
            continue;
        }
        d.remove_tree(&name)?;
    }
    Ok(())
}

/// Fill every empty destination. `volume` is the operator's data volume:
/// a destination in it is opened beneath it, and no link planted in it is
/// ever followed.
pub fn apply(items: &[Prepopulate], volume: &Path) -> Result<Vec<Outcome>, FsError> {
    let mut out = Vec::new();
    for item in items {
        out.push(apply_one(item, volume)?);
    }
    Ok(out)
}

fn apply_one(item: &Prepopulate, volume: &Path) -> Result<Outcome, FsError> {
    let dest = &item.dest;
    let existing = open_dest(dest, Some(volume))?;
    // An empty destination that was already there: no directory on the
    // way to it is created, so a small copy can be made durable entry by
    // entry (see `Copy::durable`).
    let mut in_place = false;
    if let Some(d) = &existing {
        match state_of(d)? {
            DestState::HasData => return Ok(Outcome::Kept(dest.clone())),
            DestState::Interrupted => {
                log::warn!(
                    "prepopulate: {} holds an interrupted copy: wiping it and copying again",
                    dest.display()
                );
                wipe(d)?;
            }
            DestState::Empty => in_place = true,
        }
    }
    let owner = match &item.owner {
        Some(o) => Some(at(dest, fsutil::resolve_owner(o))?),
        None => None,
    };
    // The source first: a missing one creates nothing.
    let src = DirFd::open(&item.src).map_err(|e| match e.err.raw_os_error() {
        Some(nix::libc::ENOTDIR) => {
            FsError::new(&item.src, io::Error::other("the source is not a directory"))
        }
        _ => e,
    })?;
    let src_st = src.stat()?;
    let (parent_path, name) = split_dest(dest)?;
    let (d, parent) = match existing {
        Some(d) => (d, None),
        None => {
            let (p, _) =
                fsutil::dir_for_write(&parent_path, Some(volume), 0o755).map_err(link_refused)?;
            let (d, created) = p.mkdirs(Path::new(&name), 0o700).map_err(link_refused)?;
            (d, created.then_some(p))
        }
    };
    let result = copy_marked(&src, &src_st, &d, owner, dest, in_place);
    if result.is_err() {
        // Leave the destination as it was: missing, or empty.
        let _ = wipe(&d);
        let _ = d.remove(OsStr::new(MARKER), false);
        if let Some(p) = parent {
            let _ = p.remove(&name, true);
        }
    }
    result
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

fn errno_io(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The owner a copy gets: `owner`, or as root the source's own.
fn ids_for(st: &FileStat, owner: Option<(Uid, Gid)>) -> Option<(Uid, Gid)> {
    owner.or_else(|| {
        Uid::effective()
            .is_root()
            .then(|| (Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid)))
    })
}

/// Owner, mode and times of an open file or directory, from `st`.
fn apply_meta(fd: BorrowedFd<'_>, st: &FileStat, owner: Option<(Uid, Gid)>) -> io::Result<()> {
    fsutil::set_owner_mode(fd, Some(st.st_mode & 0o7777), ids_for(st, owner))?;
    let (atime, mtime) = times(st);
    nix::sys::stat::futimens(fd, &atime, &mtime).map_err(errno_io)
}

/// The most entries (files and directories) a copy makes durable one by
/// one, with an fsync each; a bigger copy is made durable by one `syncfs`.
/// A `syncfs` also writes back whatever else is waiting on that filesystem
/// (on a shared disk, every other writer's data): for the few files of a
/// typical default-data directory it cost more than the copy, and the most
/// of the start's time when others were writing.
const FSYNC_ENTRIES: usize = 64;

/// A file or directory of the copy, kept open to be made durable.
enum Entry {
    File(File),
    Dir(DirFd),
}

/// What a copy counts, and the hard links it has seen.
struct Copy<'a> {
    /// The destination's top directory: hard links are made from it.
    root: &'a DirFd,
    /// The owner every copy gets (as root: else the source's own).
    owner: Option<(Uid, Gid)>,
    files: u64,
    bytes: u64,
    /// (device, inode) of a multiply-linked source → where its first copy is
    /// (relative to `root`).
    linked: HashMap<(u64, u64), PathBuf>,
    /// Every file and directory made so far, while the copy is small and
    /// holds only those (in an existing destination); `None` once it is
    /// not, and a `syncfs` makes it durable instead.
    durable: Option<Vec<(PathBuf, Entry)>>,
}

impl Copy<'_> {
    /// Keep `entry` to be made durable, or give up on entry-by-entry
    /// durability (`None`: a link, or too many entries).
    fn keep(&mut self, entry: Option<(PathBuf, Entry)>) {
        match (entry, self.durable.as_mut()) {
            (Some(e), Some(v)) if v.len() < FSYNC_ENTRIES => v.push(e),
            _ => self.durable = None,
        }
    }
}

fn copy_marked(
    src: &DirFd,
    src_st: &FileStat,
    d: &DirFd,
    owner: Option<(Uid, Gid)>,
    dest: &Path,
    in_place: bool,
) -> Result<Outcome, FsError> {
    let marker = OsStr::new(MARKER);
    let marker_path = dest.join(MARKER);
    // Whatever was planted under that name (a link to a file outside) goes:
    // the marker is always a new file of ours.
    d.remove(marker, false)?;
    {
        use std::io::Write;
        let mut m = d.create_file(marker)?;
        at(&marker_path, m.write_all(b"copy in progress\n"))?;
        at(&marker_path, m.sync_all())?;
    }
    d.sync()?;

    let mut copy = Copy {
        root: d,
        owner,
        files: 0,
        bytes: 0,
        linked: HashMap::new(),
        durable: in_place.then(Vec::new),
    };
    copy_dir(src, d, Path::new(""), &mut copy)?;
    // The root of the copy takes the source's mode, owner and times too.
    at(dest, apply_meta(d.as_fd(), src_st, owner))?;

    // The data is durable before the marker goes: a small copy by an fsync
    // of each file and directory it made and of the destination, a big one
    // by one sync of the whole filesystem instead of an fsync per file.
    match copy.durable.take() {
        Some(entries) => {
            for (path, e) in entries {
                match e {
                    Entry::File(f) => at(&path, f.sync_all())?,
                    Entry::Dir(sub) => sub.sync()?,
                }
            }
            d.sync()?;
        }
        None => at(dest, nix::unistd::syncfs(d.as_fd()).map_err(errno_io))?,
    }
    d.remove(marker, false)?;
    d.sync()?;
    // Removing the marker changed dest's mtime: put the source's back.
    let (atime, mtime) = times(src_st);
    at(
        dest,
        nix::sys::stat::futimens(d.as_fd(), &atime, &mtime).map_err(errno_io),
    )?;
    Ok(Outcome::Copied {
        dest: dest.to_path_buf(),
        files: copy.files,
        bytes: copy.bytes,
    })
}

/// Copy the content of `src` into `dst` (`rel` below the destination's
/// top): files, directories and symlinks (never followed); a directory's
/// metadata is applied after its content.
fn copy_dir(src: &DirFd, dst: &DirFd, rel: &Path, copy: &mut Copy<'_>) -> Result<(), FsError> {
    for name in src.entries()? {
        let st = src.stat_entry(&name)?;
        let to = dst.path().join(&name);
        let to_rel = rel.join(&name);
        if fsutil::is_dir(&st) {
            at(
                &to,
                nix::sys::stat::mkdirat(
                    dst.as_fd(),
                    name.as_os_str(),
                    Mode::from_bits_truncate(0o700),
                )
                .map_err(errno_io),
            )?;
            let sub = dst.dir(Path::new(&name), Links::Refuse)?;
            // Writable for us while we fill it (whatever the umask); its own
            // mode comes after its content.
            sub.set_owner_mode(Some(0o700), None)?;
            let sub_src = src.dir(Path::new(&name), Links::Refuse)?;
            copy_dir(&sub_src, &sub, &to_rel, copy)?;
            at(&to, apply_meta(sub.as_fd(), &st, copy.owner))?;
            copy.keep(Some((to, Entry::Dir(sub))));
        } else if fsutil::is_symlink(&st) {
            // A link cannot be fsynced on its own: the copy is synced whole.
            copy.keep(None);
            let target = at(
                &src.path().join(&name),
                nix::fcntl::readlinkat(src.as_fd(), name.as_os_str()).map_err(errno_io),
            )?;
            at(
                &to,
                nix::unistd::symlinkat(target.as_os_str(), dst.as_fd(), name.as_os_str())
                    .map_err(errno_io),
            )?;
            if let Some((uid, gid)) = ids_for(&st, copy.owner) {
                at(
                    &to,
                    nix::unistd::fchownat(
                        dst.as_fd(),
                        name.as_os_str(),
                        Some(uid),
                        Some(gid),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(errno_io),
                )?;
            }
            let (atime, mtime) = times(&st);
            at(
                &to,
                nix::sys::stat::utimensat(
                    dst.as_fd(),
                    name.as_os_str(),
                    &atime,
                    &mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(errno_io),
            )?;
        } else if fsutil::is_regular(&st) {
            copy_file(src, dst, &name, &st, &to_rel, copy)?;
        } else {
            log::warn!(
                "prepopulate: {} is not a file, directory or link: skipped",
                src.path().join(&name).display()
            );
        }
    }
    Ok(())
}

/// Copy one regular file, or hard-link it to the copy of a name seen
/// before for the same source inode.
fn copy_file(
    src: &DirFd,
    dst: &DirFd,
    name: &OsStr,
    st: &FileStat,
    to_rel: &Path,
    copy: &mut Copy<'_>,
) -> Result<(), FsError> {
    let to = dst.path().join(name);
    let key = (st.st_dev, st.st_ino);
    if st.st_nlink > 1 {
        if let Some(first) = copy.linked.get(&key) {
            let (dir, first_name) = match (first.parent(), first.file_name()) {
                (Some(d), Some(n)) => (d.to_path_buf(), n.to_os_string()),
                _ => (PathBuf::new(), first.as_os_str().to_os_string()),
            };
            let first_dir = copy.root.dir(&dir, Links::Refuse)?;
            at(
                &to,
                nix::unistd::linkat(
                    first_dir.as_fd(),
                    first_name.as_os_str(),
                    dst.as_fd(),
                    name,
                    AtFlags::empty(),
                )
                .map_err(errno_io),
            )?;
            copy.keep(None);
            copy.files += 1;
            return Ok(());
        }
    }
    let (from, _) = src.file(Path::new(name), Links::Refuse)?;
    let out = dst.create_file(name)?;
    let len = u64::try_from(st.st_size).unwrap_or(0);
    at(&to, copy_sparse(&from, &out, len))?;
    at(&to, apply_meta(out.as_fd(), st, copy.owner))?;
    if st.st_nlink > 1 {
        copy.linked.insert(key, to_rel.to_path_buf());
    }
    copy.keep(Some((to, Entry::File(out))));
    copy.files += 1;
    copy.bytes += len;
    Ok(())
}

/// Copy `len` bytes of `from` into `to`, data segments only: the holes of
/// a sparse file stay holes (`SEEK_DATA`/`SEEK_HOLE`; a filesystem without
/// them gets a plain copy).
fn copy_sparse(from: &File, to: &File, len: u64) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::unistd::{lseek, Whence};
    let end = i64::try_from(len).unwrap_or(i64::MAX);
    let mut buf = vec![0u8; 256 * 1024];
    let mut off: i64 = 0;
    while off < end {
        let data = match lseek(from.as_fd(), off, Whence::SeekData) {
            Ok(d) => d,
            Err(Errno::ENXIO) => break, // only a hole is left
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => off, // no hole support
            Err(e) => return Err(errno_io(e)),
        };
        if data >= end {
            break;
        }
        let hole = match lseek(from.as_fd(), data, Whence::SeekHole) {
            Ok(h) => h.min(end),
            Err(_) => end,
        };
        copy_range(from, to, data, hole, &mut buf)?;
        off = hole;
    }
    // The size, with a trailing hole when there is one.
    to.set_len(len)
}

fn copy_range(from: &File, to: &File, start: i64, end: i64, buf: &mut [u8]) -> io::Result<()> {
    let mut pos = u64::try_from(start).unwrap_or(0);
    let end = u64::try_from(end).unwrap_or(0);
    while pos < end {
        let want = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = match from.read_at(chunk, pos) {
            Ok(0) => return Ok(()), // the file shrank meanwhile
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all_at(chunk.get(..n).unwrap_or_default(), pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// Problems `check` reports: sources that are missing or not directories,
/// destinations that cannot be read.
pub fn check(items: &[Prepopulate]) -> Vec<Diag> {
    let mut out = Vec::new();
    for item in items {
        let file = item.origin.file.as_path();
        match std::fs::metadata(&item.src) {
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
    use crate::fsutil::scratch::Tmp;
    use nix::sys::stat::utimensat;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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
    /// A scratch dir with the `source` tree in it, and where a destination
    /// beside it goes (not made).
    fn source_and_dest(tag: &str) -> (Tmp, PathBuf, PathBuf) {
        let t = Tmp::new(tag);
        let src = source(&t.0);
        let dest = t.join("dest");
        (t, src, dest)
    }
    /// Prepopulate `dest` from `src`, outside any volume.
    fn copy(src: &Path, dest: &Path) -> Result<Vec<Outcome>, FsError> {
        apply(&[item(src, dest)], Path::new("/nonexistent-volume"))
    }

    #[test]
    fn a_small_copy_is_synced_entry_by_entry_else_by_one_syncfs() {
        let t = Tmp::new("prepop-durable");
        let root = DirFd::open(&t.0).expect("open");
        let new = |durable| Copy {
            root: &root,
            owner: None,
            files: 0,
            bytes: 0,
            linked: HashMap::new(),
            durable,
        };
        let entry = || (t.0.clone(), Entry::Dir(DirFd::open(&t.0).expect("open")));
        // A destination that was created on the way: one syncfs.
        let mut created = new(None);
        created.keep(Some(entry()));
        assert!(created.durable.is_none());
        // Files and directories, up to the bound: each kept to be synced.
        let mut small = new(Some(Vec::new()));
        for _ in 0..FSYNC_ENTRIES {
            small.keep(Some(entry()));
        }
        assert_eq!(small.durable.as_ref().map(Vec::len), Some(FSYNC_ENTRIES));
        // One more: the whole copy goes to one syncfs.
        small.keep(Some(entry()));
        assert!(small.durable.is_none());
        small.keep(Some(entry()));
        assert!(small.durable.is_none());
        // A link (symbolic or hard) cannot be synced alone: one syncfs.
        let mut linked = new(Some(Vec::new()));
        linked.keep(Some(entry()));
        linked.keep(None);
        assert!(linked.durable.is_none());
    }

    #[test]
    fn empty_destinations_are_filled_exactly() {
        let t = Tmp::new("prepop-fill");
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
            let out = copy(&src, &dest).expect("copy");
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
        let (_t, src, dest) = source_and_dest("prepop-keep");
        fs::create_dir_all(&dest).expect("mkdir");
        fs::write(dest.join("mine.db"), "precious").expect("w");
        let out = copy(&src, &dest).expect("ok");
        assert_eq!(out[0], Outcome::Kept(dest.clone()));
        assert_eq!(fs::read_dir(&dest).expect("ls").count(), 1);
        assert_eq!(
            fs::read_to_string(dest.join("mine.db")).expect("r"),
            "precious"
        );
    }

    #[test]
    fn an_interrupted_copy_is_wiped_and_redone() {
        let (_t, src, dest) = source_and_dest("prepop-interrupted");
        fs::create_dir_all(dest.join("sub")).expect("mkdir");
        fs::write(dest.join(MARKER), "").expect("w");
        fs::write(dest.join("sub/half-written"), "xx").expect("w");
        assert_eq!(dest_state(&dest).expect("state"), DestState::Interrupted);
        copy(&src, &dest).expect("copy");
        assert!(!dest.join("sub/half-written").exists());
        assert_eq!(fs::read_to_string(dest.join("a.txt")).expect("r"), "alpha");
        assert_eq!(dest_state(&dest).expect("state"), DestState::HasData);
    }

    #[test]
    fn a_missing_source_is_an_error_that_leaves_nothing() {
        let t = Tmp::new("prepop-nosrc");
        let dest = t.0.join("dest");
        let err = copy(&t.0.join("nope"), &dest).expect_err("missing source");
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(!dest.exists(), "nothing created");
        assert_eq!(check(&[item(&t.0.join("nope"), &dest)]).len(), 1);
    }

    #[test]
    fn links_in_the_volume_are_refused() {
        let t = Tmp::new("prepop-links");
        let src = source(&t.0);
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
            (vol.join("new2/deeper"), false),
        ];
        for (dest, refused) in rows {
            let r = apply(&[item(&src, &dest)], &vol);
            assert_eq!(r.is_err(), refused, "{}: {r:?}", dest.display());
            if let Err(e) = r {
                assert!(e.to_string().contains("is a symbolic link"), "{e}");
            }
        }
        assert_eq!(
            fs::read_dir(t.0.join("outside")).expect("ls").count(),
            0,
            "nothing written through the link"
        );
        // The last component is never followed, in the volume or not.
        std::os::unix::fs::symlink(t.0.join("outside"), t.0.join("elsewhere")).expect("link");
        assert!(apply(&[item(&src, &t.0.join("elsewhere"))], &vol).is_err());
    }

    #[test]
    fn sparse_files_and_hard_links_are_kept() {
        let t = Tmp::new("prepop-sparse");
        let src = t.0.join("src");
        fs::create_dir_all(src.join("sub")).expect("mkdir");
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = fs::File::create(src.join("sparse")).expect("create");
            f.write_all(b"a").expect("w");
            f.seek(SeekFrom::Start(8 << 20)).expect("seek");
            f.write_all(b"b").expect("w");
            f.set_len(16 << 20).expect("len");
        }
        fs::write(src.join("one"), "x").expect("w");
        fs::hard_link(src.join("one"), src.join("sub/two")).expect("hardlink");
        fs::hard_link(src.join("one"), src.join("three")).expect("hardlink");
        let dest = t.0.join("dest");
        let out = copy(&src, &dest).expect("copy");
        assert!(
            matches!(out[0], Outcome::Copied { files: 4, .. }),
            "{out:?}"
        );
        let md = fs::metadata(dest.join("sparse")).expect("md");
        assert_eq!(md.len(), 16 << 20);
        if fs::metadata(src.join("sparse")).expect("md").blocks() < 1024 {
            assert!(md.blocks() < 1024, "{} blocks", md.blocks());
        }
        let data = fs::read(dest.join("sparse")).expect("r");
        assert_eq!((data[0], data[8 << 20]), (b'a', b'b'));
        let ino = |p: &str| fs::metadata(dest.join(p)).expect("md").ino();
        assert_eq!(ino("one"), ino("sub/two"));
        assert_eq!(ino("one"), ino("three"));
        assert_eq!(fs::metadata(dest.join("one")).expect("md").nlink(), 3);
    }

    #[test]
    fn a_planted_marker_link_is_replaced_not_written_through() {
        let (t, src, dest) = source_and_dest("prepop-marker");
        fs::create_dir_all(&dest).expect("mkdir");
        fs::write(t.0.join("victim"), "precious").expect("w");
        std::os::unix::fs::symlink(t.0.join("victim"), dest.join(MARKER)).expect("link");
        assert_eq!(dest_state(&dest).expect("state"), DestState::Interrupted);
        copy(&src, &dest).expect("copy");
        assert_eq!(
            fs::read_to_string(t.0.join("victim")).expect("r"),
            "precious"
        );
        assert!(fs::symlink_metadata(dest.join(MARKER)).is_err());
    }
}
