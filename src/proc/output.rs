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

use super::frame;
use super::record::{self, Head};
use crate::config::model::{FileStream, RateLimit};
use nix::fcntl::OFlag;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// For `file` streams (which no log driver reads): the longest line kept
/// whole, only to bound what waits for a newline; a longer one is cut
/// there. `prefix` streams follow `log.max_line` (`record`).
const FILE_MAX_LINE: usize = 64 * 1024;
/// The most one read(2) asks for.
const READ_MAX: usize = 256 * 1024;
/// The pipe buffer asked for each service's output.
const PIPE_SIZE: nix::libc::c_int = 1 << 20;
/// What one wake-up reads from the pipes that are ready, in all: split
/// among them (`drain_budget`), so a service that writes without pause
/// neither grows our buffer without bound nor starves the others (poll is
/// level-triggered: the rest comes next round), and a round of the loop
/// stays short however many services flood: the control socket is served
/// between rounds. One busy pipe gets it all (fewer, larger batches).
const ROUND_BUDGET: usize = 512 * 1024;
/// The least read from a ready pipe in one round.
const MIN_DRAIN: usize = 64 * 1024;
/// What a drain reads at most outside the loop (the final drains).
pub const MAX_DRAIN: usize = ROUND_BUDGET;

/// What each of `ready` pipes may read this round.
pub fn drain_budget(ready: usize) -> usize {
    (ROUND_BUDGET / ready.max(1)).max(MIN_DRAIN)
}
/// Bytes waiting for the writer thread at most; beyond, lines are dropped.
pub const QUEUE_BYTES: usize = 16 << 20;
/// Flow control: with this much waiting for a writer that is making
/// progress, the loop stops reading services' output (they wait on their
/// full pipes, as they would on a slow terminal) until the queue is down
/// to `LOW_WATER`. Dropping is for a writer that is stuck (`STALLED`).
/// (Holding at any backlog, so that reads come in fewer, larger pieces,
/// was measured slower: the loop then frames while the writer waits.)
const HIGH_WATER: usize = 4 << 20;
const LOW_WATER: usize = 1 << 20;
/// A writer whose last write ended this long ago, with work waiting, is
/// stuck (whoever reads the container's output stopped): reading resumes
/// and what does not fit the queue is dropped.
pub const STALLED: Duration = Duration::from_secs(1);
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
    /// When the writer last finished a write (or found nothing to do).
    progress: Instant,
    /// The loop holds its readers until `room` is signalled.
    holding: bool,
    /// The writer sleeps on `more` (else a submit need not wake it: it
    /// looks at the queue again after each write).
    sleeping: bool,
    /// Threads in `wait_room`.
    room_waiters: usize,
}

