//! The relay's inner loops: whole lines framed as records, `name | line`
//! or one JSON object each, copied into the batch that goes to the writer.
//!
//! Why not `Vec::extend_from_slice`: in the static build it ends in musl's
//! `memcpy` (byte moves up to an 8-byte boundary, then `rep movsq`), some
//! hundred cycles for a 100-byte log line, paid twice a line (its prefix,
//! then its text) — that was most of the relay's own CPU time. Here a
//! copy moves 16 bytes a step and covers an odd length with one last,
//! overlapping step; JSON escaping checks and copies the same 16 bytes in
//! one pass. JSON string escaping of arbitrary bytes lives here too, the
//! general way and the fast one for ASCII. Only what `record` says a record
//! is comes out: `record`'s tests compare these loops against
//! `record::Head::write` (this file imports nothing of `record`). Layer 2.

use std::ptr;

/// Room kept beyond what a copy needs; none is written into (the copies
/// stay inside their length), it only spares a capacity check per piece.
const SLACK: usize = 64;

/// Copy `n` bytes from `src` to `dst` (not overlapping).
///
/// # Safety
/// `src` is valid for `n` reads and `dst` for `n` writes.
#[inline(always)]
unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY (whole body): every access lies in [0, n) of both buffers:
    // the overlapping last steps start at n - width, with n >= width.
    unsafe {
        if n <= 16 {
            if n >= 8 {
                let a = ptr::read_unaligned(src.cast::<u64>());
                let b = ptr::read_unaligned(src.add(n - 8).cast::<u64>());
                ptr::write_unaligned(dst.cast::<u64>(), a);
                ptr::write_unaligned(dst.add(n - 8).cast::<u64>(), b);
            } else if n >= 4 {
                let a = ptr::read_unaligned(src.cast::<u32>());
                let b = ptr::read_unaligned(src.add(n - 4).cast::<u32>());
                ptr::write_unaligned(dst.cast::<u32>(), a);
                ptr::write_unaligned(dst.add(n - 4).cast::<u32>(), b);
            } else if n > 0 {
                let (a, b, c) = (*src, *src.add(n / 2), *src.add(n - 1));
                *dst = a;
                *dst.add(n / 2) = b;
                *dst.add(n - 1) = c;
            }
            return;
        }
        if n > 1024 {
            // Long copies: the library's is as good as any.
            ptr::copy_nonoverlapping(src, dst, n);
            return;
        }
        let mut i = 0;
        while i + 16 < n {
            ptr::write_unaligned(
                dst.add(i).cast::<u128>(),
                ptr::read_unaligned(src.add(i).cast::<u128>()),
            );
            i += 16;
        }
        ptr::write_unaligned(
            dst.add(n - 16).cast::<u128>(),
            ptr::read_unaligned(src.add(n - 16).cast::<u128>()),
        );
    }
}

/// Make room for `n` more bytes (and the slack) in `out`.
#[inline(always)]
fn room(out: &mut Vec<u8>, n: usize) {
    if out.capacity() - out.len() < n + SLACK {
        grow(out, n);
    }
}

#[cold]
#[inline(never)]
fn grow(out: &mut Vec<u8>, n: usize) {
    // At least double: a batch of many small lines grows a few times, not
    // once per line.
    out.reserve((n + SLACK).max(out.capacity()));
}

/// Append `parts` to `out`, one after the other.
#[inline(always)]
fn put(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    room(out, n);
    let mut at = out.len();
    for p in parts {
        // SAFETY: `room` left at least `n` bytes of capacity after the
        // length; the parts are ours to read and never alias `out`'s
        // spare capacity (a `&mut` to it is held here).
        unsafe { copy(out.as_mut_ptr().add(at), p.as_ptr(), p.len()) };
        at += p.len();
    }
    // SAFETY: the `n` bytes after the old length were written just above.
    unsafe { out.set_len(at) };
}

