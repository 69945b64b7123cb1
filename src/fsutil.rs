//! Every filesystem access of the prepare phase goes through here.
//!
//! The launcher runs as root over a data volume that others write, so a
//! path under the volume (or under any directory a user controls: a home,
//! a log dir) is never opened by path. It is opened *beneath* a directory
//! fd that was opened from a trusted path (the image's config names it):
//!
//! - `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, plus
//!   `RESOLVE_NO_SYMLINKS` for anything the launcher writes; where the
//!   kernel lacks `openat2` (before 5.6, or a seccomp filter that refuses
//!   it), a component-by-component `openat(O_NOFOLLOW)` walk that keeps the
//!   same rules ([`Links`]);
//! - always `O_CLOEXEC | O_NONBLOCK` (a FIFO never blocks an open), then
//!   `fstat` of the opened fd to check its type: never a check by path
//!   before the open;
//! - reads are bounded ([`read_bounded`], the limit in the message);
//! - writes are atomic in the directory fd ([`DirFd::write_atomic`]: temp
//!   name `O_CREAT|O_EXCL|O_NOFOLLOW`, `fchown`/`fchmod` on the fd, fsync,
//!   `renameat` in the same directory, fsync of the directory), with modes
//!   never wider than the final one;
//! - owners and modes change by fd (`fchown`/`fchmod`), never by path.
//!
//! Errors name the path; refusals carry a [`Refusal`] so that callers can
//! word them (`~/.ssh is a symbolic link: refused`).

use crate::config::model::Owner;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;

/// An I/O error and the path it happened on.
#[derive(Debug)]
pub struct FsError {
    pub path: PathBuf,
    pub err: io::Error,
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = match self.err.raw_os_error() {
            Some(nix::libc::ENOSPC) => " (the filesystem is full)",
            Some(nix::libc::EROFS) => " (the filesystem is mounted read-only)",
            Some(nix::libc::EACCES | nix::libc::EPERM) => {
                " (permission denied: check the owner and mode)"
            }
            _ => "",
        };
        write!(f, "{}: {}{hint}", self.path.display(), self.err)
    }
}

impl std::error::Error for FsError {}

impl FsError {
    pub fn new(path: &Path, err: io::Error) -> FsError {
        FsError {
            path: path.to_path_buf(),
            err,
        }
    }

    /// The refusal behind this error, if it is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        refusal(&self.err)
    }

    /// The path does not exist (or a directory on the way does not).
    pub fn is_not_found(&self) -> bool {
        self.err.kind() == io::ErrorKind::NotFound
    }
}

/// Attach `path` to an I/O result.
pub fn at<T>(path: &Path, r: io::Result<T>) -> Result<T, FsError> {
    r.map_err(|err| FsError::new(path, err))
}

/// Why a path was refused rather than opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A symbolic link where none may be followed (writes).
    Link,
    /// The path (through a link, or `..`) leads outside the directory it
    /// must stay beneath.
    Outside(PathBuf),
    /// Not the type of file expected (`found` is "a FIFO", "a directory"…).
    Kind {
        expected: &'static str,
        found: &'static str,
    },
    /// Larger than the limit, in bytes.
    TooBig(u64),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Link => write!(
                f,
                "is a symbolic link: refused (links are not followed here)"
            ),
            Refusal::Outside(root) => {
                write!(f, "leads outside {}: refused", root.display())
            }
            Refusal::Kind { expected, found } => {
                write!(f, "is {found}, not {expected}: refused")
            }
            Refusal::TooBig(limit) => {
                write!(
                    f,
                    "is larger than {}, the limit: refused",
                    human_size(*limit)
                )
            }
        }
    }
}

impl std::error::Error for Refusal {}

impl From<Refusal> for io::Error {
    fn from(r: Refusal) -> io::Error {
        let kind = match r {
            Refusal::TooBig(_) => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, r)
    }
}

/// The refusal carried by `e`, if any.
pub fn refusal(e: &io::Error) -> Option<&Refusal> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refusal>())
}

/// `1048576` → `1 MiB`, `262144` → `256 KiB`, else bytes.
pub fn human_size(n: u64) -> String {
    const KIB: u64 = 1024;
    if n >= KIB * KIB && n.is_multiple_of(KIB * KIB) {
        format!("{} MiB", n / (KIB * KIB))
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// How symbolic links below the root are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Followed while every step stays beneath the root (an absolute link
    /// or a `..` above the root is refused); magic links never. For reads
    /// of operator inputs: a Kubernetes ConfigMap/Secret mount is
    /// `pillar.sls -> ..data/pillar.sls`, `..data -> ..2026_…`.
    Beneath,
    /// No symbolic link at all below the root. For everything written.
    Refuse,
}

/// What an opened path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
        }
    }
}

