//! The relay: each child's `prefix` or `file` pipe drained, as the loop
//! finds it ready, into whole lines (framed as records for `prefix`,
//! through the rate limit), one round of output for the writer per
//! wake-up. Part of `output`.

use super::ratelimit::SharedLimiter;
use super::ring::{logs, Stream};
use super::tail::SharedTail;
use super::writer::{writer, Dest, Round};
use crate::config::model::LogFormat;
use crate::proc::frame;
use crate::proc::record::{self, Framing, Head};
use nix::fcntl::OFlag;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

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
    /// Whose ring (`ctl logs`) keeps its lines, and as which stream.
    ring: Option<(String, Stream)>,
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
        ring: None,
    }
}

impl Reader {
    /// Keep its lines in `name`'s ring too (`ctl logs`).
    pub fn with_ring(mut self, name: &str, stream: Stream) -> Reader {
        self.ring = Some((name.to_string(), stream));
        self
    }

    /// What it read and is done with, `data[..end]` (whole lines, or the
    /// pieces of a long one): to the tail and the ring, if it keeps them.
    /// What follows `end` comes back, for the next read (the ring may keep
    /// `data` itself and give back another buffer).
    fn keep(&self, mut data: Vec<u8>, end: usize) -> Vec<u8> {
        let end = end.min(data.len());
        if let Some(t) = &self.tail {
            t.borrow_mut().push(data.get(..end).unwrap_or_default());
        }
        if let Some((name, stream)) = &self.ring {
            return logs().push_taking(name, *stream, data, end);
        }
        data.drain(..end);
        data
    }

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
pub fn drain(r: &mut Reader, budget: usize, framing: Framing) -> Drained {
    let w = writer();
    let mut round = w.round();
    let state = drain_into(r, budget, &mut round, framing);
    w.submit_round(round);
    state
}

/// `drain` into `round`: the loop drains every ready reader into one.
/// `framing`: how `prefix` lines are framed (the config the loop runs on).
pub fn drain_into(r: &mut Reader, budget: usize, round: &mut Round, framing: Framing) -> Drained {
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
        drain_framed(r, closed, round, framing);
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
        round.out(&r.dest).extend_from_slice(lines);
        let data = std::mem::take(&mut r.pending);
        r.pending = r.keep(data, cut);
    }
}

/// What framing a batch needs, read once per batch.
struct Batch {
    framing: Framing,
    ts: [u8; 24],
    /// `Head::json_start` for this batch's time stamp.
    start: Vec<u8>,
    now: Instant,
}

