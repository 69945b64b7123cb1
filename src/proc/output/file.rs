//! Log files (circus `FileStream`): appended to whole lines at a time,
//! rotated by size, reopened when logrotate moved them away, time-stamped
//! when asked; and the chunked write(2) that stdout, stderr and the files
//! share. Part of `output`.

use crate::config::model::FileStream;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The writer's writes are at most this big (large writes are slower on
/// some filesystems, and a reader sees lines sooner).
const WRITE_CHUNK: usize = 64 * 1024;

/// `data` to `fd` (1, 2, a log file) in writes of at most `WRITE_CHUNK`, each ending
/// at a line's end when one lies in it: whole records per write, so that
/// a service writing to the same fd (`inherit`) falls between lines, never
/// inside one. Straight to the fd: std's stdout would buffer the piece
/// after each chunk's last newline and copy it again.
pub(super) fn write_chunked(fd: std::os::fd::RawFd, data: &[u8]) -> io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        let window = rest.get(..WRITE_CHUNK).unwrap_or(rest);
        let end = if window.len() < rest.len() {
            memchr::memrchr(b'\n', window).map_or(window.len(), |i| i + 1)
        } else {
            window.len()
        };
        let mut piece = window.get(..end).unwrap_or(window);
        while !piece.is_empty() {
            // SAFETY: write(2) reads `piece.len()` bytes of a live slice.
            let n = unsafe { nix::libc::write(fd, piece.as_ptr().cast(), piece.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            piece = piece.get(n.unsigned_abs()..).unwrap_or_default();
        }
        rest = rest.get(end..).unwrap_or_default();
    }
    Ok(())
}

/// A log file with rotation by size.
pub struct FileOut {
    spec: FileStream,
    file: Option<File>,
    size: u64,
    ino: u64,
    /// A write failed (full disk…): said once, until writes work again,
    /// rather than once per line.
    pub(super) failing: bool,
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
        // Runs of whole lines that fit what is left of the file, a rotation
        // between them.
        let mut rest = data;
        loop {
            let room = usize::try_from(max.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if rest.len() <= room {
                return self.append(rest);
            }
            let fits = rest
                .get(..room)
                .and_then(|w| memchr::memrchr(b'\n', w))
                .map(|i| i + 1);
            let run = match fits {
                Some(n) => n,
                // A line longer than a whole file: a file of its own.
                None if self.size == 0 => memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1),
                None => 0,
            };
            self.append(rest.get(..run).unwrap_or_default())?;
            rest = rest.get(run..).unwrap_or_default();
            if rest.is_empty() {
                return Ok(());
            }
            self.rotate()?;
        }
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match &self.file {
            Some(f) => write_chunked(f.as_raw_fd(), data)?,
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

/// A log file at `path`, rotated past `max_bytes` (0: never) into
/// `backup_count` older ones (the output's unit tests).
#[cfg(test)]
pub(super) fn test_stream(path: &std::path::Path, max_bytes: u64, backup_count: u32) -> FileStream {
    FileStream {
        path: path.to_path_buf(),
        max_bytes,
        backup_count,
        time_format: None,
        watched: false,
    }
}

#[cfg(test)]
mod tests {
    use super::test_stream as stream;
    use super::*;
    use crate::fsutil::scratch::Tmp;

    /// `svc.log` in a scratch dir, rotated at `max_bytes` and keeping
    /// `backup_count` older files: the dir, that file, its output.
    fn rotated(tag: &str, max_bytes: u64, backup_count: u32) -> (Tmp, PathBuf, FileOut) {
        let tmp = Tmp::new(tag);
        let path = tmp.join("svc.log");
        let f = FileOut::new(stream(&path, max_bytes, backup_count));
        (tmp, path, f)
    }

    #[test]
    fn rotation_keeps_backup_count_files() {
        let (tmp, path, mut f) = rotated("file-rot", 100, 2);
        let d = tmp.path();
        for i in 0..20 {
            f.write(format!("line {i:02} ........................\n").as_bytes())
                .expect("write");
        }
        let mut names: Vec<String> = std::fs::read_dir(d)
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
    }

    /// One batch across several rotations: each file holds whole lines
    /// and at most `max_bytes`, unless one line alone is longer; read
    /// back oldest first, the files give the batch back.
    #[test]
    fn a_batch_is_cut_between_lines_at_each_rotation() {
        let (_tmp, path, mut f) = rotated("file-rot-batch", 50, 20);
        let mut batch = String::new();
        for (i, len) in [10usize, 30, 5, 70, 20, 20, 9, 49, 2].iter().enumerate() {
            batch.push_str(&format!("{i}{}\n", "x".repeat(len - 2)));
        }
        f.write(b"start\n").expect("write");
        f.write(batch.as_bytes()).expect("write");
        let mut files: Vec<PathBuf> = (1..=20)
            .rev()
            .map(|i| PathBuf::from(format!("{}.{i}", path.display())))
            .filter(|p| p.exists())
            .collect();
        files.push(path.clone());
        let mut joined = String::new();
        for p in &files {
            let text = std::fs::read_to_string(p).expect("read");
            assert!(text.ends_with('\n'), "{text:?}");
            assert!(
                text.len() <= 50 || text.lines().count() == 1,
                "{}: {text:?}",
                p.display()
            );
            joined.push_str(&text);
        }
        assert_eq!(joined, format!("start\n{batch}"));
        assert!(files.len() >= 5, "{files:?}");
    }
}
