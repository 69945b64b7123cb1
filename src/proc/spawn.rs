//! Spawning and killing: every process in its own session and process
//! group (the terminal's foreground main: its own group), with the
//! signal mask and dispositions reset, credentials dropped, limits applied.
//!
//! Two ways to start a process. A plain one (no credentials to drop, no
//! rlimits, not the foreground main) is started with `posix_spawn(3)`: libc
//! uses `clone(CLONE_VM|CLONE_VFORK)`, so nothing of the launcher is copied,
//! and the attributes give the child its own process group, an empty signal
//! mask and default dispositions. Anything else is forked, with a pre-exec
//! closure that only makes raw system calls on data prepared in the parent.

use crate::config::model::{Config, Rlimit, Service};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Gid, Pid, Uid};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Credentials resolved in the parent.
#[derive(Debug, Clone)]
pub struct Creds {
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub home: Option<String>,
    pub name: Option<String>,
}

/// Resolve `user` / `uid` / `gid` of a service: a user name brings its uid,
/// primary gid, supplementary groups and home.
pub fn resolve_creds(svc: &Service) -> Result<Option<Creds>, String> {
    if svc.user.is_none() && svc.uid.is_none() && svc.gid.is_none() {
        return Ok(None);
    }
    let mut creds = Creds {
        uid: Uid::current(),
        gid: Gid::current(),
        groups: Vec::new(),
        home: None,
        name: None,
    };
    // Users and groups come from the container's /etc/passwd and
    // /etc/group (crate::users), never from NSS.
    let user = match (&svc.user, svc.uid) {
        (Some(name), _) => Some(
            crate::users::user_by_name(name)
                .map_err(|e| format!("cannot look up user {name}: {e}"))?
                .ok_or_else(|| format!("no such user: {name}"))?,
        ),
        (None, Some(uid)) => crate::users::user_by_uid(uid).ok().flatten(),
        (None, None) => None,
    };
    if let Some(u) = &user {
        creds.uid = Uid::from_raw(u.uid);
        creds.gid = Gid::from_raw(u.gid);
        creds.home = Some(u.home.to_string_lossy().into_owned());
        creds.name = Some(u.name.clone());
        let gids = crate::users::groups_of(&u.name, u.gid).unwrap_or_else(|_| vec![u.gid]);
        creds.groups = gids.into_iter().map(Gid::from_raw).collect();
    }
    if let Some(uid) = svc.uid {
        creds.uid = Uid::from_raw(uid);
    }
    if let Some(gid) = svc.gid {
        creds.gid = Gid::from_raw(gid);
        if user.is_none() {
            creds.groups = vec![creds.gid];
        }
    }
    if creds.groups.is_empty() {
        creds.groups = vec![creds.gid];
    }
    Ok(Some(creds))
}

/// The `MC_*` variables every process of the launcher gets (README "Configuration reference").
pub fn mc_env(cfg: &Config, service: &str) -> Vec<(String, String)> {
    let p = |x: &std::path::Path| x.to_string_lossy().into_owned();
    let size = super::cgroup::size();
    vec![
        ("MC_PROJECT".into(), cfg.project.clone().unwrap_or_default()),
        ("MC_ROOT".into(), p(&cfg.root)),
        ("MC_PROJECT_DIR".into(), p(&cfg.paths.project)),
        ("MC_PILLAR_DIR".into(), p(&cfg.paths.pillar)),
        ("MC_VOLUME".into(), p(&cfg.paths.volume)),
        ("MC_SERVICE".into(), service.to_string()),
        ("MC_CPUS".into(), size.cpus.to_string()),
        (
            "MC_MEMORY_MAX".into(),
            size.memory_max.map(|m| m.to_string()).unwrap_or_default(),
        ),
    ]
}

/// Where a child's stdout/stderr go.
pub enum Out {
    Inherit,
    Null,
    Pipe(OwnedFd),
}

impl Out {
    fn stdio(self) -> Stdio {
        match self {
            Out::Inherit => Stdio::inherit(),
            Out::Null => Stdio::null(),
            Out::Pipe(fd) => Stdio::from(fd),
        }
    }
}