/// A `prefix` stream: each line one record (or several, when longer than
/// `log.max_line`), through the rate limit.
fn drain_framed(r: &mut Reader, closed: bool, round: &mut Round, framing: Framing) {
    let data = std::mem::take(&mut r.pending);
    let format = framing.format;
    let ts = record::batch_timestamp(format);
    let b = Batch {
        framing,
        ts,
        start: match (&r.head, format) {
            (Some(h), LogFormat::Json) => h.json_start(&ts),
            (Some(_), LogFormat::Text) | (None, _) => Vec::new(),
        },
        now: Instant::now(),
    };
    // Nobody reads our output and the queue is full: whole lines are
    // counted, not formatted only to be thrown away.
    if r.line == Line::Fresh && round.full {
        if let Some(end) = memchr::memrchr(b'\n', &data) {
            let lines = memchr::memchr_iter(b'\n', data.get(..=end).unwrap_or_default()).count();
            writer().count_dropped(lines as u64, end as u64 + 1);
            r.pending = r.keep(data, end + 1);
            return;
        }
    }
    let out = round.out(&r.dest);
    // What the records will likely take (short lines, each with its head),
    // so that the buffer seldom grows while being filled.
    let per_line = match format {
        LogFormat::Text => 16,
        LogFormat::Json => b.start.len() + 8,
    };
    out.reserve(data.len() + data.len() / 32 * per_line + 64);
    let mut pos = 0usize;
    // The usual case, kept tight: whole lines that fit, no rate limit.
    if r.line == Line::Fresh && r.limiter.is_none() {
        if let Some(head) = &r.head {
            let whole = head.budget(framing, false, true);
            pos = match format {
                LogFormat::Text => frame::text_lines(&head.prefix, whole, &data, out),
                LogFormat::Json => frame::json_lines(&b.start, whole, framing.max_line, &data, out),
            };
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
    r.pending = r.keep(data, pos);
}

/// Frame `data`, the rest of a line (`ends`) or its start so far; how many
/// of its bytes are done with (the others wait for more).
fn emit(r: &mut Reader, b: &Batch, data: &[u8], ends: bool, out: &mut Vec<u8>) -> usize {
    let Some(head) = &r.head else {
        return 0;
    };
    if r.line == Line::Fresh {
        let whole = head.budget(b.framing, false, true);
        let fits = match b.framing.format {
            LogFormat::Text => Some(data.len() <= whole),
            // Most lines fit: escape once, undo in the rare case not.
            LogFormat::Json => None,
        };
        match (fits, ends) {
            (Some(false), _) => {}
            (Some(true), false) => return 0,
            (Some(true), true) => {
                if allowed(&r.limiter, b) {
                    head.write(b.framing.format, &b.ts, data, None, true, out);
                }
                return data.len();
            }
            (None, false) => {
                // Escaped, it may fit or not; it waits either way unless
                // it is already too long for any record (escaping never
                // shrinks: one byte is one byte or more).
                if data.len() <= whole
                    && record::cut(LogFormat::Json, data, whole, false) == data.len()
                {
                    return 0;
                }
            }
            (None, true) => {
                if data.len() <= whole && allowed(&r.limiter, b) {
                    // Write it, then check: most lines fit, and a line
                    // that does not is rare enough to be undone.
                    let mark = out.len();
                    frame::write_json_line(&b.start, data, out);
                    if out.len() - mark <= b.framing.max_line {
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
        } else if allowed(&r.limiter, b) {
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
        let budget = head.budget(b.framing, true, first);
        let n = record::cut(b.framing.format, rest, budget, ends);
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
        if !first && !allowed(&r.limiter, b) {
            r.line = if ends { Line::Fresh } else { Line::Dropping };
            return data.len();
        }
        let piece = rest.get(..n).unwrap_or_default();
        head.write(b.framing.format, &b.ts, piece, Some((id, fits)), first, out);
        pos += n;
        first = false;
        if fits {
            r.line = Line::Fresh;
            return data.len();
        }
    }
}

fn allowed(limiter: &Option<SharedLimiter>, b: &Batch) -> bool {
    limiter
        .as_ref()
        .is_none_or(|l| l.borrow_mut().allow(b.now, b.framing))
}

#[cfg(test)]
mod tests {
    use super::super::file::test_stream as stream;
    use super::*;
    use crate::fsutil::scratch::Tmp;
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;

    /// A reader of a new pipe that relays, framed by `head`, to `o.log`
    /// (never rotated) in a scratch dir: the dir, that file, the reader
    /// and the pipe's write end.
    fn piped_to_file(tag: &str, head: Option<Head>) -> (Tmp, std::path::PathBuf, Reader, File) {
        let tmp = Tmp::new(tag);
        let path = tmp.join("o.log");
        let dest = Dest::File(Arc::new(stream(&path, 0, 0)));
        let (r, w) = pipe().expect("pipe");
        (tmp, path, reader(r, dest, head), File::from(w))
    }

    #[test]
    fn a_long_line_cut_off_by_eof_is_split_and_ends() {
        let head = Head::service("t", "stdout", '|');
        let (_tmp, path, mut rd, mut wf) = piped_to_file("out-split-eof", Some(head));
        let framing = Framing {
            format: LogFormat::Text,
            max_line: 1024,
        };
        let line = "é".repeat(1500);
        wf.write_all(line.as_bytes()).expect("write");
        assert!(matches!(drain(&mut rd, MAX_DRAIN, framing), Drained::Open));
        drop(wf);
        while !matches!(drain(&mut rd, MAX_DRAIN, framing), Drained::Closed) {}
        assert!(writer().flush(Duration::from_secs(10)));
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
    }

    #[test]
    fn drain_queues_whole_lines_and_flushes_partial_at_eof() {
        let (_tmp, path, mut rd, mut wf) = piped_to_file("out-drain", None);
        let framing = Framing::DEFAULT;
        wf.write_all(b"one\ntw").expect("write");
        assert!(matches!(drain(&mut rd, MAX_DRAIN, framing), Drained::Open));
        assert!(writer().flush(Duration::from_secs(10)));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\n");
        wf.write_all(b"o\nthree").expect("write");
        drop(wf);
        // A read that came back short, then EOF.
        assert!(matches!(drain(&mut rd, MAX_DRAIN, framing), Drained::Open));
        assert!(matches!(
            drain(&mut rd, MAX_DRAIN, framing),
            Drained::Closed
        ));
        assert!(writer().flush(Duration::from_secs(10)));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "one\ntwo\nthree\n"
        );
    }
}