/// What `st` is, in words.
pub fn type_name(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "of an unknown type",
    }
}

fn is_type(st: &FileStat, t: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == t.bits()
}

pub fn is_regular(st: &FileStat) -> bool {
    is_type(st, SFlag::S_IFREG)
}

pub fn is_dir(st: &FileStat) -> bool {
    is_type(st, SFlag::S_IFDIR)
}

pub fn is_symlink(st: &FileStat) -> bool {
    is_type(st, SFlag::S_IFLNK)
}

// ----- opening beneath a directory fd ------------------------------------

/// How a path is resolved: `openat2`, or the `openat` walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Openat2,
    Walk,
}

const OPENAT2_UNKNOWN: u8 = 0;
const OPENAT2_WORKS: u8 = 1;
const OPENAT2_MISSING: u8 = 2;
/// Whether this kernel (and seccomp profile) lets us use openat2.
static OPENAT2: AtomicU8 = AtomicU8::new(OPENAT2_UNKNOWN);

/// Flags every open gets.
fn base_flags() -> OFlag {
    OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY
}

/// One open: `rel` beneath `dir`, its links as `links` says, with `flags`
/// and (on create) `mode`.
#[derive(Clone, Copy)]
struct OpenAt<'a> {
    dir: BorrowedFd<'a>,
    rel: &'a Path,
    links: Links,
    flags: OFlag,
    mode: Mode,
}

/// Open `rel` beneath `dir` with `flags` (plus [`base_flags`]); errno level.
fn open_raw(at: OpenAt<'_>) -> Result<OwnedFd, Errno> {
    if OPENAT2.load(Ordering::Relaxed) != OPENAT2_MISSING {
        match open_with(Strategy::Openat2, at) {
            Ok(fd) => {
                OPENAT2.store(OPENAT2_WORKS, Ordering::Relaxed);
                return Ok(fd);
            }
            // Not in this kernel, or refused by a seccomp filter (old
            // Docker profiles say EPERM): walk instead, from now on.
            Err(Errno::ENOSYS | Errno::E2BIG) => {
                OPENAT2.store(OPENAT2_MISSING, Ordering::Relaxed);
            }
            Err(Errno::EPERM) if OPENAT2.load(Ordering::Relaxed) == OPENAT2_UNKNOWN => {
                let walked = open_with(Strategy::Walk, at);
                if walked.is_ok() {
                    OPENAT2.store(OPENAT2_MISSING, Ordering::Relaxed);
                }
                return walked;
            }
            Err(e) => return Err(e),
        }
    }
    open_with(Strategy::Walk, at)
}

fn open_with(strategy: Strategy, at: OpenAt<'_>) -> Result<OwnedFd, Errno> {
    let at = OpenAt {
        flags: at.flags | base_flags(),
        rel: if at.rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            at.rel
        },
        ..at
    };
    let OpenAt {
        dir,
        rel,
        links,
        flags,
        mode,
    } = at;
    match strategy {
        Strategy::Openat2 => {
            use nix::fcntl::ResolveFlag as R;
            let resolve = match links {
                Links::Beneath => R::RESOLVE_BENEATH | R::RESOLVE_NO_MAGICLINKS,
                Links::Refuse => {
                    R::RESOLVE_BENEATH | R::RESOLVE_NO_SYMLINKS | R::RESOLVE_NO_MAGICLINKS
                }
            };
            let how = nix::fcntl::OpenHow::new()
                .flags(flags)
                .mode(mode)
                .resolve(resolve);
            nix::fcntl::openat2(dir, rel, how)
        }
        Strategy::Walk => walk(at),
    }
}

/// Most links followed in one resolution (the kernel's own limit).
const MAX_HOPS: usize = 40;

