//! Output of services: `prefix` pipes written out as whole `name | line`
//! lines, and `file` streams with size rotation.
//!
//! There is one reader per pipe and a single writer (the event loop), so lines
//! from different services never interleave: each batch of complete lines is
//! handed to one `write_all`.

use crate::config::model::FileStream;
use nix::fcntl::OFlag;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Biggest line kept whole; a longer one is cut into pieces of this size.
const MAX_LINE: usize = 64 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// The pipe buffer asked for each service's output.
const PIPE_SIZE: nix::libc::c_int = 1 << 20;
/// At most this much is read from one pipe per wake-up, so a service that
/// writes without pause neither grows our buffer without bound nor starves
/// the others (poll is level-triggered: the rest comes next round).
const MAX_READ_PER_DRAIN: usize = 4 << 20;

/// Where the lines of one pipe end up.
pub enum Sink {
    /// The launcher's stdout or stderr, with `prefix` before each line.
    Prefixed { prefix: Vec<u8>, to_stderr: bool },
    /// A file (index into the file table).
    File(usize),
}

/// The read end of one child's stdout or stderr pipe.
pub struct Reader {
    fd: File,
    pending: Vec<u8>,
    pub sink: Sink,
}

impl Reader {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A pipe for a child: the read end (non-blocking, close-on-exec) for us,
/// the write end for the child.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    // A larger pipe means fewer wake-ups and larger batches for a chatty
    // service (the 64 KiB default costs one round trip per 64 KiB). Pages
    // are only allocated as they fill; failure (a lower pipe-max-size) is
    // harmless.
    let _ = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok((r, w))
}

pub fn reader(read_end: OwnedFd, sink: Sink) -> Reader {
    Reader {
        fd: File::from(read_end),
        pending: Vec::new(),
        sink,
    }
}

/// A log file with rotation by size.
pub struct FileOut {
    spec: FileStream,
    file: Option<File>,
    size: u64,
    ino: u64,
    /// A write failed (full disk…): said once, until writes work again,
    /// rather than once per line.
    failing: bool,
}

impl FileOut {
    pub fn new(spec: FileStream) -> FileOut {
        FileOut {
            spec,
            file: None,
            size: 0,
            ino: 0,
            failing: false,
        }
    }

    pub fn path(&self) -> &PathBuf {
        &self.spec.path
    }

    /// Open (or create) the file to append to it, never through a link
    /// planted for us: see `fsutil::open_append` (beneath the volume with
    /// no link at all when it lies there; elsewhere `O_NOFOLLOW` on the
    /// file unless its directory is root's alone).
    fn open(&mut self) -> io::Result<()> {
        let f = crate::fsutil::open_append(&self.spec.path)?;
        let md = f.metadata()?;
        self.size = md.len();
        self.ino = md.ino();
        self.file = Some(f);
        Ok(())
    }

    /// `path.N-1` → `path.N` … `path` → `path.1`, then a fresh `path`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let p = &self.spec.path;
        let name = |i: u32| PathBuf::from(format!("{}.{i}", p.display()));
        if self.spec.backup_count == 0 {
            std::fs::remove_file(p).or_else(ignore_missing)?;
        } else {
            std::fs::remove_file(name(self.spec.backup_count)).or_else(ignore_missing)?;
            for i in (1..self.spec.backup_count).rev() {
                std::fs::rename(name(i), name(i + 1)).or_else(ignore_missing)?;
            }
            std::fs::rename(p, name(1)).or_else(ignore_missing)?;
        }
        self.open()
    }

    /// Write whole lines (`data` ends with a newline), rotating between
    /// lines so that no file grows past `max_bytes` (a single longer line
    /// gets a file of its own).
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.spec.watched && self.file.is_some() {
            // WatchedFileStream: reopen when logrotate moved the file away.
            let moved = std::fs::metadata(&self.spec.path)
                .map(|m| m.ino() != self.ino)
                .unwrap_or(true);
            if moved {
                self.file = None;
            }
        }
        if self.file.is_none() {
            self.open()?;
        }
        let stamped;
        let data = match &self.spec.time_format {
            Some(fmt) => {
                stamped = stamp_lines(data, fmt);
                &stamped[..]
            }
            None => data,
        };
        let max = self.spec.max_bytes;
        if max == 0 {
            return self.append(data);
        }
        // Cut the batch into runs of whole lines that fit what is left.
        let mut start = 0;
        let mut end = 0;
        for line in data.split_inclusive(|&b| b == b'\n') {
            let len = line.len() as u64;
            let pending = (end - start) as u64;
            if self.size + pending + len > max && self.size + pending > 0 {
                let run = data.get(start..end).unwrap_or_default();
                self.append(run)?;
                self.rotate()?;
                start = end;
            }
            end += line.len();
        }
        self.append(data.get(start..end).unwrap_or_default())
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.file {
            Some(f) => f.write_all(data)?,
            None => return Err(io::Error::other("log file not open")),
        }
        self.size += data.len() as u64;
        Ok(())
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Prefix each line with the local time in `fmt` (strftime syntax).
fn stamp_lines(data: &[u8], fmt: &str) -> Vec<u8> {
    let stamp = strftime_now(fmt);
    let mut out = Vec::with_capacity(data.len() + 32);
    for line in data.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(stamp.as_bytes());
        out.push(b' ');
        out.extend_from_slice(line);
    }
    out
}