/// The one writer of the process (`writer()`).
pub struct Writer {
    q: Mutex<Queue>,
    more: Condvar,
    idle: Condvar,
    /// A non-blocking pipe: the writer puts a byte in when the queue is
    /// down to `LOW_WATER` while the loop holds its readers (`hold`).
    room: Option<(OwnedFd, OwnedFd)>,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

/// Spare buffers a round takes from the pool (one per destination it
/// usually writes to: stdout and stderr).
const ROUND_SPARES: usize = 2;

/// What one wake-up of the loop read from its readers, framed, one buffer
/// per destination, in the order the readers were drained: it goes to
/// the writer at once (`Writer::submit_round`), so that a round costs one
/// lock and at most one wake-up of the writer thread, however many
/// services wrote.
pub struct Round {
    outs: Vec<(Dest, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    /// The queue was full when the round began: whole lines are counted
    /// as dropped, not framed only to be thrown away.
    full: bool,
}

impl Round {
    /// The buffer of `dest` in this round.
    fn out(&mut self, dest: &Dest) -> &mut Vec<u8> {
        let i = match self.outs.iter().position(|(d, _)| d == dest) {
            Some(i) => i,
            None => {
                let buf = self.spare.pop().unwrap_or_default();
                self.outs.push((dest.clone(), buf));
                self.outs.len() - 1
            }
        };
        // `i` was found in `outs`, or is the entry just pushed.
        #[allow(clippy::indexing_slicing)]
        &mut self.outs[i].1
    }
}

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
            progress: Instant::now(),
            holding: false,
            sleeping: false,
            room_waiters: 0,
        }),
        more: Condvar::new(),
        idle: Condvar::new(),
        room: nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).ok(),
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
        let mut q = self.lock();
        let queued = enqueue(&mut q, dest, data);
        self.hand_over(q);
        queued
    }

    /// A round of output to fill: spare buffers taken from the pool, and
    /// whether the queue is full, in one look at the queue.
    pub fn round(&self) -> Round {
        let mut q = self.lock();
        let mut spare = Vec::new();
        while spare.len() < ROUND_SPARES {
            match q.pool.pop() {
                Some(b) => spare.push(b),
                None => break,
            }
        }
        Round {
            outs: Vec::new(),
            spare,
            full: q.bytes >= QUEUE_BYTES,
        }
    }

    /// Queue what a round framed (one lock, at most one wake-up of the
    /// writer for all of it); never blocks. What does not fit the queue is
    /// dropped and counted, as with `submit`.
    pub fn submit_round(&self, round: Round) {
        let Round { outs, spare, .. } = round;
        let mut q = self.lock();
        for b in spare {
            recycle(&mut q.pool, b);
        }
        for (dest, data) in outs {
            enqueue(&mut q, dest, data);
        }
        self.hand_over(q);
    }

    /// What was just queued goes to the writer thread: started if it is
    /// not running (when no thread can be, written here, as a last
    /// resort), woken if it sleeps.
    fn hand_over(&self, mut q: std::sync::MutexGuard<'_, Queue>) {
        if q.items.is_empty() {
            return;
        }
        if !q.thread {
            q.thread = spawn_thread();
            if !q.thread {
                // No thread (resource limits).
                let items: Vec<_> = q.items.drain(..).collect();
                q.bytes = 0;
                drop(q);
                let mut files = HashMap::new();
                for (dest, data) in items {
                    write_out(&dest, &data, &mut files);
                }
                return;
            }
        }
        let wake = q.sleeping;
        drop(q);
        if wake {
            self.more.notify_one();
        }
    }

    /// Start the writer thread now, if it is not running (the supervisor
    /// does once its services are spawned, so that the stop path never
    /// pays for a thread's creation).
    pub fn start(&self) {
        let mut q = self.lock();
        if !q.thread {
            q.thread = spawn_thread();
        }
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

    /// Should the loop stop reading services' output for now? `Some(t)`:
    /// yes, until `room_fd` is readable or `t` (when a writer that has not
    /// finished a write by then counts as stuck); `None`: read on (room
    /// enough, or a stuck writer: then what does not fit is dropped).
    pub fn hold(&self, now: Instant) -> Option<Instant> {
        self.room.as_ref()?;
        let mut q = self.lock();
        let stuck_at = q.progress + STALLED;
        if q.bytes < HIGH_WATER || now >= stuck_at {
            q.holding = false;
            return None;
        }
        q.holding = true;
        Some(stuck_at)
    }

    /// What the loop polls while it holds its readers (`hold`).
    pub fn room_fd(&self) -> Option<BorrowedFd<'_>> {
        self.room.as_ref().map(|(r, _)| r.as_fd())
    }

    /// Empty the room pipe once it was readable.
    pub fn take_room(&self) {
        if let Some((r, _)) = &self.room {
            let mut buf = [0u8; 64];
            while matches!(nix::unistd::read(r, &mut buf), Ok(n) if n > 0) {}
        }
    }

    /// Wait, at most until `until`, for the queue to have room (below
    /// `HIGH_WATER`) or for the writer to be stuck: the final drains, like
    /// the loop, hand the writer no more than it can take.
    pub fn wait_room(&self, until: Instant) {
        let mut q = self.lock();
        while q.thread && q.bytes >= HIGH_WATER {
            let now = Instant::now();
            let end = until.min(q.progress + STALLED);
            if now >= end {
                return;
            }
            q.room_waiters += 1;
            q = match self.idle.wait_timeout(q, end - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
            q.room_waiters -= 1;
        }
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped_lines
    }

    /// Count `lines` (of `bytes`) as dropped without submitting them.
    pub fn count_dropped(&self, lines: u64, bytes: u64) {
        let mut q = self.lock();
        q.dropped_lines += lines;
        q.dropped_bytes += bytes;
    }

    fn run(&self) {
        let mut files: HashMap<PathBuf, FileOut> = HashMap::new();
        // The buffer just written, handed back under the same lock that
        // takes the next one.
        let mut written: Option<Vec<u8>> = None;
        loop {
            let mut q = self.lock();
            if let Some(data) = written.take() {
                recycle(&mut q.pool, data);
                q.progress = Instant::now();
                if q.room_waiters > 0 && q.bytes < HIGH_WATER {
                    self.idle.notify_all();
                }
                if q.holding && q.bytes <= LOW_WATER {
                    q.holding = false;
                    if let Some((_, w)) = &self.room {
                        let _ = nix::unistd::write(w, b"r");
                    }
                }
            }
            let (dest, data) = loop {
                if let Some(item) = q.items.pop_front() {
                    break item;
                }
                q.busy = false;
                q.progress = Instant::now();
                self.idle.notify_all();
                if q.dropped_lines > 0 {
                    // Writing works again: say what was lost, once.
                    let msg = format!(
                        "output could not keep up: {} line(s), {} bytes dropped",
                        q.dropped_lines, q.dropped_bytes
                    );
                    q.dropped_lines = 0;
                    q.dropped_bytes = 0;
                    let mut note = Vec::new();
                    record::launcher_line(log::Level::Warn, None, &msg, &mut note);
                    q.items.push_back((Dest::Stderr, note));
                    continue;
                }
                q.sleeping = true;
                q = match self.more.wait(q) {
                    Ok(g) => g,
                    Err(e) => e.into_inner(),
                };
                q.sleeping = false;
                // Woken with work: a stall counts from now.
                q.progress = Instant::now();
            };
            q.busy = true;
            q.bytes = q.bytes.saturating_sub(data.len());
            drop(q);
            write_out(&dest, &data, &mut files);
            written = Some(data);
        }
    }
}