/// The `openat` walk: one component at a time, each opened `O_NOFOLLOW`
/// relative to the one before. A link is refused (`ELOOP`) with
/// [`Links::Refuse`]; with [`Links::Beneath`] its target is spliced into
/// the rest of the path, an absolute target or a `..` above the root being
/// `EXDEV`, as `RESOLVE_BENEATH` says. `..` goes back to the fd we came
/// from, so it never leaves what we walked.
fn walk(at: OpenAt<'_>) -> Result<OwnedFd, Errno> {
    let OpenAt {
        dir: root,
        rel,
        links,
        flags,
        mode,
    } = at;
    if rel.is_absolute() {
        return Err(Errno::EXDEV);
    }
    // What is left to resolve, last component first.
    let mut todo: Vec<OsString> = rel
        .components()
        .rev()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut hops = 0usize;
    while let Some(name) = todo.pop() {
        if name == "." || name.is_empty() {
            continue;
        }
        if name == ".." {
            if stack.pop().is_none() {
                return Err(Errno::EXDEV);
            }
            continue;
        }
        // `.` and `..` left at the end mean "the directory we are in".
        let last = todo.iter().all(|n| n == ".");
        let cur = stack.last().map(AsFd::as_fd).unwrap_or(root);
        let oflags = if last {
            flags | OFlag::O_NOFOLLOW
        } else {
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
        };
        match nix::fcntl::openat(cur, name.as_os_str(), oflags, mode) {
            Ok(fd) if last => return Ok(fd),
            Ok(fd) => stack.push(fd),
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                let st =
                    nix::sys::stat::fstatat(cur, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(|_| e)?;
                if !is_symlink(&st) {
                    return Err(e);
                }
                if links == Links::Refuse {
                    return Err(Errno::ELOOP);
                }
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(Errno::ELOOP);
                }
                let target = PathBuf::from(nix::fcntl::readlinkat(cur, name.as_os_str())?);
                if target.is_absolute() {
                    return Err(Errno::EXDEV);
                }
                todo.extend(
                    target
                        .components()
                        .rev()
                        .map(|c| c.as_os_str().to_os_string()),
                );
            }
            Err(e) => return Err(e),
        }
    }
    let cur = stack.last().map(AsFd::as_fd).unwrap_or(root);
    nix::fcntl::openat(cur, ".", flags, mode)
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// fstat `fd` and check it is a `kind`.
fn check_kind(fd: BorrowedFd<'_>, kind: Kind) -> io::Result<FileStat> {
    let st = nix::sys::stat::fstat(fd).map_err(errno_io)?;
    let ok = match kind {
        Kind::File => is_regular(&st),
        Kind::Dir => is_dir(&st),
    };
    if ok {
        Ok(st)
    } else {
        Err(Refusal::Kind {
            expected: kind.name(),
            found: type_name(&st),
        }
        .into())
    }
}

/// Clear `O_NONBLOCK` again (it was there for the open only).
fn set_blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(errno_io)?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(errno_io)?;
    Ok(())
}

/// Change owner (when given) then mode (when given) of an open file or
/// directory: the owner first, as chown clears set-id bits.
pub fn set_owner_mode(
    fd: BorrowedFd<'_>,
    mode: Option<u32>,
    owner: Option<(Uid, Gid)>,
) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(fd, Some(uid), Some(gid)).map_err(errno_io)?;
    }
    if let Some(m) = mode {
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(m & 0o7777)).map_err(errno_io)?;
    }
    Ok(())
}

/// Read all of `r`, refusing more than `limit` bytes (the limit is in the
/// error: [`Refusal::TooBig`]).
pub fn read_bounded(r: &mut impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(Refusal::TooBig(limit).into());
    }
    Ok(buf)
}

/// The first `n` bytes of `r` (fewer when it is shorter).
pub fn read_prefix(r: &mut impl Read, n: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(n).read_to_end(&mut buf)?;
    Ok(buf)
}

static TEMP_SEQ: AtomicU32 = AtomicU32::new(0);

/// A single path component: what `renameat`/`mkdirat` may be given.
/// `renameat2(2)` flags (linux/fs.h): fail when the target exists;
/// exchange the two entries.
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

/// `renameat2(2)` within one directory, by system call: nix wraps it for
/// glibc only, and the static (musl) build needs it too.
fn renameat2(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr, flags: u32) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let cstr = |n: &OsStr| std::ffi::CString::new(n.as_bytes()).map_err(|_| Errno::EINVAL);
    let (from, to) = (cstr(from)?, cstr(to)?);
    let fd = dir.as_raw_fd();
    // SAFETY: two NUL-terminated names that outlive the call, a directory
    // fd borrowed for it, and flags the kernel checks.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_renameat2,
            fd,
            from.as_ptr(),
            fd,
            to.as_ptr(),
            flags,
        )
    };
    Errno::result(rc).map(drop)
}

fn single_name(name: &OsStr) -> io::Result<&OsStr> {
    let mut comps = Path::new(name).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(n)), None) => Ok(n),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a plain file name: {:?}", name),
        )),
    }
}

