//! Output of services and of the launcher itself.
//!
//! The event loop only reads: each child's `prefix` or `file` pipe is
//! drained into whole lines, which go, with their prefix, to one queue.
//! A single writer thread empties the queue into the launcher's stdout,
//! stderr and log files (with size rotation), in order, so lines never
//! interleave or tear. The queue is bounded: when whoever reads the
//! container's output stalls, lines beyond the bound are dropped and
//! counted — the loop never blocks on a write — and the count is reported
//! once writing works again. The launcher's own log lines take the same
//! queue, so they never interleave with a service's. Layer 2.

use crate::config::model::FileStream;
use nix::fcntl::OFlag;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Biggest line kept whole; a longer one is cut into pieces of this size.
const MAX_LINE: usize = 64 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// The pipe buffer asked for each service's output.
const PIPE_SIZE: nix::libc::c_int = 1 << 20;
/// At most this much is read from one pipe per wake-up, so a service that
/// writes without pause neither grows our buffer without bound nor starves
/// the others (poll is level-triggered: the rest comes next round).
const MAX_READ_PER_DRAIN: usize = 1 << 20;
/// Bytes waiting for the writer thread at most; beyond, lines are dropped.
pub const QUEUE_BYTES: usize = 16 << 20;
/// The writer's writes are at most this big (large writes are slower on
/// some filesystems, and a reader sees lines sooner).
const WRITE_CHUNK: usize = 64 * 1024;
/// Buffers kept for reuse, and the largest one kept.
const POOL: usize = 32;
const POOL_MAX_CAP: usize = 2 << 20;

/// Where a batch of lines goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Dest {
    Stdout,
    Stderr,
    /// A log file (circus `FileStream`), opened and rotated by the writer.
    File(Arc<FileStream>),
}

struct Queue {
    items: VecDeque<(Dest, Vec<u8>)>,
    bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
    /// The writer is writing a batch it took.
    busy: bool,
    pool: Vec<Vec<u8>>,
    thread: bool,
}

/// The one writer of the process (`writer()`).
pub struct Writer {
    q: Mutex<Queue>,
    more: Condvar,
    idle: Condvar,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

/// The process's writer; its thread starts with the first batch.
pub fn writer() -> &'static Writer {
    WRITER.get_or_init(|| Writer {
        q: Mutex::new(Queue {
            items: VecDeque::new(),
            bytes: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
            busy: false,
            pool: Vec::new(),
            thread: false,
        }),
        more: Condvar::new(),
        idle: Condvar::new(),
    })
}

impl Writer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A writer that panicked left consistent data (plain pushes/pops).
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer, reused when one is free.
    pub fn buffer(&self) -> Vec<u8> {
        self.lock().pool.pop().unwrap_or_default()
    }

    /// Queue `data` for `dest`; never blocks. `false`: dropped (the queue
    /// is full) and counted.
    pub fn submit(&self, dest: Dest, data: Vec<u8>) -> bool {
        if data.is_empty() {
            return true;
        }
        let mut q = self.lock();
        if q.bytes + data.len() > QUEUE_BYTES {
            q.dropped_lines += memchr::memchr_iter(b'\n', &data).count().max(1) as u64;
            q.dropped_bytes += data.len() as u64;
            recycle(&mut q.pool, data);
            return false;
        }
        q.bytes += data.len();
        q.items.push_back((dest, data));
        if !q.thread {
            q.thread = true;
            let spawned = std::thread::Builder::new()
                .name("output".into())
                .spawn(|| writer().run());
            if spawned.is_err() {
                // No thread (resource limits): write here, as a last resort.
                q.thread = false;
                let items: Vec<_> = q.items.drain(..).collect();
                q.bytes = 0;
                drop(q);
                let mut files = HashMap::new();
                for (dest, data) in items {
                    write_out(&dest, &data, &mut files);
                }
                return true;
            }
        }
        drop(q);
        self.more.notify_one();
        true
    }

    /// Start the writer thread now, if it is not running (the supervisor
    /// does once its services are spawned, so that the stop path never
    /// pays for a thread's creation).
    pub fn start(&self) {
        let mut q = self.lock();
        if q.thread {
            return;
        }
        q.thread = std::thread::Builder::new()
            .name("output".into())
            .spawn(|| writer().run())
            .is_ok();
    }

    /// Wait until everything queued is written, at most `limit`.
    pub fn flush(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let mut q = self.lock();
        while !q.items.is_empty() || q.busy {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = match self.idle.wait_timeout(q, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped_lines
    }

    fn run(&self) {
        let mut files: HashMap<PathBuf, FileOut> = HashMap::new();
        loop {
            let mut q = self.lock();
            let (dest, data) = loop {
                if let Some(item) = q.items.pop_front() {
                    break item;
                }
                q.busy = false;
                self.idle.notify_all();
                if q.dropped_lines > 0 {
                    // Writing works again: say what was lost, once.
                    let note = format!(
                        "mc-launcher: warning: output could not keep up: {} line(s), {} bytes dropped\n",
                        q.dropped_lines, q.dropped_bytes
                    );
                    q.dropped_lines = 0;
                    q.dropped_bytes = 0;
                    q.items.push_back((Dest::Stderr, note.into_bytes()));
                    continue;
                }
                q = match self.more.wait(q) {
                    Ok(g) => g,
                    Err(e) => e.into_inner(),
                };
            };
            q.busy = true;
            q.bytes = q.bytes.saturating_sub(data.len());
            drop(q);
            write_out(&dest, &data, &mut files);
            let mut q = self.lock();
            recycle(&mut q.pool, data);
        }
    }
}

fn recycle(pool: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    if pool.len() < POOL && buf.capacity() <= POOL_MAX_CAP {
        buf.clear();
        pool.push(buf);
    }
}

fn write_out(dest: &Dest, data: &[u8], files: &mut HashMap<PathBuf, FileOut>) {
    let res = match dest {
        Dest::Stdout => write_chunked(&mut io::stdout().lock(), data),
        Dest::Stderr => write_chunked(&mut io::stderr().lock(), data),
        Dest::File(spec) => {
            let f = files
                .entry(spec.path.clone())
                .or_insert_with(|| FileOut::new(FileStream::clone(spec)));
            match f.write(data) {
                Err(e) if !f.failing => {
                    f.failing = true;
                    log::error!(
                        "{}: cannot write log: {e} (output is dropped until writes work again)",
                        f.path().display()
                    );
                }
                Ok(()) if f.failing => {
                    f.failing = false;
                    log::info!("{}: writing again", f.path().display());
                }
                _ => {}
            }
            Ok(())
        }
    };
    if let Err(e) = res {
        // Nowhere left to say it but the debug log (which may be the same fd).
        log::debug!("cannot write output: {e}");
    }
}

fn write_chunked(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    for chunk in data.chunks(WRITE_CHUNK) {
        w.write_all(chunk)?;
    }
    w.flush()
}

/// `Write` into the writer's queue, for the launcher's own log (env_logger
/// formats a record, then writes it whole, once).
pub struct QueueWriter(pub Dest);

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let w = writer();
        let mut b = w.buffer();
        b.extend_from_slice(buf);
        w.submit(self.0.clone(), b);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The last lines of a service's stderr, for the termination report.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
}