/// Options of one spawn, beyond the argv.
pub struct SpawnOpts<'a> {
    pub argv: &'a [String],
    pub env: Vec<(String, String)>,
    pub copy_env: bool,
    pub working_dir: Option<&'a std::path::Path>,
    pub creds: Option<&'a Creds>,
    pub rlimits: &'a [Rlimit],
    pub stdout: Out,
    pub stderr: Out,
    /// Give the terminal to the child's process group (the main service
    /// when stdin is a terminal).
    pub foreground: bool,
    pub stdin_null: bool,
    /// The main command: it keeps the caller's ignored and blocked signals
    /// (tini's contract); every other process starts with the default
    /// dispositions and an empty mask.
    pub caller_signals: bool,
}

/// Build the environment for a service process, lowest first (the
/// launcher's own comes under it with `copy_env`): HOME/USER, the `MC_*`
/// variables, the env files (top level, then the service's), `env`, the
/// secrets, and `CREDENTIALS_DIRECTORY`.
pub fn service_env(
    cfg: &Config,
    svc: &Service,
    creds: Option<&Creds>,
    files: &super::envfile::FileEnv,
    credentials: Option<&Path>,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if let Some(c) = creds {
        if let Some(home) = &c.home {
            env.insert("HOME".into(), home.clone());
        }
        if let Some(name) = &c.name {
            env.insert("USER".into(), name.clone());
            env.insert("LOGNAME".into(), name.clone());
        }
    }
    for (k, v) in mc_env(cfg, &svc.name) {
        env.insert(k, v);
    }
    for (k, v) in &files.files {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in &svc.env {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in &files.secrets {
        env.insert(k.clone(), v.clone());
    }
    if let Some(dir) = credentials {
        env.insert(
            "CREDENTIALS_DIRECTORY".into(),
            dir.to_string_lossy().into_owned(),
        );
    }
    env.into_iter().collect()
}

/// Spawn a process in a new process group. Returns its pid.
pub fn spawn(opts: SpawnOpts<'_>) -> io::Result<i32> {
    let Some((prog, args)) = opts.argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    if plain(&opts) {
        return posix_spawn(opts);
    }
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if !opts.copy_env {
        cmd.env_clear();
    }
    cmd.envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(dir) = opts.working_dir {
        cmd.current_dir(dir);
    }
    if opts.stdin_null {
        cmd.stdin(Stdio::null());
    }
    cmd.stdout(opts.stdout.stdio());
    cmd.stderr(opts.stderr.stdio());
    // The terminal's foreground process must stay in the launcher's
    // session; anything else gets a session of its own (see `Attr::service`).
    if opts.foreground {
        cmd.process_group(0);
    }
    let creds = opts.creds.cloned();
    let rlimits = opts.rlimits.to_vec();
    let foreground = opts.foreground;
    let caller_signals = opts.caller_signals;
    // SAFETY: the closure runs between fork and exec; it makes only raw
    // system calls on data prepared above, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if foreground {
                // SIGTTOU is still ignored here (inherited), so this works
                // from a background group; the reset below restores it.
                let _ = nix::unistd::tcsetpgrp(stdin_fd(), nix::unistd::getpid());
            }
            if !foreground {
                nix::unistd::setsid().map_err(io::Error::from)?;
            }
            crate::signals::reset_for_child(caller_signals)?;
            for r in &rlimits {
                nix::sys::resource::setrlimit(r.resource, r.value, r.value)
                    .map_err(io::Error::from)?;
            }
            if let Some(c) = &creds {
                if Uid::effective().is_root() {
                    nix::unistd::setgroups(&c.groups).map_err(io::Error::from)?;
                }
                nix::unistd::setgid(c.gid).map_err(io::Error::from)?;
                nix::unistd::setuid(c.uid).map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| explain_rlimit(e, opts.rlimits))?;
    Ok(child.id() as i32)
}

/// A start refused because a limit is above the hard limit, which only a
/// privileged launcher may raise: say which, and how to fix it.
fn explain_rlimit(e: io::Error, rlimits: &[Rlimit]) -> io::Error {
    if e.raw_os_error() != Some(nix::libc::EPERM) {
        return e;
    }
    for r in rlimits {
        if let Ok((_, hard)) = nix::sys::resource::getrlimit(r.resource) {
            if r.value > hard {
                return io::Error::new(
                    e.kind(),
                    format!(
                        "limit {:?} = {} is above the hard limit {hard}, which the launcher may not raise (docker run --ulimit, or CAP_SYS_RESOURCE)",
                        r.resource, r.value
                    ),
                );
            }
        }
    }
    e
}

/// Whether `posix_spawn` can do all of it: no work that needs code between
/// fork and exec (credentials, rlimits, tcsetpgrp), and pipe ends that are
/// not themselves 0, 1 or 2 (so the dup2 actions cannot overwrite each other).
fn plain(opts: &SpawnOpts<'_>) -> bool {
    let low = |o: &Out| matches!(o, Out::Pipe(fd) if fd.as_raw_fd() <= 2);
    opts.creds.is_none()
        && opts.rlimits.is_empty()
        && !opts.foreground
        && !low(&opts.stdout)
        && !low(&opts.stderr)
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in an argument or environment variable",
        )
    })
}

