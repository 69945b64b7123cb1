//! `ctl logs` (README "Reading a service's output"): the last lines of
//! each service's captured output (`prefix` and `file` streams) and of the
//! launcher's own, each source in a ring bounded in bytes (`log.buffer`),
//! and followers that read on at their own pace. A follower is a cursor
//! into the rings, not a queue: a line is stored once however many follow,
//! and one that reads slowly is not waited for — the lines that left the
//! ring before it read them come back as one `… N lines skipped` line.
//! Lines are kept as the service wrote them (no framing, no time stamp):
//! the rings hold what the log holds, nothing more. Part of `output`.

use crate::config::model::{self, DEFAULT_LOG_BUFFER};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// What a chunk costs besides its bytes (counted against the bound, so
/// that many one-line chunks do not grow memory past it).
const CHUNK_COST: usize = 64;
/// Lines pushed one after the other join the same chunk up to this size:
/// fewer chunks, and a chunk is never grown large (nor copied when its
/// first lines go: those are only skipped, `Chunk::start`).
const CHUNK_JOIN: usize = 16 * 1024;
/// Lines of a read kept this large (and filling half its buffer) stay in
/// the reader's buffer itself (`Logs::push_taking`), not copied.
const TAKE_MIN: usize = CHUNK_JOIN;

/// Which output of its source a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// A line of the launcher's own, as its text log writes it.
    Launcher,
}

/// Lines pushed together (one drain of one pipe): whole lines, each
/// ending with a newline.
struct Chunk {
    /// Across every ring: the order in which chunks came.
    order: u64,
    /// The number of its first line in its ring, and how many it holds:
    /// only counted while someone reads the rings (`Logs::settle`).
    first: u64,
    lines: u64,
    counted: bool,
    stream: Stream,
    /// Its lines from `start` on (before: lines trimmed away).
    data: Vec<u8>,
    start: usize,
}

impl Chunk {
    /// The bytes of the lines it holds.
    fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// Where line `seq` (of this chunk) starts in `data`.
    fn offset(&self, seq: u64) -> usize {
        let skip = seq.saturating_sub(self.first);
        if skip == 0 {
            return self.start;
        }
        let held = self.data.get(self.start..).unwrap_or_default();
        memchr::memchr_iter(b'\n', held)
            .nth(usize::try_from(skip - 1).unwrap_or(usize::MAX))
            .map_or(self.data.len(), |i| self.start + i + 1)
    }
}

#[derive(Default)]
struct Ring {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    /// The number the next line will take.
    next: u64,
}

impl Ring {
    /// The number of the oldest line kept.
    fn first(&self) -> u64 {
        self.chunks.front().map_or(self.next, |c| c.first)
    }

    /// The chunk that holds line `seq`.
    fn chunk_of(&self, seq: u64) -> Option<&Chunk> {
        let i = self.chunks.partition_point(|c| c.first + c.lines <= seq);
        self.chunks.get(i).filter(|c| c.first <= seq)
    }

    /// Drop the oldest lines until the ring holds at most `cap` bytes;
    /// the largest buffer of the chunks dropped goes to `spare`.
    fn trim(&mut self, cap: usize, spare: &mut Option<Vec<u8>>) {
        while self.bytes > cap {
            let excess = self.bytes - cap;
            let alone = self.chunks.len() == 1;
            let Some(front) = self.chunks.front_mut() else {
                self.bytes = 0;
                return;
            };
            let cost = front.len() + CHUNK_COST;
            if cost <= excess || alone && front.len() <= excess {
                self.bytes -= cost.min(self.bytes);
                if let Some(c) = self.chunks.pop_front() {
                    keep_larger(spare, c.data);
                }
                continue;
            }
            // Part of it: its first lines, up to a line's end past `excess`
            // (skipped, not moved).
            let held = front.data.get(front.start..).unwrap_or_default();
            let want = excess.min(held.len());
            let cut = held
                .get(want.saturating_sub(1)..)
                .and_then(|t| memchr::memchr(b'\n', t))
                .map_or(held.len(), |i| want.saturating_sub(1) + i + 1);
            if front.counted {
                let gone = held
                    .get(..cut)
                    .map_or(0, |d| memchr::memchr_iter(b'\n', d).count())
                    as u64;
                front.first += gone;
                front.lines -= gone.min(front.lines);
            }
            front.start += cut;
            self.bytes -= cut.min(self.bytes);
            if front.start >= front.data.len() {
                self.bytes -= CHUNK_COST.min(self.bytes);
                if let Some(c) = self.chunks.pop_front() {
                    keep_larger(spare, c.data);
                }
            }
        }
    }
}

