//! The one writer of the process: a bounded queue that the loop (and the
//! launcher's own log) fill without ever blocking, and a thread that
//! empties it into stdout, stderr and log files, in order, so that lines
//! never interleave or tear. Flow control holds the loop's readers while
//! a writer that makes progress catches up; a writer that is stuck (nobody
//! reads the container's output) has what does not fit dropped and
//! counted. Part of `output`.

use super::file::{write_chunked, FileOut};
use crate::config::model::FileStream;
use crate::proc::record::{self, Framing};
use nix::fcntl::OFlag;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

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
    /// How the launcher's own lines are framed (its log, the writer's
    /// notes): text until the config is read, then its `log:`.
    launcher: Framing,
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
    pub(super) full: bool,
}

impl Round {
    /// The buffer of `dest` in this round.
    pub(super) fn out(&mut self, dest: &Dest) -> &mut Vec<u8> {
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
            launcher: Framing::DEFAULT,
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

    /// How the launcher's own lines are framed from now on (the app sets
    /// it once the config is read, and at each reload).
    pub fn set_launcher_framing(&self, framing: Framing) {
        self.lock().launcher = framing;
    }

    /// How the launcher's own lines are framed now.
    pub fn launcher_framing(&self) -> Framing {
        self.lock().launcher
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
                    record::launcher_line(q.launcher, log::Level::Warn, None, &msg, &mut note);
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