/// Queue `data` for `dest` unless the queue is full (then it is dropped,
/// counted, and its buffer kept for reuse); empty data is nothing to do.
fn enqueue(q: &mut Queue, dest: Dest, data: Vec<u8>) -> bool {
    if data.is_empty() {
        recycle(&mut q.pool, data);
        return true;
    }
    if q.bytes + data.len() > QUEUE_BYTES {
        q.dropped_lines += memchr::memchr_iter(b'\n', &data).count().max(1) as u64;
        q.dropped_bytes += data.len() as u64;
        recycle(&mut q.pool, data);
        return false;
    }
    q.bytes += data.len();
    q.items.push_back((dest, data));
    true
}

/// The writer thread, started; `false` when none can be.
fn spawn_thread() -> bool {
    std::thread::Builder::new()
        .name("output".into())
        .spawn(|| writer().run())
        .is_ok()
}

fn recycle(pool: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    if pool.len() < POOL && (1..=POOL_MAX_CAP).contains(&buf.capacity()) {
        buf.clear();
        pool.push(buf);
    }
}

fn write_out(dest: &Dest, data: &[u8], files: &mut HashMap<PathBuf, FileOut>) {
    let res = match dest {
        Dest::Stdout => write_chunked(1, data),
        Dest::Stderr => write_chunked(2, data),
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

/// `data` to `fd` (1, 2, a log file) in writes of at most `WRITE_CHUNK`, each ending
/// at a line's end when one lies in it: whole records per write, so that
/// a service writing to the same fd (`inherit`) falls between lines, never
/// inside one. Straight to the fd: std's stdout would buffer the piece
/// after each chunk's last newline and copy it again.
fn write_chunked(fd: std::os::fd::RawFd, data: &[u8]) -> io::Result<()> {
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

/// Where the reader is in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Fresh,
    /// Pieces of a long line went out already (`first`: none yet).
    Split { id: u64, first: bool },
    /// The rate limit dropped this line: its rest goes too.
    Dropping,
}

/// The per-service rate limit (`log.rate_limit`), shared by the readers of
/// all its processes and streams.
pub struct Limiter {
    name: String,
    limit: RateLimit,
    window_end: Option<Instant>,
    count: u64,
    dropped: u64,
}

pub type SharedLimiter = std::rc::Rc<std::cell::RefCell<Limiter>>;

impl Limiter {
    pub fn new(name: &str, limit: RateLimit) -> Limiter {
        Limiter {
            name: name.to_string(),
            limit,
            window_end: None,
            count: 0,
            dropped: 0,
        }
    }

    pub fn set_limit(&mut self, limit: RateLimit) {
        self.limit = limit;
    }

    /// May one more line through at `now`? A fixed window of `per`: its
    /// first `lines` lines pass.
    fn allow(&mut self, now: Instant) -> bool {
        if self.window_end.is_none_or(|end| now >= end) {
            self.report();
            self.window_end = Some(now + self.limit.per);
            self.count = 0;
        }
        if self.count < self.limit.lines {
            self.count += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// When a drop report is due (the window that dropped lines ends), so
    /// that a service that goes quiet after a flood still gets it.
    pub fn due(&self) -> Option<Instant> {
        self.window_end.filter(|_| self.dropped > 0)
    }

    /// Report the lines dropped in a window that is over.
    pub fn report_if_due(&mut self, now: Instant) {
        if self.due().is_some_and(|end| now >= end) {
            self.report();
        }
    }

    /// Report what was dropped now (the launcher is ending).
    pub fn report(&mut self) {
        if self.dropped == 0 {
            return;
        }
        let msg = format!(
            "{} lines dropped (rate limit {}/{})",
            self.dropped,
            self.limit.lines,
            humantime::format_duration(self.limit.per)
        );
        self.dropped = 0;
        let w = writer();
        let mut out = w.buffer();
        record::launcher_line(log::Level::Warn, Some(&self.name), &msg, &mut out);
        w.submit(Dest::Stderr, out);
    }
}

/// The read end of one child's stdout or stderr pipe.
pub struct Reader {
    fd: File,
    pending: Vec<u8>,
    dest: Dest,
    /// How each record is framed; `None` for files (lines as they are).
    head: Option<Head>,
    line: Line,
    limiter: Option<SharedLimiter>,
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

/// A reader into `dest`, framing each line with `head` (`None`: a file,
/// lines as they are).
pub fn reader(read_end: OwnedFd, dest: Dest, head: Option<Head>) -> Reader {
    Reader {
        fd: File::from(read_end),
        pending: Vec::new(),
        dest,
        head,
        line: Line::Fresh,
        limiter: None,
        tail: None,
    }
}

impl Reader {
    /// Keep the last lines read in `tail` too.
    pub fn with_tail(mut self, tail: SharedTail) -> Reader {
        self.tail = Some(tail);
        self
    }

    /// Count its lines against the service's rate limit.
    pub fn with_limiter(mut self, limiter: SharedLimiter) -> Reader {
        self.limiter = Some(limiter);
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

/// The wall clock, in seconds since the Unix epoch (0 before it).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Outcome of draining a reader.
pub enum Drained {
    /// What was there is read (a read came back short): more may come.
    Open,
    /// Nothing was there (the pipe was empty).
    Empty,
    /// The budget of one wake-up was read: more is waiting now.
    More,
    /// The writers are gone (EOF): drop the reader.
    Closed,
}

/// Read what is available and queue every complete line, framed, in
/// one round of its own. At EOF a last partial line is queued as if a
/// newline ended it.
pub fn drain(r: &mut Reader, budget: usize) -> Drained {
    let w = writer();
    let mut round = w.round();
    let state = drain_into(r, budget, &mut round);
    w.submit_round(round);
    state
}

/// `drain` into `round`: the loop drains every ready reader into one.
pub fn drain_into(r: &mut Reader, budget: usize, round: &mut Round) -> Drained {
    let mut state = Drained::Empty;
    let mut taken = 0usize;
    while taken < budget {
        // One read takes what the pipe holds (up to `READ_MAX`): a short
        // one means it is empty for now, without a second read to hear
        // EAGAIN (poll says when more comes).
        let want = (budget - taken).min(READ_MAX);
        match read_into(&r.fd, &mut r.pending, want) {
            Ok(0) => {
                state = Drained::Closed;
                break;
            }
            Ok(n) => {
                taken += n;
                state = Drained::Open;
                if n < want {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => {
                state = Drained::Closed;
                break;
            }
        }
    }
    let closed = matches!(state, Drained::Closed);
    if !closed && taken >= budget {
        state = Drained::More;
    }
    if r.head.is_some() {
        drain_framed(r, closed, round);
    } else {
        drain_raw(r, closed, round);
    }
    state
}

/// One read(2) of at most `max` bytes appended to `buf`, straight into its
/// spare room (no bounce buffer: every byte relayed is copied once less).
fn read_into(fd: &File, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    // SAFETY: read(2) writes at most `want` bytes into the spare capacity
    // (valid, uninitialised memory of `buf`'s allocation); the `got`
    // bytes it reports are initialised when `set_len` counts them.
    let got = unsafe { nix::libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got.unsigned_abs().min(want);
    // SAFETY: see above; `got <= want <= spare.len()`.
    unsafe { buf.set_len(buf.len() + got) };
    Ok(got)
}

/// A file stream: whole lines as they are (a line longer than
/// `FILE_MAX_LINE` cut there, a newline added).
fn drain_raw(r: &mut Reader, closed: bool, round: &mut Round) {
    let cut = if closed {
        if r.pending.last().is_some_and(|&b| b != b'\n') {
            r.pending.push(b'\n');
        }
        r.pending.len()
    } else {
        match memchr::memrchr(b'\n', &r.pending) {
            Some(i) => i + 1,
            None if r.pending.len() >= FILE_MAX_LINE => {
                r.pending.push(b'\n');
                r.pending.len()
            }
            None => 0,
        }
    };
    if cut > 0 {
        let lines = r.pending.get(..cut).unwrap_or_default();
        if let Some(t) = &r.tail {
            t.borrow_mut().push(lines);
        }
        round.out(&r.dest).extend_from_slice(lines);
        r.pending.drain(..cut);
    }
}

/// What framing a batch needs, read once per batch.
struct Batch {
    json: bool,
    max: usize,
    ts: [u8; 24],
    /// `Head::json_start` for this batch's time stamp.
    start: Vec<u8>,
    now: Instant,
}

/// A `prefix` stream: each line one record (or several, when longer than
/// `log.max_line`), through the rate limit.
fn drain_framed(r: &mut Reader, closed: bool, round: &mut Round) {
    let data = std::mem::take(&mut r.pending);
    let json = record::json();
    let ts = if json { record::timestamp() } else { [0u8; 24] };
    let b = Batch {
        json,
        max: record::max_line(),
        ts,
        start: match (&r.head, json) {
            (Some(h), true) => h.json_start(&ts),
            _ => Vec::new(),
        },
        now: Instant::now(),
    };
    // Nobody reads our output and the queue is full: whole lines are
    // counted, not formatted only to be thrown away.
    if r.line == Line::Fresh && round.full {
        if let Some(end) = memchr::memrchr(b'\n', &data) {
            let lines = memchr::memchr_iter(b'\n', data.get(..=end).unwrap_or_default()).count();
            writer().count_dropped(lines as u64, end as u64 + 1);
            if let Some(t) = &r.tail {
                t.borrow_mut().push(data.get(..=end).unwrap_or_default());
            }
            r.pending = data;
            r.pending.drain(..=end);
            return;
        }
    }
    let out = round.out(&r.dest);
    // What the records will likely take (short lines, each with its head),
    // so that the buffer seldom grows while being filled.
    let per_line = if json { b.start.len() + 8 } else { 16 };
    out.reserve(data.len() + data.len() / 32 * per_line + 64);
    let mut pos = 0usize;
    // The usual case, kept tight: whole lines that fit, no rate limit.
    if r.line == Line::Fresh && r.limiter.is_none() {
        if let Some(head) = &r.head {
            let whole = head.budget(json, b.max, false, true);
            if json {
                pos = frame::json_lines(&b.start, whole, b.max, &data, out);
            } else {
                pos = frame::text_lines(&head.prefix, whole, &data, out);
            }
        }
    }
    while let Some(i) = memchr::memchr(b'\n', data.get(pos..).unwrap_or_default()) {
        let line = data.get(pos..pos + i).unwrap_or_default();
        emit(r, &b, line, true, out);
        pos += i + 1;
    }
    let rest = data.get(pos..).unwrap_or_default();
    if closed {
        // The end of the data ends the line; a split line gets its last
        // piece even when nothing is left for it (an empty one).
        if !rest.is_empty() || r.line != Line::Fresh {
            emit(r, &b, rest, true, out);
        }
        pos = data.len();
    } else {
        pos += emit(r, &b, rest, false, out);
    }
    if let Some(t) = &r.tail {
        t.borrow_mut().push(data.get(..pos).unwrap_or_default());
    }
    r.pending = data;
    r.pending.drain(..pos);
}

/// Frame `data`, the rest of a line (`ends`) or its start so far; how many
/// of its bytes are done with (the others wait for more).
fn emit(r: &mut Reader, b: &Batch, data: &[u8], ends: bool, out: &mut Vec<u8>) -> usize {
    let Some(head) = &r.head else {
        return 0;
    };
    if r.line == Line::Fresh {
        let whole = head.budget(b.json, b.max, false, true);
        let fits = if b.json {
            // Most lines fit: escape once, undo in the rare case not.
            None
        } else {
            Some(data.len() <= whole)
        };
        match (fits, ends) {
            (Some(false), _) => {}
            (Some(true), false) => return 0,
            (Some(true), true) => {
                if allowed(&r.limiter, b.now) {
                    head.write(false, &b.ts, data, None, true, out);
                }
                return data.len();
            }
            (None, false) => {
                // Escaped, it may fit or not; it waits either way unless
                // it is already too long for any record (escaping never
                // shrinks: one byte is one byte or more).
                if data.len() <= whole && record::cut(true, data, whole, false) == data.len() {
                    return 0;
                }
            }
            (None, true) => {
                if data.len() <= whole && allowed(&r.limiter, b.now) {
                    // Write it, then check: most lines fit, and a line
                    // that does not is rare enough to be undone.
                    let mark = out.len();
                    Head::write_json_line(&b.start, data, out);
                    if out.len() - mark <= b.max {
                        return data.len();
                    }
                    out.truncate(mark);
                    r.line = Line::Split {
                        id: record::next_partial_id(),
                        first: true,
                    };
                } else if data.len() <= whole {
                    return data.len(); // dropped by the rate limit
                }
            }
        }
        // Too long for one record: split; its first record counted here,
        // each other one below.
        r.line = if r.line != Line::Fresh {
            r.line // counted already, above
        } else if allowed(&r.limiter, b.now) {
            Line::Split {
                id: record::next_partial_id(),
                first: true,
            }
        } else {
            Line::Dropping
        };
    }
    let (id, mut first) = match r.line {
        Line::Split { id, first } => (id, first),
        _ => {
            if ends {
                r.line = Line::Fresh;
            }
            return data.len();
        }
    };
    let mut pos = 0usize;
    loop {
        let rest = data.get(pos..).unwrap_or_default();
        let budget = head.budget(b.json, b.max, true, first);
        let n = record::cut(b.json, rest, budget, ends);
        let fits = n >= rest.len();
        if fits && !ends {
            // What is left may be the last piece: wait for the newline.
            r.line = Line::Split { id, first };
            return pos;
        }
        if n == 0 && !ends {
            r.line = Line::Split { id, first };
            return pos;
        }
        // Every record counts against the rate limit, not only a line's
        // first (an endless line is many records): past the limit, the
        // rest of the line is dropped.
        if !first && !allowed(&r.limiter, b.now) {
            r.line = if ends { Line::Fresh } else { Line::Dropping };
            return data.len();
        }
        let piece = rest.get(..n).unwrap_or_default();
        head.write(b.json, &b.ts, piece, Some((id, fits)), first, out);
        pos += n;
        first = false;
        if fits {
            r.line = Line::Fresh;
            return data.len();
        }
    }
}

fn allowed(limiter: &Option<SharedLimiter>, now: Instant) -> bool {
    limiter.as_ref().is_none_or(|l| l.borrow_mut().allow(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log file at `path`, rotated past `max_bytes` (0: never) into
    /// `backup_count` older ones.
    fn stream(path: &std::path::Path, max_bytes: u64, backup_count: u32) -> FileStream {
        FileStream {
            path: path.to_path_buf(),
            max_bytes,
            backup_count,
            time_format: None,
            watched: false,
        }
    }

    /// A plain file destination, never rotated.
    fn file_dest(path: &std::path::Path) -> Dest {
        Dest::File(Arc::new(stream(path, 0, 0)))
    }

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
        let mut f = FileOut::new(stream(&path, 100, 2));
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

    /// One batch across several rotations: each file holds whole lines
    /// and at most `max_bytes`, unless one line alone is longer; read
    /// back oldest first, the files give the batch back.
    #[test]
    fn a_batch_is_cut_between_lines_at_each_rotation() {
        let d = tmpdir("rot-batch");
        let path = d.join("svc.log");
        let mut f = FileOut::new(stream(&path, 50, 20));
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
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_long_line_cut_off_by_eof_is_split_and_ends() {
        let d = tmpdir("split-eof");
        let path = d.join("o.log");
        let dest = file_dest(&path);
        // Text records: the format is the process's, and other tests
        // write no framed records.
        record::configure(crate::config::model::LogFormat::Text, 1024);
        let (r, w) = pipe().expect("pipe");
        let mut rd = reader(r, dest, Some(Head::service("t", "stdout", '|')));
        let mut wf = File::from(w);
        let line = "é".repeat(1500);
        wf.write_all(line.as_bytes()).expect("write");
        assert!(matches!(drain(&mut rd, MAX_DRAIN), Drained::Open));
        drop(wf);
        while !matches!(drain(&mut rd, MAX_DRAIN), Drained::Closed) {}
        assert!(writer().flush(Duration::from_secs(10)));
        record::configure(
            crate::config::model::LogFormat::Text,
            crate::config::model::DEFAULT_MAX_LINE,
        );
        let text = std::fs::read_to_string(&path).expect("read");
        let mut joined = String::new();
        for (i, rec) in text.split_inclusive('\n').enumerate() {
            assert!(rec.len() <= 1024, "{}", rec.len());
            let body = match i {
                0 => rec.strip_prefix("t | "),
                _ => rec.strip_prefix("t+ | "),
            };
            joined.push_str(body.expect("framed").trim_end_matches('\n'));
        }
        assert_eq!(joined, line);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn drain_queues_whole_lines_and_flushes_partial_at_eof() {
        let d = tmpdir("drain");
        let path = d.join("o.log");
        let dest = file_dest(&path);
        let (r, w) = pipe().expect("pipe");
        let mut rd = reader(r, dest, None);
        let mut wf = File::from(w);
        wf.write_all(b"one\ntw").expect("write");
        assert!(matches!(drain(&mut rd, MAX_DRAIN), Drained::Open));
        assert!(writer().flush(Duration::from_secs(10)));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\n");
        wf.write_all(b"o\nthree").expect("write");
        drop(wf);
        // A read that came back short, then EOF.
        assert!(matches!(drain(&mut rd, MAX_DRAIN), Drained::Open));
        assert!(matches!(drain(&mut rd, MAX_DRAIN), Drained::Closed));
        assert!(writer().flush(Duration::from_secs(10)));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "one\ntwo\nthree\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
