//! The last line of defence: a panic hook. A PID 1 that dies takes the
//! container with it in an unknown state; one that hangs keeps it alive with
//! nobody reaping. On a panic (a bug: nothing users or the OS feed us should
//! reach one) the hook says so, stops every process it can — all of them as
//! PID 1, its own children otherwise — and exits with `Outcome::Internal`.

use nix::sys::signal::{kill, Signal};
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
            crate::error::Outcome::Internal.exit_code()
        );
        stop_everything();
        std::process::exit(crate::error::Outcome::Internal.exit_code());
    }));
}

/// TERM, a short grace while reaping, then KILL.
fn stop_everything() {
    let pid1 = std::process::id() == 1;
    signal_all(pid1, Signal::SIGTERM);
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if !crate::proc::reap::reap_all(|_, _| {}) {
            return; // nobody left
        }
        // A panic is no time for an event loop: a short nap between reaps.
        std::thread::sleep(Duration::from_millis(10));
    }
    signal_all(pid1, Signal::SIGKILL);
    crate::proc::reap::wait_all();
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