/// `errno`-style return of the posix_spawn family.
fn check(rc: nix::libc::c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// A `posix_spawn_file_actions_t`, destroyed on drop.
struct Actions(MaybeUninit<nix::libc::posix_spawn_file_actions_t>);

impl Actions {
    fn new() -> io::Result<Actions> {
        let mut a = Actions(MaybeUninit::uninit());
        // SAFETY: init writes the object it is given.
        check(unsafe { nix::libc::posix_spawn_file_actions_init(a.0.as_mut_ptr()) })?;
        Ok(a)
    }
    fn ptr(&mut self) -> *mut nix::libc::posix_spawn_file_actions_t {
        self.0.as_mut_ptr()
    }
    fn dup2(&mut self, fd: &OwnedFd, to: i32) -> io::Result<()> {
        // SAFETY: an initialised object; `fd` outlives the spawn (the
        // caller owns it until posix_spawn has returned).
        check(unsafe {
            nix::libc::posix_spawn_file_actions_adddup2(self.ptr(), fd.as_raw_fd(), to)
        })
    }
    fn dev_null(&mut self, to: i32, flags: nix::libc::c_int) -> io::Result<()> {
        const DEV_NULL: &CStr = c"/dev/null";
        // SAFETY: an initialised object; the path is a static C string.
        check(unsafe {
            nix::libc::posix_spawn_file_actions_addopen(self.ptr(), to, DEV_NULL.as_ptr(), flags, 0)
        })
    }
    fn out(&mut self, out: &Out, to: i32) -> io::Result<()> {
        match out {
            Out::Inherit => Ok(()),
            Out::Null => self.dev_null(to, nix::libc::O_WRONLY),
            Out::Pipe(fd) => self.dup2(fd, to),
        }
    }
    fn chdir(&mut self, dir: &CStr) -> io::Result<()> {
        // SAFETY: an initialised object; libc copies the path.
        check(unsafe { nix::libc::posix_spawn_file_actions_addchdir_np(self.ptr(), dir.as_ptr()) })
    }
}

impl Drop for Actions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { nix::libc::posix_spawn_file_actions_destroy(self.0.as_mut_ptr()) };
    }
}

/// A `posix_spawnattr_t`, destroyed on drop.
struct Attr(MaybeUninit<nix::libc::posix_spawnattr_t>);