/// Keep in `spare` the larger of its buffer and `buf`.
fn keep_larger(spare: &mut Option<Vec<u8>>, buf: Vec<u8>) {
    if spare.as_ref().is_none_or(|s| s.capacity() < buf.capacity()) {
        *spare = Some(buf);
    }
}

/// Lines given to a ring: copied from the caller's buffer, or the buffer
/// itself (`push_taking`), its lines from the offset on.
enum Lines<'a> {
    Copied(&'a [u8]),
    Taken(Vec<u8>, usize),
}

/// A ring's source: a service by name, or the launcher (`None`: any
/// string may name a service).
type Source = Option<String>;

/// Every ring of the process.
pub struct Logs {
    /// Bytes kept per source (`log.buffer`); 0: none kept.
    cap: usize,
    rings: BTreeMap<Source, Ring>,
    /// The order the next chunk takes.
    order: u64,
    /// Bumped at each push: a follower that saw it has nothing new.
    version: u64,
    /// Followers alive: while there are none, nobody holds a line number,
    /// and lines pushed are not counted (counting every byte relayed was
    /// most of what the rings cost the relay); `settle` counts them when
    /// one is made.
    followers: Arc<AtomicUsize>,
}

static LOGS: OnceLock<Mutex<Logs>> = OnceLock::new();