/// Text records for the whole lines at the start of `data`: `prefix`,
/// the line, a newline each, as long as a line is at most `whole` bytes
/// (a longer one is left for the caller to split). How many bytes of
/// `data` were framed (whole lines with their newlines).
pub fn text_lines(prefix: &[u8], whole: usize, data: &[u8], out: &mut Vec<u8>) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::text_lines(prefix, whole, data, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        text_lines_portable(prefix, whole, data, out)
    }
}

/// `text_lines` a line at a time, with `memchr`.
#[cfg(any(test, not(target_arch = "x86_64")))]
pub(super) fn text_lines_portable(
    prefix: &[u8],
    whole: usize,
    data: &[u8],
    out: &mut Vec<u8>,
) -> usize {
    lines_portable(data, whole, |line| {
        put(out, &[prefix, line, b"\n"]);
        true
    })
}

/// JSON records for the whole lines at the start of `data`, each
/// `start` (the envelope up to the message, `record::Head::json_start`),
/// the line escaped, `"}` and a newline, as long as a record is at most
/// `max` bytes, and its message at most `whole` (a longer one is left for
/// the caller to split). How many bytes of `data` were framed.
pub fn json_lines(start: &[u8], whole: usize, max: usize, data: &[u8], out: &mut Vec<u8>) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::json_lines(start, whole, max, data, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        json_lines_portable(start, whole, max, data, out)
    }
}

/// `json_lines` a line at a time, with `memchr`.
#[cfg(any(test, not(target_arch = "x86_64")))]
pub(super) fn json_lines_portable(
    start: &[u8],
    whole: usize,
    max: usize,
    data: &[u8],
    out: &mut Vec<u8>,
) -> usize {
    lines_portable(data, whole, |line| json_record(start, line, max, out))
}

/// The whole lines at the start of `data`, each of at most `whole` bytes,
/// given to `frame` (without the newline) while it says it framed them:
/// how many bytes of `data` were framed, newlines included.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn lines_portable(data: &[u8], whole: usize, mut frame: impl FnMut(&[u8]) -> bool) -> usize {
    let mut pos = 0usize;
    for i in memchr::memchr_iter(b'\n', data) {
        let Some(line) = data.get(pos..i) else { break };
        if line.len() > whole || !frame(line) {
            break;
        }
        pos = i + 1;
    }
    pos
}

/// One JSON record for `line`, any bytes, if it fits `max`; else `out`
/// stays as it was and `false`.
fn json_record(start: &[u8], line: &[u8], max: usize, out: &mut Vec<u8>) -> bool {
    let mark = out.len();
    write_json_line(start, line, out);
    if out.len() - mark > max {
        out.truncate(mark);
        return false;
    }
    true
}