impl Attr {
    /// A session (and process group) of its own; an empty signal mask and every signal at its
    /// default disposition, or for the main command (`caller`) the
    /// caller's mask and ignored signals (those are still ignored in the
    /// launcher, which only ever ignores signals, and exec keeps an
    /// ignored signal ignored). Caught signals are reset by exec itself.
    fn service(caller: bool) -> io::Result<Attr> {
        use nix::libc;
        let (mask, ignored) = if caller {
            crate::signals::caller_setup()
        } else {
            (0, 0)
        };
        let mut a = Attr(MaybeUninit::uninit());
        let p = a.0.as_mut_ptr();
        let mask = crate::signals::sigset_of(mask);
        let defaults = crate::signals::ALL_SIGNALS & !ignored;
        let dfl = crate::signals::sigset_of(defaults);
        // glibc's spawn child sets its two internal signals (32 and 33) to
        // SIG_IGN unless they are in this set, and exec keeps an ignored
        // signal ignored; its sigaddset refuses them, so they are marked by
        // hand (sigset_t is a plain bit array: bit N-1 of the first word is
        // signal N). musl leaves them at SIG_DFL.
        #[cfg(target_env = "gnu")]
        let dfl = {
            let mut d = dfl;
            // SAFETY: sigset_t starts with an array of at least one u64.
            unsafe {
                let first = (&mut d as *mut libc::sigset_t).cast::<u64>();
                *first |= defaults & ((1u64 << 31) | (1u64 << 32));
            }
            d
        };
        // SAFETY: every object is initialised by its init call before use;
        // the sets are plain data copied into the attributes.
        unsafe {
            check(libc::posix_spawnattr_init(p))?;
            check(libc::posix_spawnattr_setsigmask(p, &mask))?;
            check(libc::posix_spawnattr_setsigdefault(p, &dfl))?;
            // A session of its own (its process group too): no process of
            // another service can setpgid() into its group.
            let flags = libc::POSIX_SPAWN_SETSID as libc::c_int
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(p, flags as libc::c_short))?;
        }
        Ok(a)
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in `service`, destroyed once.
        unsafe { nix::libc::posix_spawnattr_destroy(self.0.as_mut_ptr()) };
    }
}

/// The child's environment: the launcher's (with `copy_env`), then `env`
/// over it.
fn child_env(copy_env: bool, env: &[(String, String)]) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = if copy_env {
        std::env::vars_os().collect()
    } else {
        Vec::new()
    };
    for (k, v) in env {
        match out
            .iter_mut()
            .find(|(ok, _)| ok.as_os_str() == OsStr::new(k))
        {
            Some(slot) => slot.1 = OsString::from(v),
            None => out.push((OsString::from(k), OsString::from(v))),
        }
    }
    out
}

/// Where `prog` (no `/` in it) is on `path`, as execvp(3) would pick it:
/// the first executable regular file; `EACCES` if only non-executable ones
/// exist, `ENOENT` if none. Relative entries are taken from `cwd`.
fn search_path(prog: &str, path: &OsStr, cwd: Option<&Path>) -> io::Result<PathBuf> {
    let mut denied = false;
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = Path::new(OsStr::from_bytes(if dir.is_empty() { b"." } else { dir }));
        let cand = match cwd {
            Some(c) if dir.is_relative() => c.join(dir).join(prog),
            _ => dir.join(prog),
        };
        match std::fs::metadata(&cand) {
            Ok(m) if m.is_file() => {
                if nix::unistd::access(&cand, nix::unistd::AccessFlags::X_OK).is_ok() {
                    return Ok(cand);
                }
                denied = true;
            }
            Ok(_) => denied = true,
            Err(_) => {}
        }
    }
    Err(io::Error::from_raw_os_error(if denied {
        nix::libc::EACCES
    } else {
        nix::libc::ENOENT
    }))
}

