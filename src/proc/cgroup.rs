//! The launcher's own cgroup (v2): its size (CPU quota, memory limit) for
//! templates and the `MC_CPUS` / `MC_MEMORY_MAX` variables, and its OOM
//! kill counter, which tells a child killed for lack of memory from one
//! killed by someone (README "OOM attribution"). Layer 2.
//!
//! The directory is `MC_CGROUP_ROOT` when set (tests point it at a fake
//! one), else the unified hierarchy's directory for the path named in
//! `/proc/self/cgroup` (`0::/…`), under `/sys/fs/cgroup`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The files read here are a few lines long.
const MAX_READ: u64 = 64 * 1024;

fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_READ).read_to_string(&mut s).ok()?;
    Some(s)
}

/// The cgroup directory of this process, if there is a cgroup v2 one.
pub fn own_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("MC_CGROUP_ROOT").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(d));
        }
        let text = read_small(Path::new("/proc/self/cgroup"))?;
        let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let dir = Path::new("/sys/fs/cgroup").join(rel.trim().trim_start_matches('/'));
        dir.join("cgroup.controllers").exists().then_some(dir)
    })
    .clone()
}

/// `oom_kill N` of `memory.events`: processes killed for lack of memory
/// in this cgroup (and below) so far.
pub fn oom_kills(dir: &Path) -> Option<u64> {
    let text = read_small(&dir.join("memory.events"))?;
    parse_oom_kills(&text)
}

pub fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// CPUs of `cpu.max` (`quota period`, rounded up; `max` = none).
pub fn parse_cpu_max(text: &str) -> Option<u32> {
    let mut words = text.split_whitespace();
    let quota = words.next()?.parse::<u64>().ok()?;
    let period = words
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(100_000);
    if period == 0 || quota == 0 {
        return None;
    }
    u32::try_from(quota.div_ceil(period)).ok()
}

/// `memory.max` in bytes (`max` = none).
pub fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The size the processes of the container get: the CPU quota rounded
/// up (at most the CPUs this process may run on), the memory limit.
pub use crate::config::model::CgroupSize as Size;

/// Read once: a container's limits do not change under it (often).
pub fn size() -> Size {
    static SIZE: OnceLock<Size> = OnceLock::new();
    *SIZE.get_or_init(|| {
        let dir = own_dir();
        let online = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(1))
            .unwrap_or(1);
        let quota = dir
            .as_deref()
            .and_then(|d| read_small(&d.join("cpu.max")))
            .and_then(|t| parse_cpu_max(&t));
        let memory_max = dir
            .as_deref()
            .and_then(|d| read_small(&d.join("memory.max")))
            .and_then(|t| parse_memory_max(&t));
        Size {
            cpus: quota.map_or(online, |q| q.min(online).max(1)),
            memory_max,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_files() {
        let rows: &[(&str, Option<u32>)] = &[
            ("150000 100000\n", Some(2)),
            ("100000 100000\n", Some(1)),
            ("50000 100000\n", Some(1)),
            ("max 100000\n", None),
            ("", None),
        ];
        for (text, want) in rows {
            assert_eq!(parse_cpu_max(text), *want, "{text:?}");
        }
        assert_eq!(parse_memory_max("67108864\n"), Some(67_108_864));
        assert_eq!(parse_memory_max("max\n"), None);
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(events), Some(1));
        assert_eq!(parse_oom_kills("low 0\n"), None);
    }
}