/// The rings of the process: the relay (the loop) and the launcher's
/// logger (any thread) push into them, the control socket reads them.
pub fn logs() -> MutexGuard<'static, Logs> {
    LOGS.get_or_init(|| Mutex::new(Logs::new(DEFAULT_LOG_BUFFER)))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl Logs {
    pub fn new(cap: usize) -> Logs {
        Logs {
            cap,
            rings: BTreeMap::new(),
            order: 0,
            version: 0,
            followers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Keep at most `cap` bytes per source from now on (`log.buffer`, at
    /// the start and at each reload); 0 drops every ring.
    pub fn set_capacity(&mut self, cap: usize) {
        self.cap = cap;
        if cap == 0 {
            self.rings.clear();
        }
        for r in self.rings.values_mut() {
            r.trim(cap, &mut None);
        }
    }

    /// Are lines kept at all (`log.buffer` is not 0)?
    pub fn enabled(&self) -> bool {
        self.cap > 0
    }

    /// Keep a line of the launcher's own (as its text log writes it).
    pub fn push_launcher(&mut self, line: &[u8]) {
        self.push_to(None, Stream::Launcher, line);
    }

    /// Keep `data` (lines read from service `name`'s `stream`; a last line
    /// without its newline is taken as ended there).
    pub fn push(&mut self, name: &str, stream: Stream, data: &[u8]) {
        self.push_to(Some(name), stream, data);
    }

    /// Keep the lines `data[..end]` (read from service `name`'s
    /// `stream`, as `push`), taking `data` itself when what the ring keeps
    /// of them is large and fills at least half of the buffer (so that the
    /// memory held stays within twice the bytes kept, as with copied
    /// chunks): the ring keeps the reader's buffer as a chunk, no copy,
    /// and the reader reads on into the buffer of a chunk that left the
    /// ring. What follows `end` (a line not ended yet) comes back at the
    /// start of the buffer returned, for the next read.
    pub fn push_taking(
        &mut self,
        name: &str,
        stream: Stream,
        mut data: Vec<u8>,
        end: usize,
    ) -> Vec<u8> {
        let end = end.min(data.len());
        let start = self.kept_from(data.get(..end).unwrap_or_default());
        let kept = end.saturating_sub(start);
        if self.cap == 0 || kept < TAKE_MIN || kept * 2 < data.capacity() {
            self.push(name, stream, data.get(..end).unwrap_or_default());
            data.drain(..end);
            return data;
        }
        // Room for the new chunk first: a buffer that leaves the ring is
        // the one read into next (reads keep reusing the same buffers).
        let mut spare = None;
        if let Some(ring) = self.rings.get_mut(&Some(name.to_string())) {
            let incoming = end - start + 1 + CHUNK_COST;
            ring.trim(self.cap.saturating_sub(incoming), &mut spare);
        }
        let mut next = spare.unwrap_or_default();
        next.clear();
        next.extend_from_slice(data.get(end..).unwrap_or_default());
        data.truncate(end);
        self.add(Some(name), stream, Lines::Taken(data, start));
        next
    }

    fn push_to(&mut self, name: Option<&str>, stream: Stream, data: &[u8]) {
        if self.cap == 0 || data.is_empty() {
            return;
        }
        let data = data.get(self.kept_from(data)..).unwrap_or_default();
        if !data.is_empty() {
            self.add(name, stream, Lines::Copied(data));
        }
    }

    /// Where the part of `data` the ring can hold starts: its last lines
    /// (or the end of one line too long for it).
    fn kept_from(&self, data: &[u8]) -> usize {
        let room = self.cap.saturating_sub(CHUNK_COST + 1);
        if data.len() <= room {
            return 0;
        }
        let from = data.len() - room;
        data.get(from..)
            .and_then(|t| memchr::memchr(b'\n', t))
            .map_or(from, |i| from + i + 1)
    }

    /// Add `lines` (not empty) to `name`'s ring, then trim it to the bound.
    fn add(&mut self, name: Option<&str>, stream: Stream, lines: Lines<'_>) {
        let held = match &lines {
            Lines::Copied(d) => *d,
            Lines::Taken(d, start) => d.get(*start..).unwrap_or_default(),
        };
        let ends = held.last() == Some(&b'\n');
        let counted = self.followers.load(Ordering::Relaxed) > 0;
        let count = if counted {
            memchr::memchr_iter(b'\n', held).count() as u64 + u64::from(!ends)
        } else {
            0
        };
        let len = held.len();
        let bytes = len + usize::from(!ends);
        let ring = self.rings.entry(name.map(str::to_string)).or_default();
        let latest = self.order.checked_sub(1);
        let joins = |c: &Chunk| {
            Some(c.order) == latest && c.stream == stream && c.data.len() + len <= CHUNK_JOIN
        };
        match (lines, ring.chunks.back_mut()) {
            // Nothing came anywhere since this ring's last chunk: one more
            // piece of it.
            (Lines::Copied(d), Some(c)) if joins(c) => {
                c.data.extend_from_slice(d);
                if !ends {
                    c.data.push(b'\n');
                }
                c.lines += count;
                // Not counted: nobody follows, `settle` counts it all.
                c.counted &= counted;
            }
            (lines, _) => {
                let (mut data, start) = match lines {
                    Lines::Copied(d) => (d.to_vec(), 0),
                    Lines::Taken(d, start) => (d, start),
                };
                if !ends {
                    data.push(b'\n');
                }
                ring.chunks.push_back(Chunk {
                    order: self.order,
                    first: ring.next,
                    lines: count,
                    counted,
                    stream,
                    data,
                    start,
                });
                ring.bytes += CHUNK_COST;
                self.order += 1;
            }
        }
        ring.next += count;
        ring.bytes += bytes;
        ring.trim(self.cap, &mut None);
        self.version += 1;
    }

    /// A reader of service `name`'s lines (every service's and the
    /// launcher's with `None`), placed before the last `n` of them; with
    /// `follow`, it reads on as lines come, else up to what is there now.
    pub fn follower(&mut self, name: Option<&str>, n: usize, follow: bool) -> Follower {
        self.settle();
        self.followers.fetch_add(1, Ordering::Relaxed);
        let alive = Alive(Arc::clone(&self.followers));
        let mut cursors = HashMap::new();
        let n = n as u64;
        match name {
            Some(name) => {
                let key = Some(name.to_string());
                if let Some(r) = self.rings.get(&key) {
                    cursors.insert(key, r.next.saturating_sub(n).max(r.first()));
                }
            }
            None => {
                // The newest `n` lines across the rings, by the order
                // their chunks came in.
                let mut chunks: Vec<(u64, &Source, u64, u64)> = self
                    .rings
                    .iter()
                    .flat_map(|(name, r)| {
                        cursors.insert(name.clone(), r.next);
                        r.chunks
                            .iter()
                            .map(move |c| (c.order, name, c.first, c.lines))
                    })
                    .collect();
                chunks.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
                let mut left = n;
                for (_, name, first, lines) in chunks {
                    if left == 0 {
                        break;
                    }
                    let take = left.min(lines);
                    cursors.insert(name.clone(), first + lines - take);
                    left -= take;
                }
            }
        }
        let until = (!follow).then(|| {
            self.scope(name)
                .map(|(source, r)| (source.clone(), r.next))
                .collect()
        });
        Follower {
            name: name.map(str::to_string),
            until,
            cursors,
            seen: None,
            _alive: alive,
        }
    }

    /// Count the lines pushed while nobody followed, and number every
    /// ring's lines on from its oldest (no follower holds a number then).
    fn settle(&mut self) {
        if self.followers.load(Ordering::Relaxed) > 0 {
            return;
        }
        for r in self.rings.values_mut() {
            let mut n = r.first();
            for c in r.chunks.iter_mut() {
                if !c.counted {
                    let held = c.data.get(c.start..).unwrap_or_default();
                    c.lines = memchr::memchr_iter(b'\n', held).count() as u64;
                    c.counted = true;
                }
                c.first = n;
                n += c.lines;
            }
            r.next = n;
        }
    }

    /// Lines `f` has not read yet, `… N lines skipped` first when some
    /// left the rings before it read them, into `out` until it holds
    /// `max` bytes or more (a line is never cut). With a name, the lines as
    /// they are; else each after its source's prefix (`web | `, `web ! `;
    /// the launcher's lines as they are).
    /// `true`: a follower that does not follow has read all it will.
    pub fn read(&self, f: &mut Follower, out: &mut Vec<u8>, max: usize) -> bool {
        f.seen = Some(self.version);
        let mut skipped = 0u64;
        let mut wrote_marker = false;
        while out.len() < max {
            // The next chunk `f` has lines of, the oldest across rings.
            let mut next: Option<(&Source, &Chunk)> = None;
            for (name, r) in self.scope(f.name.as_deref()) {
                let cur = f.cursors.get(name).copied().unwrap_or_else(|| r.first());
                let cur = if cur < r.first() {
                    skipped += r.first() - cur;
                    f.cursors.insert(name.clone(), r.first());
                    r.first()
                } else {
                    cur
                };
                if cur >= f.end(name) {
                    continue;
                }
                if let Some(c) = r.chunk_of(cur) {
                    if next.is_none_or(|(_, n)| c.order < n.order) {
                        next = Some((name, c));
                    }
                }
            }
            if skipped > 0 && !wrote_marker {
                out.extend_from_slice(format!("… {skipped} lines skipped\n").as_bytes());
                wrote_marker = true;
            }
            let Some((name, c)) = next else { break };
            let cur = f.cursors.get(name).copied().unwrap_or(c.first).max(c.first);
            let label = name.as_deref().unwrap_or("mc-launcher");
            let prefix = match (&f.name, c.stream) {
                (Some(_), _) | (None, Stream::Launcher) => Vec::new(),
                (None, Stream::Stdout) => format!("{label} | ").into_bytes(),
                (None, Stream::Stderr) => format!("{label} ! ").into_bytes(),
            };
            let mut at = c.offset(cur);
            let mut seq = cur;
            let stop = (c.first + c.lines).min(f.end(name));
            while seq < stop && out.len() < max {
                let rest = c.data.get(at..).unwrap_or_default();
                let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
                out.extend_from_slice(&prefix);
                out.extend_from_slice(rest.get(..end).unwrap_or_default());
                at += end;
                seq += 1;
            }
            f.cursors.insert(name.clone(), seq);
        }
        f.until.is_some()
            && self
                .scope(f.name.as_deref())
                .all(|(name, r)| f.cursors.get(name).copied().unwrap_or(r.first()) >= f.end(name))
    }

    /// Has `f` lines to read (or skipped ones to hear of)?
    pub fn has_news(&self, f: &Follower) -> bool {
        f.seen != Some(self.version)
    }

    /// The rings a follower of `name` reads (every one for `None`).
    fn scope<'a>(&'a self, name: Option<&'a str>) -> impl Iterator<Item = (&'a Source, &'a Ring)> {
        self.rings
            .iter()
            .filter(move |(n, _)| name.is_none_or(|want| n.as_deref() == Some(want)))
    }
}

/// What `ctl logs` answers.
#[derive(Debug)]
pub enum Answer {
    /// The lines: what the follower reads (the last `-n`, then, with
    /// `-f`, new ones as they come).
    Read(Follower),
    /// Nothing to read, and why (`inherit`: not through the launcher).
    Say(String),
    /// A request that cannot be served.
    Refuse(String),
}

/// A `ctl logs [NAME] [-n LINES] [-f]` request, its service found by the
/// supervisor (every service it runs: the configured ones, its sshd, the
/// main command).
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub name: Option<&'a str>,
    /// The named service's stdout and stderr (`None`: no such service).
    pub streams: Option<(&'a model::Stream, &'a model::Stream)>,
    pub lines: usize,
    pub follow: bool,
}

/// What to answer `asked`.
pub fn answer(asked: Asked<'_>) -> Answer {
    let Asked {
        name,
        streams,
        lines,
        follow,
    } = asked;
    let mut logs = logs();
    let kept = |s: &model::Stream| matches!(s, model::Stream::Prefix | model::Stream::File(_));
    if let Some(name) = name {
        let Some((stdout, stderr)) = streams else {
            return Answer::Refuse(format!("no such service: {name}"));
        };
        if !kept(stdout) && !kept(stderr) {
            let inherit = [stdout, stderr]
                .iter()
                .any(|s| matches!(s, model::Stream::Inherit));
            return Answer::Say(if inherit {
                format!(
                    "{name}: its output goes straight to the container's stdout and \
                     stderr (inherit), not through the launcher: see `docker logs`"
                )
            } else {
                format!("{name}: its output is discarded (null)")
            });
        }
    }
    if !logs.enabled() {
        // The termination report's last stderr lines are kept apart from
        // the rings: where to see them.
        let tail = match (name, streams) {
            (Some(name), Some((_, stderr))) if kept(stderr) => format!(
                "; `ctl status {name}` shows its last stderr lines (the 10 the termination report keeps)"
            ),
            (Some(_), _) => String::new(),
            (None, _) => "; `ctl status NAME` shows a service's last stderr lines (the 10 the termination report keeps)".into(),
        };
        return Answer::Say(format!(
            "no output is kept for `ctl logs` (log.buffer: 0){tail}"
        ));
    }
    Answer::Read(logs.follower(name, lines, follow))
}

/// A reader of the rings (`ctl logs`, `ctl logs -f`): where it is in each.
#[derive(Debug, Clone)]
pub struct Follower {
    /// One service, or every source.
    name: Option<String>,
    /// Not following: where each ring ended when it began (a ring not
    /// there then is not read).
    until: Option<HashMap<Source, u64>>,
    /// The number of the next line to read, per ring (a ring not here yet
    /// is read from its oldest line: it began after the follower).
    cursors: HashMap<Source, u64>,
    /// The version of the rings it last read.
    seen: Option<u64>,
    /// Counted among the followers while it lives.
    _alive: Alive,
}

/// A follower's place in `Logs::followers`.
#[derive(Debug)]
struct Alive(Arc<AtomicUsize>);

impl Clone for Alive {
    fn clone(&self) -> Alive {
        self.0.fetch_add(1, Ordering::Relaxed);
        Alive(Arc::clone(&self.0))
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Follower {
    /// The number of the line of `source` it stops before.
    fn end(&self, source: &Source) -> u64 {
        match &self.until {
            None => u64::MAX,
            Some(until) => until.get(source).copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(logs: &Logs, f: &mut Follower) -> String {
        let mut out = Vec::new();
        logs.read(f, &mut out, usize::MAX);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn without_follow_a_reader_stops_at_what_was_there() {
        let mut l = Logs::new(1024);
        l.push("web", Stream::Stdout, b"a\nb\n");
        let mut f = l.follower(Some("web"), 10, false);
        l.push("web", Stream::Stdout, b"c\n");
        l.push("db", Stream::Stdout, b"x\n");
        let mut out = Vec::new();
        assert!(l.read(&mut f, &mut out, usize::MAX));
        assert_eq!(out, b"a\nb\n");
        let mut f = l.follower(None, 10, false);
        l.push("new", Stream::Stdout, b"late\n");
        let mut out = Vec::new();
        assert!(!l.read(&mut f, &mut out, 4), "stops at max first");
        assert!(l.read(&mut f, &mut out, usize::MAX));
        assert_eq!(out, b"web | a\nweb | b\nweb | c\ndb | x\n");
        // Following, it is never done.
        let mut f = l.follower(Some("web"), 1, true);
        let mut out = Vec::new();
        assert!(!l.read(&mut f, &mut out, usize::MAX));
        assert_eq!(out, b"c\n");
    }

    #[test]
    fn the_last_n_lines_of_one_source_as_they_were_written() {
        let mut l = Logs::new(1024);
        l.push("web", Stream::Stdout, b"one\ntwo\n");
        l.push("db", Stream::Stdout, b"other\n");
        l.push("web", Stream::Stderr, b"three\nfour");
        // (n, want)
        let rows: &[(usize, &str)] = &[
            (0, ""),
            (1, "four\n"),
            (3, "two\nthree\nfour\n"),
            (100, "one\ntwo\nthree\nfour\n"),
        ];
        for (n, want) in rows {
            let mut f = l.follower(Some("web"), *n, true);
            assert_eq!(read_all(&l, &mut f), *want, "n={n}");
        }
        let mut f = l.follower(Some("nobody"), 10, true);
        assert_eq!(read_all(&l, &mut f), "");
    }

    #[test]
    fn every_source_merges_in_arrival_order_with_prefixes() {
        let mut l = Logs::new(1024);
        l.push("web", Stream::Stdout, b"w1\n");
        l.push_launcher(b"mc-launcher: note\n");
        l.push("db", Stream::Stderr, b"d1\nd2\n");
        l.push("web", Stream::Stdout, b"w2\n");
        let mut f = l.follower(None, 100, true);
        assert_eq!(
            read_all(&l, &mut f),
            "web | w1\nmc-launcher: note\ndb ! d1\ndb ! d2\nweb | w2\n"
        );
        let mut f = l.follower(None, 3, true);
        assert_eq!(read_all(&l, &mut f), "db ! d1\ndb ! d2\nweb | w2\n");
        let mut f = l.follower(None, 2, true);
        assert_eq!(read_all(&l, &mut f), "db ! d2\nweb | w2\n");
    }

    #[test]
    fn a_follower_reads_new_lines_once_and_hears_of_what_it_missed() {
        let mut l = Logs::new(40 + CHUNK_COST);
        l.push("web", Stream::Stdout, b"a\n");
        let mut f = l.follower(Some("web"), 10, true);
        assert!(l.has_news(&f));
        assert_eq!(read_all(&l, &mut f), "a\n");
        assert!(!l.has_news(&f));
        assert_eq!(read_all(&l, &mut f), "");
        l.push("web", Stream::Stdout, b"b\n");
        assert!(l.has_news(&f));
        assert_eq!(read_all(&l, &mut f), "b\n");
        // 30 lines of 4 bytes while it does not read: the ring keeps 10.
        for i in 0..30 {
            l.push("web", Stream::Stdout, format!("{i:03}\n").as_bytes());
        }
        let got = read_all(&l, &mut f);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.first().copied(), Some("… 20 lines skipped"), "{got}");
        assert_eq!(lines.last().copied(), Some("029"), "{got}");
        assert_eq!(lines.len(), 11, "{got}");
    }

    #[test]
    fn reads_stop_near_max_between_lines() {
        let mut l = Logs::new(1 << 20);
        for i in 0..100 {
            l.push("web", Stream::Stdout, format!("line {i:03}\n").as_bytes());
        }
        let mut f = l.follower(Some("web"), 1000, true);
        let mut all = String::new();
        loop {
            let mut out = Vec::new();
            l.read(&mut f, &mut out, 100);
            if out.is_empty() {
                break;
            }
            assert!(out.len() < 100 + 9, "{}", out.len());
            assert!(out.ends_with(b"\n"));
            all.push_str(std::str::from_utf8(&out).expect("utf-8"));
        }
        let want: String = (0..100).map(|i| format!("line {i:03}\n")).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn rings_stay_within_their_bound() {
        let mut next = crate::units::xorshift(0x5eed_1234_abcd_0001);
        let cap = 4096;
        let mut l = Logs::new(cap);
        let mut last = String::new();
        for i in 0..2000 {
            let n = (next() % 200) as usize;
            let line = format!("{i}:{}\n", "x".repeat(n));
            let stream = if next().is_multiple_of(2) {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            l.push("web", stream, line.as_bytes());
            if next().is_multiple_of(7) {
                l.push("db", Stream::Stdout, b"tick\n");
            }
            last = line;
            l.settle();
            let r = l.rings.get(&Some("web".to_string())).expect("ring");
            assert!(r.bytes <= cap, "{} > {cap}", r.bytes);
            let real: usize = r.chunks.iter().map(|c| c.len() + CHUNK_COST).sum();
            assert_eq!(real, r.bytes);
            let lines: u64 = r.chunks.iter().map(|c| c.lines).sum();
            assert_eq!(lines, r.next - r.first());
        }
        let mut f = l.follower(Some("web"), 1, true);
        assert_eq!(read_all(&l, &mut f), last);
        // A line longer than the ring: its end is kept as a line.
        l.push("web", Stream::Stdout, "y".repeat(10_000).as_bytes());
        let mut f = l.follower(Some("web"), 1, true);
        let got = read_all(&l, &mut f);
        assert!(got.len() <= cap && got.ends_with("y\n"), "{}", got.len());
    }

    #[test]
    fn lines_pushed_while_nobody_follows_are_counted_when_one_comes() {
        let mut l = Logs::new(40 + CHUNK_COST);
        for i in 0..30 {
            l.push("web", Stream::Stdout, format!("{i:03}\n").as_bytes());
        }
        l.push("db", Stream::Stderr, b"d\n");
        let mut f = l.follower(Some("web"), 3, false);
        assert_eq!(read_all(&l, &mut f), "027\n028\n029\n");
        let mut all = l.follower(None, 2, true);
        assert_eq!(read_all(&l, &mut all), "web | 029\ndb ! d\n");
        drop(f);
        // Still followed (`all`, and a clone of it): counted as they come.
        let mut again = all.clone();
        drop(all);
        for i in 30..45 {
            l.push("web", Stream::Stdout, format!("{i:03}\n").as_bytes());
        }
        let got = read_all(&l, &mut again);
        assert!(got.starts_with("… 5 lines skipped\nweb | 035\n"), "{got}");
        assert!(got.ends_with("web | 044\n"), "{got}");
        drop(again);
        assert_eq!(l.followers.load(Ordering::Relaxed), 0);
        // Nobody follows: pushed uncounted, counted by the next follower.
        l.push("web", Stream::Stdout, b"045\n046\n");
        let mut f = l.follower(Some("web"), 4, false);
        assert_eq!(read_all(&l, &mut f), "043\n044\n045\n046\n");
    }

    #[test]
    fn large_reads_are_kept_in_their_own_buffers() {
        // Reads of random sizes, small (copied) and large (the buffer
        // taken): the ring reads back the last lines of the stream, stays
        // within its bound, and hands back each read's unfinished line.
        let mut next = crate::units::xorshift(0x5eed_1234_abcd_0002);
        let cap = 64 * 1024;
        let mut l = Logs::new(cap);
        let mut stream = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut i = 0u64;
        for _ in 0..200 {
            let want = if next().is_multiple_of(2) {
                200
            } else {
                90_000
            };
            while buf.len() < want {
                let n = (next() % 120) as usize;
                buf.extend_from_slice(format!("{i}:{}\n", "y".repeat(n)).as_bytes());
                i += 1;
            }
            buf.extend_from_slice(b"partial");
            let end = buf.len() - b"partial".len();
            stream.extend_from_slice(&buf[..end]);
            // A full buffer is taken; one mostly empty is copied from.
            let roomy = next().is_multiple_of(3);
            if roomy {
                buf.reserve(4 * buf.len());
            } else {
                buf.shrink_to_fit();
            }
            let large = want > 200;
            buf = l.push_taking("web", Stream::Stdout, buf, end);
            assert_eq!(buf, b"partial");
            buf.clear();
            l.settle();
            let r = l.rings.get(&Some("web".to_string())).expect("ring");
            let taken = r.chunks.back().is_some_and(|c| c.start > 0);
            assert_eq!(taken, large && !roomy);
            assert!(r.bytes <= cap, "{} > {cap}", r.bytes);
            let real: usize = r.chunks.iter().map(|c| c.len() + CHUNK_COST).sum();
            assert_eq!(real, r.bytes);
            let lines: u64 = r.chunks.iter().map(|c| c.lines).sum();
            assert_eq!(lines, r.next - r.first());
        }
        let mut f = l.follower(Some("web"), usize::MAX, true);
        let got = read_all(&l, &mut f);
        assert!(got.len() > cap / 2, "{}", got.len());
        assert!(stream.ends_with(got.as_bytes()));
        assert!(got.starts_with(|c: char| c.is_ascii_digit()));
    }

    #[test]
    fn a_zero_buffer_keeps_nothing() {
        let mut l = Logs::new(1024);
        l.push("web", Stream::Stdout, b"a\n");
        l.set_capacity(0);
        assert!(!l.enabled());
        l.push("web", Stream::Stdout, b"b\n");
        let mut f = l.follower(None, 10, true);
        assert_eq!(read_all(&l, &mut f), "");
    }
}
