//! Thin entry point: everything lives in the library so tests can reach it.

/// The static build's allocator (Cargo.toml says why not musl's).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;
/// Runs before Rust's runtime (which ignores SIGPIPE) and `main`: the
/// signal setup the launcher was started with, for the main command.
extern "C" fn record_caller_signals() {
    mc_launcher::signals::record_caller();
}

#[used]
#[link_section = ".init_array"]
static RECORD_CALLER_SIGNALS: extern "C" fn() = record_caller_signals;

fn main() {
    // Signals are blocked before anything else runs, so that a stop request
    // arriving while we parse arguments is queued, not lost (PID 1 ignores
    // unblocked signals that have no handler).
    mc_launcher::signals::block_all();
    mc_launcher::crash::install();
    std::process::exit(mc_launcher::app::main());
}
