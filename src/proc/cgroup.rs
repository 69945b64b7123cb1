//! The launcher's own cgroup (v2): its size (CPU quota, memory limit) for
//! templates and the `MC_CPUS` / `MC_MEMORY_MAX` variables, and its OOM
//! kill counter, which tells a child killed for lack of memory from one
//! killed by someone (README "OOM attribution"). Layer 2.
//!
//! The directory is `MC_CGROUP_ROOT` when set (tests point it at a fake
//! v2 one), else the unified hierarchy's directory for the path named in
//! `/proc/self/cgroup` (`0::/…`), under `/sys/fs/cgroup`; on a cgroup v1
//! host (older Docker), the memory and cpu controllers' directories, read
//! the v1 way (`memory.oom_control`, `cpu.cfs_quota_us`).

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

/// Where this process's cgroup files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2: one directory (or `MC_CGROUP_ROOT`).
    V2(PathBuf),
    /// cgroup v1 (older Docker hosts): the memory and cpu controllers'
    /// directories.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
}

/// The directory of controller `name` (v1) for `rel`, else the
/// controller's root (inside a container, the container's own cgroup).
fn v1_dir(name: &str, rel: &str) -> Option<PathBuf> {
    let base = Path::new("/sys/fs/cgroup").join(name);
    let below = base.join(rel.trim_start_matches('/'));
    [below, base].into_iter().find(|d| d.is_dir())
}

/// This process's cgroup, if it has one the launcher can read.
pub fn own() -> Option<Layout> {
    static LAYOUT: OnceLock<Option<Layout>> = OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            if let Some(d) = std::env::var_os("MC_CGROUP_ROOT").filter(|v| !v.is_empty()) {
                return Some(Layout::V2(PathBuf::from(d)));
            }
            let text = read_small(Path::new("/proc/self/cgroup"))?;
            let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
            if unified {
                let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
                let dir = Path::new("/sys/fs/cgroup").join(rel.trim().trim_start_matches('/'));
                let dir = if dir.is_dir() {
                    dir
                } else {
                    PathBuf::from("/sys/fs/cgroup")
                };
                return Some(Layout::V2(dir));
            }
            let controller = |name: &str| {
                text.lines().find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, ctrls, rel) = (parts.next()?, parts.next()?, parts.next()?);
                    ctrls
                        .split(',')
                        .any(|c| c == name)
                        .then(|| v1_dir(name, rel))
                        .flatten()
                })
            };
            Some(Layout::V1 {
                memory: controller("memory"),
                cpu: controller("cpu"),
            })
        })
        .clone()
}

/// Processes killed for lack of memory in this cgroup (and below) so far:
/// `oom_kill N` of `memory.events` (v2) or `memory.oom_control` (v1).
pub fn oom_kills(layout: &Layout) -> Option<u64> {
    let file = match layout {
        Layout::V2(d) => d.join("memory.events"),
        Layout::V1 { memory, .. } => memory.as_ref()?.join("memory.oom_control"),
    };
    parse_oom_kills(&read_small(&file)?)
}

pub fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// CPUs of `cpu.max` (`quota period`, rounded up; `max` = none).
pub fn parse_cpu_max(text: &str) -> Option<u32> {
    let mut words = text.split_whitespace();
    // v1 writes "no quota" as -1, v2 as `max`: neither parses.
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

/// The CPUs this process may run on (its affinity mask). Not std's
/// `available_parallelism`, which already divides by the quota.
fn cpus_allowed() -> u32 {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return 1;
    };
    let n = (0..nix::sched::CpuSet::count())
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .count();
    u32::try_from(n).unwrap_or(1).max(1)
}

/// v1's "unlimited" is a huge number near 2^63.
const V1_UNLIMITED: u64 = 1 << 62;

/// Read once: a container's limits do not change under it (often).
pub fn size() -> Size {
    static SIZE: OnceLock<Size> = OnceLock::new();
    *SIZE.get_or_init(|| {
        let online = cpus_allowed();
        let (quota, memory_max) = match own() {
            Some(Layout::V2(d)) => (
                read_small(&d.join("cpu.max")).and_then(|t| parse_cpu_max(&t)),
                read_small(&d.join("memory.max")).and_then(|t| parse_memory_max(&t)),
            ),
            Some(Layout::V1 { memory, cpu }) => {
                let quota = cpu.as_ref().and_then(|c| {
                    let q = read_small(&c.join("cpu.cfs_quota_us"))?;
                    let p = read_small(&c.join("cpu.cfs_period_us"))?;
                    parse_cpu_max(&format!("{} {}", q.trim(), p.trim()))
                });
                let mem = memory
                    .as_ref()
                    .and_then(|m| read_small(&m.join("memory.limit_in_bytes")))
                    .and_then(|t| parse_memory_max(&t))
                    .filter(|&m| m < V1_UNLIMITED);
                (quota, mem)
            }
            None => (None, None),
        };
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
