//! Exit codes (README "Exit status") and diagnostics, in one place. Layer 0.

use std::fmt;
use std::path::{Path, PathBuf};

/// Stopped on request and every service stopped.
pub const EXIT_OK: i32 = 0;
/// A prepare step failed (`on_error: abort`) or a critical service exhausted its retries.
pub const EXIT_FAILURE: i32 = 1;
/// Bad command line.
pub const EXIT_USAGE: i32 = 2;
/// Invalid config or invalid volume input (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// CMD exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// CMD not found.
pub const EXIT_NOT_FOUND: i32 = 127;
/// `mc-launcher ctl`: the command was done.
pub const CTL_OK: i32 = 0;
/// `mc-launcher ctl`: the launcher refused or failed the command.
pub const CTL_FAILED: i32 = 1;
/// `mc-launcher ctl`: no launcher answered on any socket path.
pub const CTL_NO_LAUNCHER: i32 = 3;
/// The launcher itself failed (a panic: a bug), after stopping everything.
pub const EXIT_INTERNAL: i32 = 70;

/// Status for a process killed by signal `n`, as shells report it.
pub fn signal_exit(n: i32) -> i32 {
    128 + n
}

/// A position in a file: 1-based line, 1-based column. Line 0 means "the
/// whole file", column 0 "somewhere on the line".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub fn new(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }
}

/// One problem found in an input file, printed as `file:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub file: PathBuf,
    pub pos: Pos,
    pub msg: String,
}

impl Diag {
    pub fn new(file: &Path, pos: Pos, msg: impl Into<String>) -> Diag {
        Diag {
            file: file.to_path_buf(),
            pos,
            msg: msg.into(),
        }
    }

    /// A problem with a whole file (missing, unreadable).
    pub fn file(file: &Path, msg: impl Into<String>) -> Diag {
        Diag::new(file, Pos::default(), msg)
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pos.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.msg)
        } else if self.pos.col == 0 {
            write!(f, "{}:{}: {}", self.file.display(), self.pos.line, self.msg)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.pos.line,
                self.pos.col,
                self.msg
            )
        }
    }
}

/// Print every diagnostic on stderr, sorted by file and position.
pub fn report(diags: &[Diag]) {
    let mut sorted: Vec<&Diag> = diags.iter().collect();
    sorted.sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
    for d in sorted {
        eprintln!("mc-launcher: {d}");
    }
}
