//! The last lines of a service's stderr, for the termination report.
//! Part of `output`.

use std::collections::VecDeque;

/// The last lines of a service's stderr, for the termination report.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
}

/// Lines kept per service, and the bytes kept of each.
const TAIL_LINES: usize = 10;
const TAIL_LINE_BYTES: usize = 300;

impl Tail {
    pub(super) fn push(&mut self, lines: &[u8]) {
        // Only the last lines of a large read can stay: those are found
        // from its end, not every line made a string to be dropped.
        let last: Vec<&[u8]> = lines
            .rsplit(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .take(TAIL_LINES)
            .collect();
        for line in last.into_iter().rev() {
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
