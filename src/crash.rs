//! The last line of defence: a panic hook. A PID 1 that dies takes the
//! container with it in an unknown state; one that hangs keeps it alive with
//! nobody reaping. On a panic (a bug: nothing users or the OS feed us should
//! reach one) the hook says so, stops every process it can — all of them as
//! PID 1, its own children otherwise — and exits with `EXIT_INTERNAL`.

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// How long processes get to exit on TERM before KILL, after a panic.
const GRACE: Duration = Duration::from_secs(2);

pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!(
            "mc-launcher: internal error (please report it): stopping every process and exiting {}",
            crate::error::EXIT_INTERNAL
        );
        stop_everything();
        std::process::exit(crate::error::EXIT_INTERNAL);
    }));
}

/// TERM, a short grace while reaping, then KILL.
fn stop_everything() {
    let pid1 = std::process::id() == 1;
    signal_all(pid1, Signal::SIGTERM);
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
            Ok(_) => {}
            Err(_) => return, // ECHILD: nobody left
        }
    }
    signal_all(pid1, Signal::SIGKILL);
    while let Ok(st) = waitpid(None::<Pid>, None) {
        if st == WaitStatus::StillAlive {
            break;
        }
    }
}

fn signal_all(pid1: bool, sig: Signal) {
    if pid1 {
        let _ = kill(Pid::from_raw(-1), sig);
        return;
    }
    // Each service leads its own process group: signal the groups.
    for child in crate::proc::reap::children_of(std::process::id() as i32) {
        let _ = kill(Pid::from_raw(-child), sig);
        let _ = kill(Pid::from_raw(child), sig);
    }
}