/// The plain path: one `posix_spawn`, no fork, no code of ours in the child.
fn posix_spawn(opts: SpawnOpts<'_>) -> io::Result<i32> {
    let Some(prog) = opts.argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let argv = opts
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<Vec<CString>>>()?;
    let env = child_env(opts.copy_env, &opts.env);
    let envp = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(&kv)
        })
        .collect::<io::Result<Vec<CString>>>()?;
    // A bare name is looked up on the child's PATH (execvp's default when
    // it has none). posix_spawnp would search the launcher's own PATH, so
    // it is used only when the two are the same.
    let child_path = env
        .iter()
        .find(|(k, _)| k.as_os_str() == OsStr::new("PATH"))
        .map(|(_, v)| v.clone());
    let (use_p, path) = if prog.contains('/') {
        (false, cstring(prog.as_bytes())?)
    } else if child_path.is_some() && child_path == std::env::var_os("PATH") {
        (true, cstring(prog.as_bytes())?)
    } else {
        let search = child_path.unwrap_or_else(|| OsString::from("/usr/local/bin:/bin:/usr/bin"));
        let found = search_path(prog, &search, opts.working_dir)?;
        (false, cstring(found.as_os_str().as_bytes())?)
    };

    let mut actions = Actions::new()?;
    actions.out(&opts.stdout, 1)?;
    actions.out(&opts.stderr, 2)?;
    if opts.stdin_null {
        actions.dev_null(0, nix::libc::O_RDONLY)?;
    }
    if let Some(dir) = opts.working_dir {
        actions.chdir(&cstring(dir.as_os_str().as_bytes())?)?;
    }
    let attr = Attr::service(opts.caller_signals)?;

    let mut argv_p: Vec<*mut nix::libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_p.push(std::ptr::null_mut());
    let mut envp_p: Vec<*mut nix::libc::c_char> =
        envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_p.push(std::ptr::null_mut());
    let mut pid: nix::libc::pid_t = 0;
    // SAFETY: every pointer is to a live, NUL-terminated C string or
    // initialised spawn object owned by this frame; the arrays end in NULL;
    // libc does not write through argv or envp.
    let rc = unsafe {
        let f = if use_p {
            nix::libc::posix_spawnp
        } else {
            nix::libc::posix_spawn
        };
        f(
            &mut pid,
            path.as_ptr(),
            actions.ptr(),
            attr.0.as_ptr(),
            argv_p.as_ptr(),
            envp_p.as_ptr(),
        )
    };
    check(rc)?;
    // The pipe ends (opts.stdout/stderr) close here, now the child has its copies.
    drop(opts);
    Ok(pid)
}

/// Exit status the launcher reports when CMD cannot be started, with why.
pub fn exec_error_status(err: &io::Error) -> crate::error::Outcome {
    match err.kind() {
        io::ErrorKind::NotFound => crate::error::Outcome::NotFound,
        _ => crate::error::Outcome::NotExecutable,
    }
}

/// Send `sig` to the process group led by `pid` (falling back to the
/// process alone if the group is already gone).
pub fn signal_group(pid: i32, sig: Signal) {
    if killpg(Pid::from_raw(pid), sig).is_err() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// Standard input, as the fd it is: `std::io::stdin()` would set up (and
/// allocate) std's buffered reader on first use, which must not happen
/// between fork and exec, and which the launcher never reads through.
pub fn stdin_fd() -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: fd 0 is open for the life of the process (the launcher never
    // closes it); a closed one only makes the calls on it fail.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn path_search_is_execvps() {
        let d = std::env::temp_dir().join(format!("mcl-spawn-path-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for sub in ["a", "b", "c/tool"] {
            std::fs::create_dir_all(d.join(sub)).expect("dir");
        }
        let file = |p: &str, mode: u32| {
            std::fs::write(d.join(p), "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(d.join(p), std::fs::Permissions::from_mode(mode))
                .expect("chmod");
        };
        file("a/tool", 0o644); // not executable: skipped
        file("b/tool", 0o755);
        file("a/only-data", 0o644);
        let path = |dirs: &[&str]| {
            OsString::from(
                dirs.iter()
                    .map(|x| d.join(x).display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            )
        };
        // c/tool is a directory, a/tool not executable: b/tool wins.
        let found = search_path("tool", &path(&["c", "a", "b"]), None).expect("found");
        assert_eq!(found, d.join("b/tool"));
        let err = search_path("only-data", &path(&["a", "b"]), None).expect_err("denied");
        assert_eq!(err.raw_os_error(), Some(nix::libc::EACCES));
        let err = search_path("nope", &path(&["a", "b"]), None).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // A relative entry is taken from the child's working directory.
        let found = search_path("tool", OsStr::new("b"), Some(&d)).expect("relative");
        assert_eq!(found, d.join("b/tool"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn service_env_overrides_the_copied_one() {
        let env = child_env(false, &[("A".into(), "1".into()), ("B".into(), "2".into())]);
        assert_eq!(env.len(), 2);
        let copied = child_env(true, &[("PATH".into(), "/x".into())]);
        let paths: Vec<_> = copied.iter().filter(|(k, _)| k == "PATH").collect();
        assert_eq!(paths.len(), 1, "one PATH, the service's");
        assert_eq!(
            paths.first().map(|(_, v)| v.as_os_str()),
            Some(OsStr::new("/x"))
        );
    }
}