/// The loops above, 16 bytes a step: each step copies a block to its
/// place in the record and, in the same step, finds what ends it (the
/// newline) or needs care (in JSON: an escape, a byte that is not ASCII).
/// A block may be copied past the line's end: what follows overwrites it,
/// and the length of `out` only ever counts whole records.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use super::{copy, escape_ascii, json_record, put, room};
    use std::arch::x86_64::*;

    /// A bit for each of the 16 bytes of `x` that a JSON string cannot
    /// hold as it is: `"`, `\\`, a control byte, or a byte that is not
    /// ASCII (signed compare: 0x80-0xff are below 0x20 too).
    #[inline(always)]
    pub fn special(x: __m128i) -> i32 {
        // SAFETY: SSE2 is part of x86_64.
        unsafe {
            let bad = _mm_or_si128(
                _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)),
                _mm_or_si128(
                    _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8)),
                    _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8)),
                ),
            );
            _mm_movemask_epi8(bad)
        }
    }

    /// The rest of the line that starts at `done`, from a byte at `from`
    /// that is not ASCII, framed the general way: where the next line
    /// starts, or `None` (no newline yet, or too long for one record).
    fn general(
        start: &[u8],
        whole: usize,
        max: usize,
        data: &[u8],
        done: usize,
        from: usize,
        out: &mut Vec<u8>,
    ) -> Option<usize> {
        let nl = from + memchr::memchr(b'\n', data.get(from..)?)?;
        let line = data.get(done..nl)?;
        (line.len() <= whole && json_record(start, line, max, out)).then_some(nl + 1)
    }

    pub fn text_lines(prefix: &[u8], whole: usize, data: &[u8], out: &mut Vec<u8>) -> usize {
        let n = data.len();
        let src = data.as_ptr();
        let plen = prefix.len();
        let mut done = 0usize;
        while done < n {
            // Room for the longest record this line may make, and a block.
            room(out, plen + (n - done).min(whole + 1) + 32);
            let rec = out.len();
            let base = out.as_mut_ptr();
            // SAFETY: `room` made `rec + plen + min(n - done, whole + 1) +
            // 32` bytes of capacity; every store below ends within it: a
            // block is stored at `o = rec + plen + (i - done)` only while
            // `i - done <= whole` and `i + 16 <= n`. Loads stay in `data`
            // (`i + 16 <= n`). SSE2 is part of x86_64.
            let found = unsafe {
                copy(base.add(rec), prefix.as_ptr(), plen);
                let mut i = done;
                loop {
                    if i - done > whole {
                        return done; // too long for one record
                    }
                    if i + 16 > n {
                        break Err(i);
                    }
                    let x = _mm_loadu_si128(src.add(i).cast());
                    _mm_storeu_si128(base.add(rec + plen + (i - done)).cast(), x);
                    let m = _mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8(b'\n' as i8)));
                    if m != 0 {
                        break Ok(i + m.trailing_zeros() as usize);
                    }
                    i += 16;
                }
            };
            let end = match found {
                Ok(end) => {
                    if end - done > whole {
                        return done;
                    }
                    // SAFETY: the prefix and every block up to the one
                    // with the newline are stored, within capacity.
                    unsafe { out.set_len(rec + plen + (end + 1 - done)) };
                    end
                }
                Err(i) => {
                    // Under 16 bytes left: the newline the slow way.
                    let Some(k) = data.get(i..).and_then(|t| memchr::memchr(b'\n', t)) else {
                        return done; // no newline yet
                    };
                    if i + k - done > whole {
                        return done;
                    }
                    // SAFETY: the prefix and the blocks before `i` are
                    // stored, within capacity.
                    unsafe { out.set_len(rec + plen + (i - done)) };
                    put(out, &[data.get(i..=i + k).unwrap_or_default()]);
                    i + k
                }
            };
            done = end + 1;
        }
        done
    }

    pub fn json_lines(
        start: &[u8],
        whole: usize,
        max: usize,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> usize {
        let n = data.len();
        let src = data.as_ptr();
        let mut done = 0usize;
        'lines: while done < n {
            // Room for the longest record this line may make (an escape
            // takes at most 6 bytes), and a block.
            room(out, start.len() + 6 * (n - done).min(whole + 1) + 48);
            let rec = out.len();
            let msg = rec + start.len();
            let base = out.as_mut_ptr();
            let mut i = done;
            let mut o = msg;
            // SAFETY: capacity as made by `room` above; a block is stored
            // at `o` only while `o - msg <= whole` (at most 16 bytes past
            // it) and an escape only under the same bound (at most 6
            // past), both less than what `room` made; loads stay in
            // `data` (`i + 16 <= n`). SSE2 is part of x86_64.
            let ended = unsafe {
                copy(base.add(rec), start.as_ptr(), start.len());
                loop {
                    if o - msg > whole {
                        return done;
                    }
                    if i + 16 > n {
                        break false;
                    }
                    let x = _mm_loadu_si128(src.add(i).cast());
                    _mm_storeu_si128(base.add(o).cast(), x);
                    let m = special(x);
                    if m == 0 {
                        i += 16;
                        o += 16;
                        continue;
                    }
                    let k = m.trailing_zeros() as usize;
                    i += k;
                    o += k;
                    let b = *src.add(i);
                    if b == b'\n' {
                        break true;
                    }
                    if b >= 0x80 {
                        // Not ASCII: this line the general way.
                        match general(start, whole, max, data, done, i, out) {
                            Some(next) => {
                                done = next;
                                continue 'lines;
                            }
                            None => return done,
                        }
                    }
                    let mut esc = [0u8; 6];
                    let e = super::escape_of(b, &mut esc);
                    copy(base.add(o), e.as_ptr(), e.len());
                    o += e.len();
                    i += 1;
                }
            };
            // SAFETY: the envelope and the message so far are in place.
            unsafe { out.set_len(o) };
            if !ended {
                // Under 16 bytes left: the rest of the line the slow way.
                let Some(nl) = data.get(i..).and_then(|t| memchr::memchr(b'\n', t)) else {
                    out.truncate(rec);
                    return done;
                };
                let ascii = data.get(i..i + nl).is_some_and(|t| escape_ascii(t, out));
                if !ascii {
                    out.truncate(rec);
                    match general(start, whole, max, data, done, i, out) {
                        Some(next) => {
                            done = next;
                            continue;
                        }
                        None => return done,
                    }
                }
                i += nl;
            }
            put(out, &[b"\"}\n"]);
            if out.len() - rec > max || out.len() - msg - 3 > whole {
                out.truncate(rec);
                return done;
            }
            done = i + 1;
        }
        done
    }
}