fn strftime_now(fmt: &str) -> String {
    use nix::libc;
    let Ok(cfmt) = std::ffi::CString::new(fmt) else {
        return String::new();
    };
    let mut buf = [0u8; 128];
    // SAFETY: plain libc calls on stack buffers sized above.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return String::new();
        }
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cfmt.as_ptr(), &tm);
        String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned()
    }
}

/// Outcome of draining a reader.
pub enum Drained {
    /// More may come.
    Open,
    /// The writers are gone (EOF): drop the reader.
    Closed,
}

/// Read what is available and write out every complete line. At EOF a last
/// partial line is written with a newline added.
pub fn drain(r: &mut Reader, files: &mut [FileOut]) -> Drained {
    let mut buf = [0u8; READ_CHUNK];
    let mut state = Drained::Open;
    let mut taken = 0usize;
    while taken < MAX_READ_PER_DRAIN {
        match r.fd.read(&mut buf) {
            Ok(0) => {
                state = Drained::Closed;
                break;
            }
            Ok(n) => {
                taken += n;
                r.pending
                    .extend_from_slice(buf.get(..n).unwrap_or_default());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => {
                state = Drained::Closed;
                break;
            }
        }
    }
    let cut = match state {
        Drained::Closed => {
            if r.pending.last().is_some_and(|&b| b != b'\n') {
                r.pending.push(b'\n');
            }
            r.pending.len()
        }
        Drained::Open => match memchr::memrchr(b'\n', &r.pending) {
            Some(i) => i + 1,
            None if r.pending.len() >= MAX_LINE => {
                r.pending.push(b'\n');
                r.pending.len()
            }
            None => 0,
        },
    };
    if cut > 0 {
        let rest = r.pending.split_off(cut);
        let lines = std::mem::replace(&mut r.pending, rest);
        emit(&r.sink, &lines, files);
    }
    state
}

fn emit(sink: &Sink, lines: &[u8], files: &mut [FileOut]) {
    match sink {
        Sink::Prefixed { prefix, to_stderr } => {
            let mut out = Vec::with_capacity(lines.len() + lines.len() / 8 + prefix.len());
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', lines) {
                out.extend_from_slice(prefix);
                out.extend_from_slice(lines.get(start..=end).unwrap_or_default());
                start = end + 1;
            }
            if let Some(rest) = lines.get(start..).filter(|r| !r.is_empty()) {
                out.extend_from_slice(prefix);
                out.extend_from_slice(rest);
            }
            let res = if *to_stderr {
                io::stderr().lock().write_all(&out)
            } else {
                io::stdout().lock().write_all(&out)
            };
            if let Err(e) = res {
                log::debug!("cannot write service output: {e}");
            }
        }
        Sink::File(i) => {
            if let Some(f) = files.get_mut(*i) {
                match f.write(lines) {
                    Err(e) if !f.failing => {
                        f.failing = true;
                        log::error!(
                            "{}: cannot write log: {e} (output is dropped until writes work again)",
                            f.path().display()
                        );
                    }
                    Err(_) => {}
                    Ok(()) if f.failing => {
                        f.failing = false;
                        log::info!("{}: writing again", f.path().display());
                    }
                    Ok(()) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcl-out-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmpdir");
        d
    }

    #[test]
    fn rotation_keeps_backup_count_files() {
        let d = tmpdir("rot");
        let path = d.join("svc.log");
        let mut f = FileOut::new(FileStream {
            path: path.clone(),
            max_bytes: 100,
            backup_count: 2,
            time_format: None,
            watched: false,
        });
        for i in 0..20 {
            f.write(format!("line {i:02} ........................\n").as_bytes())
                .expect("write");
        }
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["svc.log", "svc.log.1", "svc.log.2"]);
        let last = std::fs::read_to_string(&path).expect("read");
        assert!(
            last.ends_with("line 19 ........................\n"),
            "{last}"
        );
        for n in &names {
            assert!(std::fs::metadata(d.join(n)).expect("md").len() <= 100);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn drain_emits_whole_lines_and_flushes_partial_at_eof() {
        let d = tmpdir("drain");
        let path = d.join("o.log");
        let mut files = vec![FileOut::new(FileStream {
            path: path.clone(),
            max_bytes: 0,
            backup_count: 0,
            time_format: None,
            watched: false,
        })];
        let (r, w) = pipe().expect("pipe");
        let mut rd = reader(r, Sink::File(0));
        let mut wf = File::from(w);
        wf.write_all(b"one\ntw").expect("write");
        assert!(matches!(drain(&mut rd, &mut files), Drained::Open));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\n");
        wf.write_all(b"o\nthree").expect("write");
        drop(wf);
        assert!(matches!(drain(&mut rd, &mut files), Drained::Closed));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "one\ntwo\nthree\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