/// An open directory: the root that paths are resolved beneath. `path` is
/// what messages name.
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for DirFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl DirFd {
    /// Open a directory the image's config names (the volume, a home, a log
    /// dir): links in `path` itself are followed — it is trusted; what is
    /// beneath it is not.
    pub fn open(path: &Path) -> Result<DirFd, FsError> {
        let fd = at(
            path,
            nix::fcntl::open(
                path,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | base_flags(),
                Mode::empty(),
            )
            .map_err(errno_io),
        )?;
        at(path, check_kind(fd.as_fd(), Kind::Dir))?;
        Ok(DirFd {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path messages name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `rel` beneath this directory, for messages.
    pub fn display_path(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    /// Turn an errno from resolving `rel` into an error naming the path,
    /// with refusals said as such.
    fn resolve_error(&self, rel: &Path, links: Links, e: Errno) -> FsError {
        match (e, links) {
            (Errno::ELOOP, Links::Refuse) => {
                FsError::new(&self.first_link(rel), Refusal::Link.into())
            }
            (Errno::EXDEV, _) => FsError::new(
                &self.display_path(rel),
                Refusal::Outside(self.path.clone()).into(),
            ),
            _ => FsError::new(&self.display_path(rel), errno_io(e)),
        }
    }

    /// For a message only: the first component of `rel` that is a link.
    fn first_link(&self, rel: &Path) -> PathBuf {
        let mut p = self.path.clone();
        for c in rel.components() {
            p.push(c);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                return p;
            }
        }
        self.display_path(rel)
    }

    /// Open `rel` beneath this directory with `flags`, and check it is a
    /// `kind` (on the fd).
    pub fn open_beneath(
        &self,
        rel: &Path,
        links: Links,
        kind: Kind,
        flags: OFlag,
    ) -> Result<(OwnedFd, FileStat), FsError> {
        self.open_using(None, rel, links, kind, flags)
    }

    /// [`DirFd::open_beneath`] with a given strategy (tests try both).
    fn open_using(
        &self,
        strategy: Option<Strategy>,
        rel: &Path,
        links: Links,
        kind: Kind,
        flags: OFlag,
    ) -> Result<(OwnedFd, FileStat), FsError> {
        let flags = match kind {
            Kind::Dir => flags | OFlag::O_DIRECTORY,
            Kind::File => flags,
        };
        let req = OpenAt {
            dir: self.fd.as_fd(),
            rel,
            links,
            flags,
            mode: Mode::empty(),
        };
        let fd = match strategy {
            None => open_raw(req),
            Some(s) => open_with(s, req),
        }
        .map_err(|e| self.resolve_error(rel, links, e))?;
        let st = at(&self.display_path(rel), check_kind(fd.as_fd(), kind))?;
        Ok((fd, st))
    }

    /// The directory `rel` beneath this one.
    pub fn dir(&self, rel: &Path, links: Links) -> Result<DirFd, FsError> {
        let (fd, _) = self.open_beneath(rel, links, Kind::Dir, OFlag::O_RDONLY)?;
        Ok(DirFd {
            fd,
            path: self.display_path(rel),
        })
    }

    /// The regular file `rel` beneath this directory, open for reading.
    pub fn file(&self, rel: &Path, links: Links) -> Result<(File, FileStat), FsError> {
        let (fd, st) = self.open_beneath(rel, links, Kind::File, OFlag::O_RDONLY)?;
        Ok((File::from(fd), st))
    }

    /// Read the regular file `rel`, at most `limit` bytes.
    pub fn read(&self, rel: &Path, links: Links, limit: u64) -> Result<Vec<u8>, FsError> {
        let (mut f, _) = self.file(rel, links)?;
        at(&self.display_path(rel), read_bounded(&mut f, limit))
    }

    /// Open `rel` beneath this directory, creating every missing
    /// directory (mode `mode`, before the umask) with `mkdirat`, each
    /// opened `O_NOFOLLOW` right after: no link is followed. Also says
    /// whether the last one was created.
    pub fn mkdirs(&self, rel: &Path, mode: u32) -> Result<(DirFd, bool), FsError> {
        let mut cur: Option<DirFd> = None;
        let mut created = false;
        let mut path = self.path.clone();
        for c in rel.components() {
            let name = match c {
                Component::CurDir => continue,
                Component::Normal(n) => n,
                _ => {
                    return Err(FsError::new(
                        &self.display_path(rel),
                        Refusal::Outside(self.path.clone()).into(),
                    ))
                }
            };
            let parent = cur.as_ref().unwrap_or(self);
            path.push(name);
            created = false;
            let child = match parent.dir(Path::new(name), Links::Refuse) {
                Ok(d) => d,
                Err(e) if e.is_not_found() => {
                    match nix::sys::stat::mkdirat(
                        parent.as_fd(),
                        name,
                        Mode::from_bits_truncate(mode),
                    ) {
                        Ok(()) => created = true,
                        Err(Errno::EEXIST) => {} // made meanwhile: open what is there
                        Err(e) => return Err(FsError::new(&path, errno_io(e))),
                    }
                    parent.dir(Path::new(name), Links::Refuse)?
                }
                Err(e) => return Err(e),
            };
            cur = Some(child);
        }
        match cur {
            Some(d) => Ok((d, created)),
            None => Ok((self.reopen()?, false)),
        }
    }

    /// A second fd on this directory (its own offset, for listing).
    pub fn reopen(&self) -> Result<DirFd, FsError> {
        self.dir(Path::new("."), Links::Refuse)
    }

    /// The names in this directory (without `.` and `..`), sorted.
    pub fn entries(&self) -> Result<Vec<OsString>, FsError> {
        let fd = self.reopen()?.fd;
        let mut dir = at(&self.path, nix::dir::Dir::from_fd(fd).map_err(errno_io))?;
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = at(&self.path, e.map_err(errno_io))?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// `lstat` of an entry (never follows it).
    pub fn stat_entry(&self, name: &OsStr) -> Result<FileStat, FsError> {
        at(
            &self.path.join(name),
            nix::sys::stat::fstatat(self.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(errno_io),
        )
    }

    /// Remove the entry `name` (a file, a link, or an empty directory when
    /// `dir`); missing is fine.
    pub fn remove(&self, name: &OsStr, dir: bool) -> Result<(), FsError> {
        let flag = if dir {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        match nix::unistd::unlinkat(self.as_fd(), name, flag) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(FsError::new(&self.path.join(name), errno_io(e))),
        }
    }

    /// Remove `name` and, when it is a directory, all it holds, never
    /// following a link.
    pub fn remove_tree(&self, name: &OsStr) -> Result<(), FsError> {
        let st = match self.stat_entry(name) {
            Ok(st) => st,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        if !is_dir(&st) {
            return self.remove(name, false);
        }
        let sub = self.dir(Path::new(name), Links::Refuse)?;
        for entry in sub.entries()? {
            sub.remove_tree(&entry)?;
        }
        self.remove(name, true)
    }

    /// Create `name` in this directory: `O_CREAT|O_EXCL|O_NOFOLLOW`, mode
    /// 0600 until the caller says otherwise.
    pub fn create_file(&self, name: &OsStr) -> Result<File, FsError> {
        let path = self.path.join(name);
        let name = at(&path, single_name(name))?;
        let fd = at(
            &path,
            nix::fcntl::openat(
                self.as_fd(),
                name,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | base_flags(),
                Mode::from_bits_truncate(0o600),
            )
            .map_err(errno_io),
        )?;
        Ok(File::from(fd))
    }

    /// Replace `name` in this directory with `data`, atomically: a temp file
    /// created 0600 in this directory, given its owner and final mode on
    /// the fd, fsynced, renamed over `name`, then the directory fsynced.
    /// A link at `name` is replaced, never written through.
    pub fn write_atomic(
        &self,
        name: &OsStr,
        data: &[u8],
        mode: u32,
        owner: Option<(Uid, Gid)>,
    ) -> Result<(), FsError> {
        let path = self.path.join(name);
        let name = at(&path, single_name(name))?;
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".mc-launcher.{}.{}",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp_path = self.path.join(&tmp_name);
        let _ = self.remove(&tmp_name, false);
        let result = (|| {
            let mut f = self.create_file(&tmp_name)?;
            at(&tmp_path, f.write_all(data))?;
            at(&tmp_path, set_owner_mode(f.as_fd(), Some(mode), owner))?;
            at(&tmp_path, f.sync_all())?;
            at(
                &path,
                nix::fcntl::renameat(self.as_fd(), tmp_name.as_os_str(), self.as_fd(), name)
                    .map_err(errno_io),
            )?;
            self.sync()
        })();
        if result.is_err() {
            let _ = self.remove(&tmp_name, false);
        }
        result
    }

    /// Put the entry `from` of this directory in the place of `to`,
    /// atomically: a plain rename when `to` does not exist, else the two
    /// exchanged (`renameat2(RENAME_EXCHANGE)`, which also works for a
    /// directory over a non-empty one) and the old `to`, now at `from`,
    /// removed. Readers of `to` never see it missing.
    pub fn replace_entry(&self, from: &OsStr, to: &OsStr) -> Result<(), FsError> {
        let path = self.path.join(to);
        let (from_n, to_n) = (at(&path, single_name(from))?, at(&path, single_name(to))?);
        match renameat2(self.as_fd(), from_n, to_n, RENAME_NOREPLACE) {
            Ok(()) => return self.sync(),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(FsError::new(&path, errno_io(e))),
        }
        at(
            &path,
            renameat2(self.as_fd(), from_n, to_n, RENAME_EXCHANGE).map_err(errno_io),
        )?;
        self.remove_tree(from)?;
        self.sync()
    }

    /// Owner, then mode, of this directory, by fd.
    pub fn set_owner_mode(
        &self,
        mode: Option<u32>,
        owner: Option<(Uid, Gid)>,
    ) -> Result<(), FsError> {
        at(&self.path, set_owner_mode(self.as_fd(), mode, owner))
    }

    /// fstat of this directory.
    pub fn stat(&self) -> Result<FileStat, FsError> {
        at(
            &self.path,
            nix::sys::stat::fstat(self.as_fd()).map_err(errno_io),
        )
    }

    /// fsync the directory (its entries are durable).
    pub fn sync(&self) -> Result<(), FsError> {
        at(
            &self.path,
            nix::unistd::fsync(self.as_fd()).map_err(errno_io),
        )
    }
}

// ----- trusted roots and the untrusted ones below them --------------------

/// The directories whose content is not trusted (the data volume), with
/// their canonical forms: set by the prepare phase for the path-based
/// helpers below and for log files.
static UNTRUSTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Say which directories hold untrusted content (the data volume). Paths
/// under them are then opened beneath them, links refused for writes.
pub fn set_untrusted_roots(roots: &[PathBuf]) {
    let mut all = Vec::new();
    for r in roots {
        all.push(r.clone());
        if let Ok(c) = std::fs::canonicalize(r) {
            if &c != r {
                all.push(c);
            }
        }
    }
    let mut guard = UNTRUSTED.lock().unwrap_or_else(|e| e.into_inner());
    *guard = all;
}

/// `path` relative to `root`, when it lies under it (lexically, or under
/// the root's canonical form).
pub fn under(path: &Path, root: &Path) -> Option<PathBuf> {
    if let Ok(rel) = path.strip_prefix(root) {
        return Some(rel.to_path_buf());
    }
    let canon = std::fs::canonicalize(root).ok()?;
    path.strip_prefix(&canon).ok().map(Path::to_path_buf)
}

/// The untrusted root `path` lies under, and the rest of it.
pub fn untrusted_root_of(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let guard = UNTRUSTED.lock().unwrap_or_else(|e| e.into_inner());
    guard.iter().find_map(|r| {
        path.strip_prefix(r)
            .ok()
            .map(|rel| (r.clone(), rel.to_path_buf()))
    })
}

/// Where `path` is resolved from: `root` and the rest when it lies under
/// `root` (given, or from [`set_untrusted_roots`]); else `None` (a trusted
/// path, opened as it is).
fn split(path: &Path, root: Option<&Path>) -> Option<(PathBuf, PathBuf)> {
    match root {
        Some(r) => under(path, r).map(|rel| (r.to_path_buf(), rel)),
        None => untrusted_root_of(path),
    }
}

/// Open the directory `dir`, which may lie under the untrusted `root`:
/// then beneath it (`links` as asked); else by its (trusted) path.
/// `Ok(None)` when it does not exist.
pub fn open_dir_in(
    dir: &Path,
    root: Option<&Path>,
    links: Links,
) -> Result<Option<DirFd>, FsError> {
    match open_dir_at(dir, root, links) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`open_dir_in`], with a missing `dir` an error.
fn open_dir_at(dir: &Path, root: Option<&Path>, links: Links) -> Result<DirFd, FsError> {
    match split(dir, root) {
        Some((r, rel)) => {
            let mut sub = DirFd::open(&r)?.dir(&rel, links)?;
            sub.path = dir.to_path_buf();
            Ok(sub)
        }
        None => DirFd::open(dir),
    }
}

/// Open the directory `dir` to write in it, creating what is missing:
/// under the untrusted `root`, beneath it without following any link
/// (the root itself is created by path when missing); elsewhere by path.
/// Also says whether `dir` itself was created.
pub fn dir_for_write(dir: &Path, root: Option<&Path>, mode: u32) -> Result<(DirFd, bool), FsError> {
    match split(dir, root) {
        Some((r, rel)) => {
            if !r.is_dir() {
                at(&r, std::fs::create_dir_all(&r))?;
            }
            let base = DirFd::open(&r)?;
            let (mut d, created) = base.mkdirs(&rel, mode)?;
            d.path = dir.to_path_buf();
            Ok((d, created))
        }
        None => {
            let existed = dir.is_dir();
            if !existed {
                at(dir, std::fs::create_dir_all(dir))?;
            }
            Ok((DirFd::open(dir)?, !existed))
        }
    }
}

/// The directory and file name of `path`.
fn parent_and_name(path: &Path) -> Result<(PathBuf, OsString), FsError> {
    let name = path.file_name().map(OsStr::to_os_string).ok_or_else(|| {
        FsError::new(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok((dir, name))
}

/// Read the regular file `path`, at most `limit` bytes: beneath `root`
/// when it lies under it (links followed while they stay beneath), else by
/// its path; always `O_NONBLOCK` and checked on the fd.
pub fn read_file_in(path: &Path, root: Option<&Path>, limit: u64) -> Result<Vec<u8>, FsError> {
    let (base, rel) = match split(path, root) {
        Some((r, rel)) => (DirFd::open(&r)?, rel),
        None => {
            let (dir, name) = parent_and_name(path)?;
            (DirFd::open(&dir)?, PathBuf::from(name))
        }
    };
    let mut f = match base.file(&rel, Links::Beneath) {
        Ok((f, _)) => f,
        Err(mut e) => {
            e.path = path.to_path_buf();
            return Err(e);
        }
    };
    at(path, read_bounded(&mut f, limit))
}

/// Replace `path` with `data` atomically (see [`DirFd::write_atomic`]).
/// Under an untrusted root (from [`set_untrusted_roots`]) its directory is
/// opened beneath it without following links; elsewhere by path. The
/// directory must exist.
pub fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(Uid, Gid)>,
) -> Result<(), FsError> {
    let (dir, name) = parent_and_name(path)?;
    open_dir_at(&dir, None, Links::Refuse)?.write_atomic(&name, data, mode, owner)
}

/// [`write_atomic`] for a `path` that may lie under the untrusted `root`;
/// missing directories are created (without following links under it).
pub fn write_atomic_in(
    path: &Path,
    root: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(Uid, Gid)>,
) -> Result<(), FsError> {
    let (dir, name) = parent_and_name(path)?;
    let (d, _) = dir_for_write(&dir, Some(root), 0o755)?;
    d.write_atomic(&name, data, mode, owner)
}

/// Create `dir` (and parents) if missing, then give it `owner` and `mode`,
/// by fd. Under an untrusted root (from [`set_untrusted_roots`]) nothing
/// is created or changed through a link.
pub fn ensure_dir(dir: &Path, mode: u32, owner: Option<(Uid, Gid)>) -> Result<(), FsError> {
    let (d, _) = dir_for_write(dir, None, mode)?;
    d.set_owner_mode(Some(mode), owner)
}

pub fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    DirFd::open(dir)?.sync()
}

/// Open the log file `path` to append to it, creating it (and missing
/// directories) when needed. Under an untrusted root (the volume) no link
/// is followed and it must be a regular file. Elsewhere the last component
/// is opened `O_NOFOLLOW` unless the directory holding it is root's and
/// writable by root alone (`/dev/stdout` keeps working, a link a service
/// user planted in its own log dir does not).
pub fn open_append(path: &Path) -> io::Result<File> {
    let (dir, name) = parent_and_name(path).map_err(|e| e.err)?;
    let (d, _) = dir_for_write(&dir, None, 0o755).map_err(|e| e.err)?;
    let untrusted = split(&dir, None).is_some();
    let st = d.stat().map_err(|e| e.err)?;
    let safe_dir = !untrusted && st.st_uid == 0 && st.st_mode & 0o022 == 0;
    let mut flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | base_flags();
    if !safe_dir {
        flags |= OFlag::O_NOFOLLOW;
    }
    open_last(&d, &name, flags, 0o666, !safe_dir)
}

/// Open `name` in `d` for writing with `flags`, a link at it refused; a
/// directory is refused, and anything but a regular file when `regular`;
/// then made blocking (it was opened `O_NONBLOCK`: a FIFO never blocks).
fn open_last(d: &DirFd, name: &OsStr, flags: OFlag, mode: u32, regular: bool) -> io::Result<File> {
    let fd = nix::fcntl::openat(d.as_fd(), name, flags, Mode::from_bits_truncate(mode)).map_err(
        |e| match e {
            Errno::ELOOP => Refusal::Link.into(),
            e => errno_io(e),
        },
    )?;
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(errno_io)?;
    if is_dir(&st) || (regular && !is_regular(&st)) {
        return Err(Refusal::Kind {
            expected: "a regular file",
            found: type_name(&st),
        }
        .into());
    }
    set_blocking(fd.as_fd())?;
    Ok(File::from(fd))
}

/// Open the file `path` to overwrite it (`O_TRUNC`; created 0644 when
/// `create`). Under `root` (the volume) or an untrusted root, its
/// directory is opened beneath the root without following any link and
/// the file must be a regular one; elsewhere the directory is trusted.
/// The last component is never followed (`O_NOFOLLOW`), the open never
/// blocks (`O_NONBLOCK`).
pub fn open_truncate(path: &Path, root: Option<&Path>, create: bool) -> io::Result<File> {
    let (dir, name) = parent_and_name(path).map_err(|e| e.err)?;
    let beneath = root
        .and_then(|r| split(&dir, Some(r)))
        .or_else(|| split(&dir, None));
    let untrusted = beneath.is_some();
    let d = match beneath {
        Some((r, rel)) if rel.as_os_str().is_empty() => DirFd::open(&r),
        Some((r, rel)) => DirFd::open(&r).and_then(|d| d.dir(&rel, Links::Refuse)),
        None => DirFd::open(&dir),
    }
    .map_err(|e| e.err)?;
    let mut flags = OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | base_flags();
    if create {
        flags |= OFlag::O_CREAT;
    }
    open_last(&d, &name, flags, 0o644, untrusted)
}

/// Write the termination report to `path` (see [`open_truncate`]; a path
/// that cannot be written is logged and skipped). Kubernetes makes
/// `/dev/termination-log` for the container: the default path is only
/// written when it exists, so a launcher run elsewhere never leaves one
/// behind; a path the config names is created.
pub fn write_termination_log(
    path: &Path,
    volume: Option<&Path>,
    report: &crate::error::Termination,
) {
    use std::io::Write;
    let create = path != Path::new(crate::error::DEFAULT_TERMINATION_LOG);
    match open_truncate(path, volume, create) {
        Ok(mut f) => {
            let _ = f.write_all(report.render().as_bytes());
        }
        Err(e) if create => log::warn!("termination_log {}: {e}", path.display()),
        Err(_) => {}
    }
}

/// Resolve `user[:group]` (names or numbers) to ids; without a group, the
/// user's primary group. Names come from the container's /etc/passwd and
/// /etc/group (crate::users), never from NSS.
pub fn resolve_owner(o: &Owner) -> io::Result<(Uid, Gid)> {
    let not_found = |what: &str| io::Error::new(io::ErrorKind::NotFound, format!("no such {what}"));
    let (uid, primary) = match o.user.parse::<u32>() {
        Ok(n) => (
            Uid::from_raw(n),
            crate::users::user_by_uid(n)
                .ok()
                .flatten()
                .map(|u| Gid::from_raw(u.gid)),
        ),
        Err(_) => {
            let u = crate::users::user_by_name(&o.user)?
                .ok_or_else(|| not_found(&format!("user {}", o.user)))?;
            (Uid::from_raw(u.uid), Some(Gid::from_raw(u.gid)))
        }
    };
    let gid = match &o.group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => Gid::from_raw(n),
            Err(_) => Gid::from_raw(
                crate::users::group_by_name(g)?
                    .ok_or_else(|| not_found(&format!("group {g}")))?
                    .gid,
            ),
        },
        None => primary.unwrap_or_else(|| Gid::from_raw(uid.as_raw())),
    };
    Ok((uid, gid))
}

/// Where the state dir goes when the configured one is not writable, in order.
pub fn state_fallbacks() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("/run/mc-launcher")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(x).join("mc-launcher"));
    }
    out.push(std::env::temp_dir().join(format!("mc-launcher-{}", Uid::effective())));
    out
}

/// A fallback state dir is ours only when it is a real directory (not a
/// link), owned by us and writable by nobody else: in a shared `/tmp`
/// another user could have made it first.
fn owned_by_us(d: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(d).is_ok_and(|m| {
        m.file_type().is_dir() && m.uid() == Uid::effective().as_raw() && m.mode() & 0o022 == 0
    })
}

/// The state directory the launcher can really write to: `preferred`, or,
/// when it cannot be created or written (a `--read-only` root, a non-root
/// `--user`), `/run/mc-launcher`, `$XDG_RUNTIME_DIR/mc-launcher`, then
/// `$TMPDIR/mc-launcher-UID` (each only when it is ours alone). A fallback
/// is logged: what it holds (digests, the saved image pillar) then lasts
/// only as long as that directory.
pub fn usable_state_dir(preferred: &Path) -> PathBuf {
    let writable = |d: &Path| {
        std::fs::create_dir_all(d).is_ok()
            && nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_ok()
    };
    if writable(preferred) {
        return preferred.to_path_buf();
    }
    for c in state_fallbacks() {
        if c == preferred {
            continue;
        }
        if !c.exists() {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&c);
        }
        if owned_by_us(&c) && writable(&c) {
            log::warn!(
                "state dir {} is not writable: using {} (digests and the saved image pillar last only as long as it)",
                preferred.display(),
                c.display()
            );
            return c;
        }
    }
    preferred.to_path_buf()
}

#[cfg(test)]
pub mod scratch;
#[cfg(test)]
mod tests;