/// `s` escaped for a JSON string into `out`, when all of it is ASCII;
/// `false` (with `out` partly written) when it is not.
pub fn escape_ascii(s: &[u8], out: &mut Vec<u8>) -> bool {
    room(out, s.len());
    let mut i = 0usize;
    #[cfg(target_arch = "x86_64")]
    {
        // 16 bytes a step: all plain (no `"`, `\`, control or non-ASCII
        // byte) are copied as they are, in the same step that checked them.
        while i + 16 <= s.len() {
            // SAFETY: `i + 16 <= s.len()`; `room` keeps at least `s.len()
            // - i` bytes free past the length (an escape calls `room`
            // again); SSE2 is part of x86_64.
            let plain = unsafe {
                use std::arch::x86_64::*;
                let x = _mm_loadu_si128(s.as_ptr().add(i).cast());
                if sse2::special(x) == 0 {
                    _mm_storeu_si128(out.as_mut_ptr().add(out.len()).cast(), x);
                    out.set_len(out.len() + 16);
                    true
                } else {
                    false
                }
            };
            if plain {
                i += 16;
                continue;
            }
            // A block with something to escape (or not ASCII): byte by byte.
            let Some(block) = s.get(i..i + 16) else { break };
            if !escape_bytes(block, out, s.len() - i) {
                return false;
            }
            i += 16;
        }
    }
    // The rest (all of it elsewhere than x86_64) 8 bytes a step.
    while let Some(word) = s.get(i..i + 8) {
        let x = u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or([0; 8]));
        if x & 0x8080_8080_8080_8080 != 0 || needs_escape8(x) {
            if !escape_bytes(word, out, s.len() - i) {
                return false;
            }
        } else {
            put(out, &[word]);
        }
        i += 8;
    }
    let rest = s.get(i..).unwrap_or_default();
    escape_bytes(rest, out, rest.len())
}

/// Some byte of the 8 in `x` needs escaping (`"`, `\\`, or below 0x20):
/// the word-at-a-time tests of "Bit Twiddling Hacks" (exact as a yes/no
/// for the whole word).
#[inline]
fn needs_escape8(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let below_0x20 = x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0;
    below_0x20 || has_zero(x ^ (ONES * u64::from(b'"'))) || has_zero(x ^ (ONES * u64::from(b'\\')))
}

/// `block` escaped byte by byte; `left`: what is still to come of the
/// string, this block included (the room kept for it).
#[inline(never)]
fn escape_bytes(block: &[u8], out: &mut Vec<u8>, left: usize) -> bool {
    for (k, &b) in block.iter().enumerate() {
        match b {
            0x80.. => return false,
            b'"' | b'\\' | 0..=0x1f => {
                let mut esc = [0u8; 6];
                let e = escape_of(b, &mut esc);
                room(out, e.len() + left - k);
                put(out, &[e]);
            }
            _ => {
                room(out, left - k);
                put(out, &[&[b]]);
            }
        }
    }
    true
}

