//! Spawning and killing: every process in its own process group, with the
//! signal mask and dispositions reset, credentials dropped, limits applied.
//!
//! Everything a child needs is computed in the parent (`Prepared`), so the
//! code that runs between fork and exec only makes raw system calls.

use crate::config::model::{Config, Rlimit, Service};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Gid, Pid, Uid};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
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

/// The `MC_*` variables every process of the launcher gets (DESIGN §3).
pub fn mc_env(cfg: &Config, service: &str) -> Vec<(String, String)> {
    let p = |x: &std::path::Path| x.to_string_lossy().into_owned();
    vec![
        ("MC_PROJECT".into(), cfg.project.clone().unwrap_or_default()),
        ("MC_ROOT".into(), p(&cfg.root)),
        ("MC_PROJECT_DIR".into(), p(&cfg.paths.project)),
        ("MC_PILLAR_DIR".into(), p(&cfg.paths.pillar)),
        ("MC_VOLUME".into(), p(&cfg.paths.volume)),
        ("MC_SERVICE".into(), service.to_string()),
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
}

/// Build the environment for a service process.
pub fn service_env(cfg: &Config, svc: &Service, creds: Option<&Creds>) -> Vec<(String, String)> {
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
    for (k, v) in &svc.env {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter().collect()
}

/// Spawn a process in a new process group. Returns its pid.
pub fn spawn(opts: SpawnOpts<'_>) -> io::Result<i32> {
    let Some((prog, args)) = opts.argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
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
    cmd.process_group(0);
    let creds = opts.creds.cloned();
    let rlimits = opts.rlimits.to_vec();
    let foreground = opts.foreground;
    // SAFETY: the closure runs between fork and exec; it makes only raw
    // system calls on data prepared above, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if foreground {
                // SIGTTOU is still ignored here (inherited), so this works
                // from a background group; the reset below restores it.
                let _ = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpid());
            }
            crate::signals::reset_for_child()?;
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
    let child = cmd.spawn()?;
    Ok(child.id() as i32)
}

/// Exit status the launcher reports when CMD cannot be started, with why.
pub fn exec_error_status(err: &io::Error) -> i32 {
    match err.kind() {
        io::ErrorKind::NotFound => crate::error::EXIT_NOT_FOUND,
        _ => crate::error::EXIT_NOT_EXECUTABLE,
    }
}

/// Send `sig` to the process group led by `pid` (falling back to the
/// process alone if the group is already gone).
pub fn signal_group(pid: i32, sig: Signal) {
    if killpg(Pid::from_raw(pid), sig).is_err() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}