/// Lines kept per service, and the bytes kept of each.
const TAIL_LINES: usize = 10;
const TAIL_LINE_BYTES: usize = 300;

impl Tail {
    fn push(&mut self, lines: &[u8]) {
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let cut = line.get(..TAIL_LINE_BYTES).unwrap_or(line);
            if self.lines.len() == TAIL_LINES {
                self.lines.pop_front();
            }
            self.lines
                .push_back(String::from_utf8_lossy(cut).into_owned());
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

/// A tail shared by the readers of a service's processes and the loop.
pub type SharedTail = std::rc::Rc<std::cell::RefCell<Tail>>;

/// The read end of one child's stdout or stderr pipe.
pub struct Reader {
    fd: File,
    pending: Vec<u8>,
    dest: Dest,
    /// Put before each line (`web | `); empty for files.
    prefix: Vec<u8>,
    /// Where the last lines are kept (stderr).
    tail: Option<SharedTail>,
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

pub fn reader(read_end: OwnedFd, dest: Dest, prefix: &str) -> Reader {
    Reader {
        fd: File::from(read_end),
        pending: Vec::new(),
        dest,
        prefix: prefix.as_bytes().to_vec(),
        tail: None,
    }
}

impl Reader {
    /// Keep the last lines read in `tail` too.
    pub fn with_tail(mut self, tail: SharedTail) -> Reader {
        self.tail = Some(tail);
        self
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

/// The wall clock, in seconds since the Unix epoch (0 before it).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Outcome of draining a reader.
pub enum Drained {
    /// More may come.
    Open,
    /// The writers are gone (EOF): drop the reader.
    Closed,
}

/// Read what is available and queue every complete line. At EOF a last
/// partial line is queued with a newline added.
pub fn drain(r: &mut Reader) -> Drained {
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
        let w = writer();
        let mut out = w.buffer();
        let lines = r.pending.get(..cut).unwrap_or_default();
        if let Some(t) = &r.tail {
            t.borrow_mut().push(lines);
        }
        frame(&r.prefix, lines, &mut out);
        r.pending.drain(..cut);
        w.submit(r.dest.clone(), out);
    }
    state
}

/// Whole lines, each with `prefix` before it, appended to `out`.
fn frame(prefix: &[u8], lines: &[u8], out: &mut Vec<u8>) {
    if prefix.is_empty() {
        out.extend_from_slice(lines);
        return;
    }
    out.reserve(lines.len() + lines.len() / 8 + prefix.len());
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
    fn drain_queues_whole_lines_and_flushes_partial_at_eof() {
        let d = tmpdir("drain");
        let path = d.join("o.log");
        let dest = Dest::File(Arc::new(FileStream {
            path: path.clone(),
            max_bytes: 0,
            backup_count: 0,
            time_format: None,
            watched: false,
        }));
        let (r, w) = pipe().expect("pipe");
        let mut rd = reader(r, dest, "");
        let mut wf = File::from(w);
        wf.write_all(b"one\ntw").expect("write");
        assert!(matches!(drain(&mut rd), Drained::Open));
        assert!(writer().flush(Duration::from_secs(10)));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\n");
        wf.write_all(b"o\nthree").expect("write");
        drop(wf);
        assert!(matches!(drain(&mut rd), Drained::Closed));
        assert!(writer().flush(Duration::from_secs(10)));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "one\ntwo\nthree\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn framing_puts_the_prefix_before_every_line() {
        let rows: &[(&str, &str, &str)] = &[
            ("web | ", "a\nb\n", "web | a\nweb | b\n"),
            ("", "a\nb\n", "a\nb\n"),
            ("w ! ", "x", "w ! x"),
        ];
        for (prefix, lines, want) in rows {
            let mut out = Vec::new();
            frame(prefix.as_bytes(), lines.as_bytes(), &mut out);
            assert_eq!(String::from_utf8_lossy(&out), *want);
        }
    }
}