/// A whole line as one JSON record after `start` (`record::Head::json_start`):
/// the line escaped, `"}` and a newline.
pub fn write_json_line(start: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(start);
    escape_json(payload, out);
    out.extend_from_slice(b"\"}\n");
}

/// What a byte becomes inside a JSON string: 0 = itself, else the length
/// of its escape.
#[inline]
pub(super) fn escape_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 2,
        0..=0x1f => 6, // \u00XX
        _ => 0,
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";
/// U+FFFD, what an invalid byte sequence becomes.
pub(super) const REPLACEMENT: &[u8] = "\u{fffd}".as_bytes();

/// The escape of `b` (one that needs one).
fn push_escape(b: u8, out: &mut Vec<u8>) {
    let mut buf = [0u8; 6];
    out.extend_from_slice(escape_of(b, &mut buf));
}

/// The escape of `b` (one that needs one), written into `buf`.
fn escape_of(b: u8, buf: &mut [u8; 6]) -> &[u8] {
    let two = |c: u8, buf: &mut [u8; 6]| {
        buf[0] = b'\\';
        buf[1] = c;
        2
    };
    let n = match b {
        b'\n' => two(b'n', buf),
        b'\r' => two(b'r', buf),
        b'\t' => two(b't', buf),
        b'"' => two(b'"', buf),
        b'\\' => two(b'\\', buf),
        _ => {
            let hex = |n: u8| HEX.get(usize::from(n & 15)).copied().unwrap_or(b'0');
            *buf = [b'\\', b'u', b'0', b'0', hex(b >> 4), hex(b)];
            6
        }
    };
    buf.get(..n).unwrap_or_default()
}

/// `s` (valid UTF-8) escaped into `out`.
fn escape_str(s: &[u8], out: &mut Vec<u8>) {
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        if let Some(word) = s.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
            if !needs_escape8(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = s.get(i).copied().unwrap_or(b' ');
        i += 1;
        if escape_len(b) == 0 {
            continue;
        }
        out.extend_from_slice(s.get(start..i - 1).unwrap_or_default());
        push_escape(b, out);
        start = i;
    }
    out.extend_from_slice(s.get(start..).unwrap_or_default());
}

/// Any bytes as the inside of a JSON string: invalid UTF-8 becomes U+FFFD
/// (one per invalid sequence), control characters are escaped.
pub fn escape_json(bytes: &[u8], out: &mut Vec<u8>) {
    let mark = out.len();
    if escape_ascii(bytes, out) {
        return;
    }
    out.truncate(mark);
    for chunk in bytes.utf8_chunks() {
        escape_str(chunk.valid().as_bytes(), out);
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(REPLACEMENT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::random_bytes;
    use crate::proc::Draw::{Byte, Control, Printable};

    #[test]
    fn copies_of_every_small_length_are_exact() {
        let src: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        for n in (0..=300).chain([1023, 1024, 1025, 2999]) {
            for offset in [0usize, 1, 7, 13] {
                let mut out = vec![0xAA; offset];
                put(&mut out, &[src.get(offset..offset + n).expect("src")]);
                assert_eq!(out.len(), offset + n);
                assert_eq!(out.get(offset..), src.get(offset..offset + n), "n={n}");
                assert!(out.iter().take(offset).all(|&b| b == 0xAA));
            }
        }
    }

    #[test]
    fn ascii_escaping_agrees_with_the_general_escaper() {
        let mut next = crate::units::xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let len = (next() % 70) as usize;
            let rare = [Control, Byte(b'"'), Byte(b'\\'), Byte(0x7f)];
            let bytes = random_bytes(&mut next, len, &rare, 12, Printable);
            let mut fast = Vec::new();
            assert!(escape_ascii(&bytes, &mut fast), "{bytes:?}");
            let mut general = Vec::new();
            escape_json(&bytes, &mut general);
            assert_eq!(fast, general, "{bytes:?}");
        }
    }
}
