//! Reaping and finding children: the one reaper of the process, used by
//! the prepare phase, the supervisor and the panic hook. Layer 2.

use super::exit::{decode, Exit};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Collect every child that has ended (ours or re-parented orphans),
/// without blocking; `f` hears of each. Returns false when no child is
/// left at all.
pub fn reap_all(mut f: impl FnMut(i32, Exit)) -> bool {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Ok(st) => {
                if let Some((pid, exit)) = decode(st) {
                    f(pid, exit);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => return false,
            Err(e) => {
                log::error!("waitpid failed: {e}");
                return false;
            }
        }
    }
}

/// Wait for every child to end (after they were all killed).
pub fn wait_all() {
    while let Ok(_) | Err(Errno::EINTR) = waitpid(None::<Pid>, None) {}
}

/// Direct children of `pid`, from /proc (used when we are not PID 1): the
/// kernel's list when it has one (CONFIG_PROC_CHILDREN), else a scan of
/// every process's parent.
pub fn children_of(pid: i32) -> Vec<i32> {
    if let Ok(list) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return list
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: parse after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}
