//! Preflight of the prepare phase (README "Read-only and
//! non-root containers").
//!
//! From the config and the volume it computes every path the phase is going
//! to write — the pillar target's directory when an override is to be
//! installed or the image default restored, the state dir, `~user/.ssh`
//! when the keys change, sshd's host keys and run directory, the template
//! destinations, the prepopulate destinations — and tests each without
//! writing anything: `statvfs` for a read-only mount, `eaccess` (the
//! effective ids, as `faccessat(AT_EACCESS)`) for permissions. What cannot
//! work becomes one message that names every such path, what it needs there
//! and the `docker run` flag or volume ownership that fixes it: `run` and
//! `prepare` stop with it (exit 78, like `check`, before the step writes
//! anything), `check` prints the very same text. Each step's planner is
//! here (`pillar`, `ssh`, `reconfigure`, `prepopulate`: what it writes),
//! called through `step::plan`; `phase::plan` runs them for both.
//!
//! It also picks the state dir: when the configured one cannot be written
//! (`--read-only`, a non-root `--user`), the fallback is seeded with the
//! copy of the image's default pillar that an image keeps in the configured
//! state dir at build time, so that a tmpfs over the pillar directory never
//! loses the image default.

use crate::config::model::{Config, SshdMode, StepKind};
use crate::fsutil;
use nix::unistd::{AccessFlags, Uid};
use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The image's default pillar, as kept in the state dir (README "The makina layout").
pub const IMAGE_PILLAR: &str = "image-pillar.sls";

/// The state dir the config names, when `use_state_dir` moved to a fallback.
static CONFIGURED_STATE: OnceLock<PathBuf> = OnceLock::new();

/// Pick the state dir `run` and `prepare` use: the configured one, or a
/// writable fallback (`fsutil::usable_state_dir`). A fallback starts with
/// the copy of the image's default pillar kept in the configured dir (an
/// image writes it at build time), so the pillar step can restore it.
pub fn use_state_dir(cfg: &mut Config) {
    let configured = cfg.paths.state.clone();
    let used = fsutil::usable_state_dir(&configured);
    if used != configured {
        let _ = CONFIGURED_STATE.set(configured.clone());
        seed_image_pillar(&configured, &used);
    }
    cfg.paths.state = used;
}

fn seed_image_pillar(configured: &Path, used: &Path) {
    let from = configured.join(IMAGE_PILLAR);
    let to = used.join(IMAGE_PILLAR);
    if to.exists() {
        return;
    }
    match std::fs::read(&from) {
        Ok(bytes) => match fsutil::write_atomic(&to, &bytes, 0o600, None) {
            Ok(()) => log::info!(
                "pillar: the image default pillar comes from the copy the image keeps in {}",
                from.display()
            ),
            Err(e) => log::warn!("pillar: cannot copy the image default pillar: {e}"),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!(
            "pillar: cannot read the image's copy of its default pillar {}: {e}",
            from.display()
        ),
    }
}

/// Why a path cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    ReadOnly,
    /// Permissions: the owner and mode of the directory.
    Denied {
        owner: u32,
        mode: u32,
    },
    /// Writable, but its mode must be set and only its owner (or root) may.
    NotOwner {
        owner: u32,
    },
    /// A mount hides the image's file and no copy of it can be read.
    Hidden(String),
    Other(String),
}

/// How an operator fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// A `docker run` flag.
    Flag(String),
    /// The data volume must belong to the launcher's uid.
    VolumeOwner,
    /// Anything else, in words.
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The directory the phase writes in (or creates).
    pub path: PathBuf,
    /// The existing directory tested: `path`, or the ancestor in which
    /// `path` would be created.
    pub at: PathBuf,
    pub why: Why,
    /// What the phase writes there.
    pub needed: String,
    pub fix: Fix,
}

/// What the preflight found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// Notes that go with the fixes (where the image default comes from).
    notes: Vec<String>,
    euid: u32,
    volume: PathBuf,
    /// No step has written anything yet.
    first: bool,
    /// The pillar step of this plan is going to change the pillar.
    pillar_changes: bool,
}

impl Report {
    pub(super) fn new(ctx: &Ctx, first: bool) -> Report {
        Report {
            euid: ctx.euid.as_raw(),
            volume: ctx.cfg.paths.volume.clone(),
            first,
            ..Report::default()
        }
    }

    fn add(&mut self, p: Problem) {
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    fn note(&mut self, n: String) {
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    /// The one message, or `None` when every path can be written.
    pub fn message(&self) -> Option<String> {
        if self.problems.is_empty() {
            return None;
        }
        let who = if self.euid == 0 {
            String::new()
        } else {
            format!(" by uid {}", self.euid)
        };
        let mut out = format!(
            "cannot prepare this container: {} path(s) that the prepare phase must write cannot be written{who}{}:",
            self.problems.len(),
            if self.first { " (nothing was written)" } else { "" }
        );
        for p in &self.problems {
            let why = why_text(&p.why, self.euid);
            let what = if p.at == p.path {
                why
            } else {
                format!("cannot be created in {}: {why}", p.at.display())
            };
            out.push_str(&format!(
                "\n  {}: {what}; needed {}",
                p.path.display(),
                p.needed
            ));
        }
        let flags: Vec<&str> = dedup(self.problems.iter().filter_map(|p| match &p.fix {
            Fix::Flag(f) => Some(f.as_str()),
            _ => None,
        }));
        if !flags.is_empty() {
            out.push_str(&format!("\n  fix: add to docker run: {}", flags.join(" ")));
        }
        if self.problems.iter().any(|p| p.fix == Fix::VolumeOwner) {
            let (u, v) = (self.euid, self.volume.display());
            out.push_str(&format!(
                "\n  fix: give the data volume to uid {u}: `chown -R {u}` its directory on the host, or for a named volume \
                 `docker run --rm -v VOLUME:{v} --entrypoint chown IMAGE -R {u} {v}`"
            ));
        }
        for t in dedup(self.problems.iter().filter_map(|p| match &p.fix {
            Fix::Text(t) => Some(t.as_str()),
            _ => None,
        })) {
            out.push_str(&format!("\n  fix: {t}"));
        }
        if !flags.is_empty() {
            for n in &self.notes {
                out.push_str(&format!("\n  ({n})"));
            }
        }
        Some(out)
    }
}

fn dedup<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    items.filter(|i| seen.insert(*i)).collect()
}

fn why_text(why: &Why, euid: u32) -> String {
    match why {
        Why::ReadOnly => "read-only filesystem".into(),
        Why::Denied { owner, mode } => format!(
            "owned by uid {owner} with mode {:04o}, not writable by uid {euid}",
            mode & 0o7777
        ),
        Why::NotOwner { owner } => {
            format!(
                "owned by uid {owner}: uid {euid} may not set its mode (it needs owner uid {euid})"
            )
        }
        Why::Hidden(s) | Why::Other(s) => s.clone(),
    }
}

/// What the preflight works from.
pub struct Ctx<'a> {
    cfg: &'a Config,
    /// The state dir the config names (where an image keeps its copy).
    configured: PathBuf,
    /// The state dir in use, or the one `run` would use; `None`: none is writable.
    state: Option<PathBuf>,
    euid: Uid,
}

/// Where the image's default pillar can be read from.
enum Copy {
    Available(PathBuf, Vec<u8>),
    Unreadable(PathBuf, String),
    Missing,
}

impl Ctx<'_> {
    /// As `run` plans: from the state dir in use (`use_state_dir`).
    pub(super) fn for_run(cfg: &Config) -> Ctx<'_> {
        let configured = CONFIGURED_STATE
            .get()
            .cloned()
            .unwrap_or_else(|| cfg.paths.state.clone());
        let state = probe(&existing(&cfg.paths.state))
            .is_none()
            .then(|| cfg.paths.state.clone());
        Ctx::new(cfg, configured, state)
    }

    /// As `check` plans: from the configured state dir, or the fallback
    /// `run` would take.
    pub(super) fn for_check(cfg: &Config) -> Ctx<'_> {
        let configured = cfg.paths.state.clone();
        let mut candidates = vec![configured.clone()];
        candidates.extend(fsutil::state_fallbacks());
        let state = candidates
            .into_iter()
            .find(|c| probe(&existing(c)).is_none());
        Ctx::new(cfg, configured, state)
    }

    fn new(cfg: &Config, configured: PathBuf, state: Option<PathBuf>) -> Ctx<'_> {
        Ctx {
            cfg,
            configured,
            state,
            euid: Uid::effective(),
        }
    }

    /// The state dir in use is a fallback: what it means.
    pub(super) fn fallback_warning(&self) -> Option<String> {
        match &self.state {
            Some(s) if *s != self.configured => Some(format!(
                "state dir {} is not writable: {} would be used (what it keeps lasts only as long as it)",
                self.configured.display(),
                s.display()
            )),
            _ => None,
        }
    }

    fn image_copy(&self) -> Copy {
        let mut places = vec![self.configured.join(IMAGE_PILLAR)];
        if let Some(s) = self.state.as_ref().filter(|s| **s != self.configured) {
            places.push(s.join(IMAGE_PILLAR));
        }
        let mut unreadable = None;
        for p in places {
            match std::fs::read(&p) {
                Ok(bytes) => return Copy::Available(p, bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => unreadable = unreadable.or(Some((p, e.to_string()))),
            }
        }
        match unreadable {
            Some((p, e)) => Copy::Unreadable(p, e),
            None => Copy::Missing,
        }
    }

    fn in_volume(&self, p: &Path) -> bool {
        p.starts_with(&self.cfg.paths.volume)
    }

    /// `--tmpfs DIR`, owned by the launcher's uid when it is not root.
    fn tmpfs(&self, dir: &Path, mode: Option<&str>) -> String {
        let mut opts = Vec::new();
        if !self.euid.is_root() {
            opts.push(format!("uid={}", self.euid));
        }
        if let Some(m) = mode {
            opts.push(format!("mode={m}"));
        }
        if opts.is_empty() {
            format!("--tmpfs {}", dir.display())
        } else {
            format!("--tmpfs {}:{}", dir.display(), opts.join(","))
        }
    }

    /// The fix for a path in the data volume, when there is one.
    fn volume_fix(&self, why: &Why) -> Fix {
        let v = &self.cfg.paths.volume;
        match why {
            Why::ReadOnly if is_mount_point(v) => Fix::Text(format!(
                "the data volume {} is mounted read-only: mount it read-write (no `:ro`)",
                v.display()
            )),
            Why::ReadOnly => Fix::Text(format!(
                "mount a writable volume on {}: docker run -v VOLUME:{}",
                v.display(),
                v.display()
            )),
            _ => Fix::VolumeOwner,
        }
    }

    /// The fix for a destination a step writes: in the data volume, or
    /// outside it, where the image must make it writable.
    fn dest_fix(&self, at: &Path, why: &Why) -> Fix {
        if self.in_volume(at) {
            self.volume_fix(why)
        } else {
            outside_fix(self, at, why)
        }
    }

    fn keep_copy_text(&self) -> String {
        format!(
            "keep a copy of the default pillar in the image, as its last build step: \
             RUN mkdir -p {c} && cp -p {t} {c}/{IMAGE_PILLAR}",
            c = self.configured.display(),
            t = self.cfg.pillar.target.display()
        )
    }
}

/// The control socket falls back from path to path; with none usable the
/// launcher still runs, but `ctl` (and a `HEALTHCHECK` using it) cannot
/// reach it: a warning, with the fix.
pub(super) fn control_socket(ctx: &Ctx, r: &mut Report) {
    let paths = crate::ctl::proto::candidate_paths(ctx.cfg);
    let usable = paths
        .iter()
        .any(|p| p.parent().is_some_and(|d| probe(&existing(d)).is_none()));
    if !usable {
        let tried: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        r.warnings.push(format!(
            "control socket: none of {} can be created: `mc-launcher ctl` and a HEALTHCHECK using it will not reach the launcher (add to docker run: --tmpfs /run)",
            tried.join(", ")
        ));
    }
}

/// The state dir must be written: `None` means nothing is writable.
fn need_state(ctx: &Ctx, r: &mut Report, needed: &str) {
    if ctx.state.is_none() {
        let mut tried = vec![ctx.configured.display().to_string()];
        tried.extend(
            fsutil::state_fallbacks()
                .iter()
                .map(|p| p.display().to_string()),
        );
        r.add(Problem {
            path: ctx.configured.clone(),
            at: ctx.configured.clone(),
            why: Why::Other(format!(
                "not writable, and neither is any fallback ({})",
                tried.join(", ")
            )),
            needed: needed.to_string(),
            fix: Fix::Flag("--tmpfs /run".into()),
        });
    }
}

/// Step 1: the pillar target's directory, when it is going to change.
pub(super) fn pillar(ctx: &Ctx, r: &mut Report) {
    r.pillar_changes = pillar_writes(ctx, r);
}

/// Whether the pillar target is going to change.
fn pillar_writes(ctx: &Ctx, r: &mut Report) -> bool {
    let cfg = ctx.cfg;
    let target = &cfg.pillar.target;
    let Some(dir) = target.parent() else {
        return false;
    };
    let current = std::fs::read(target).ok();
    let copy = ctx.image_copy();
    let override_text = super::pillar::override_text(cfg);
    let valid = override_text
        .as_ref()
        .filter(|t| super::pillar::validate(&cfg.pillar.source, t).is_ok());

    // A mount over the pillar dir hides the image's init.sls: without a
    // copy of it, the image default would be gone.
    if current.is_none() && dir.is_dir() && is_mount_point(dir) {
        let why = match &copy {
            Copy::Available(..) => None,
            Copy::Unreadable(p, e) => Some(Why::Hidden(format!(
                "a mount hides the image's {}, and its copy {} cannot be read ({e})",
                file_name(target),
                p.display()
            ))),
            Copy::Missing => Some(Why::Hidden(format!(
                "a mount hides the image's {}, and the image keeps no copy of it in {}",
                file_name(target),
                ctx.configured.join(IMAGE_PILLAR).display()
            ))),
        };
        if let Some(why) = why {
            r.add(Problem {
                path: dir.to_path_buf(),
                at: dir.to_path_buf(),
                why,
                needed: "to keep the image's default pillar (it would be lost)".into(),
                fix: Fix::Text(format!(
                    "{}, or do not mount over {}",
                    ctx.keep_copy_text(),
                    dir.display()
                )),
            });
            return false;
        }
    }
    // First start: the image's own pillar is saved in the state dir.
    let saved_in_state = ctx
        .state
        .as_ref()
        .is_some_and(|s| s.join(IMAGE_PILLAR).exists());
    if current.is_some() && !saved_in_state && !matches!(copy, Copy::Available(..)) {
        need_state(ctx, r, "to keep a copy of the image's default pillar");
    }
    let (writes, needed) = match valid {
        Some(text) => (
            current.as_deref() != Some(text.as_bytes()),
            format!(
                "to install the pillar override {}",
                cfg.pillar.source.display()
            ),
        ),
        None => (
            match &copy {
                Copy::Available(_, bytes) => current.as_deref() != Some(bytes.as_slice()),
                _ => false,
            },
            "to restore the image's default pillar".to_string(),
        ),
    };
    if writes {
        let at = existing(dir);
        if let Some(why) = probe(&at) {
            let fix = if ctx.in_volume(&at) {
                ctx.volume_fix(&why)
            } else {
                match &copy {
                    Copy::Available(p, _) => {
                        r.note(format!(
                            "with a tmpfs on {}, the image's default pillar comes back from {} at every start",
                            dir.display(),
                            p.display()
                        ));
                        Fix::Flag(ctx.tmpfs(dir, None))
                    }
                    Copy::Unreadable(p, e) => Fix::Text(format!(
                        "the image's copy of its default pillar {} cannot be read ({e}), so a tmpfs on {} would lose it: \
                         remove the override from the volume, or make the copy readable in the image",
                        p.display(),
                        dir.display()
                    )),
                    Copy::Missing => Fix::Text(format!(
                        "remove the override from the volume; or {}, then add to docker run: {}",
                        ctx.keep_copy_text(),
                        ctx.tmpfs(dir, None)
                    )),
                }
            };
            r.add(Problem {
                path: dir.to_path_buf(),
                at,
                why,
                needed,
                fix,
            });
        }
    }
    writes
}

/// Step 2: `~user/.ssh` when the managed block changes; for sshd, its host
/// keys dir, the state dir (its config) and `/run/sshd`.
pub(super) fn ssh(ctx: &Ctx, r: &mut Report) {
    let cfg = ctx.cfg;
    let root = ctx.euid.is_root();
    let Some(user) = crate::users::user_by_name(&cfg.ssh.user).ok().flatten() else {
        return; // the step says so itself
    };
    let set = super::ssh::collect(&cfg.ssh);
    if !root && user.uid != ctx.euid.as_raw() {
        // The step is skipped with a warning: what can work does.
        return;
    }
    let home = cfg.ssh.home.clone().unwrap_or_else(|| user.home.clone());
    let dir = home.join(".ssh");
    let existing_keys = match std::fs::read_to_string(dir.join("authorized_keys")) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(String::new()),
        Err(_) => None, // the step reports it
    };
    let at = existing(&dir);
    if let Some(old) = existing_keys {
        let changes = super::ssh::merge_block(&old, &set.keys) != old;
        match probe(&at) {
            Some(why) if changes => {
                let fix = if ctx.in_volume(&at) {
                    ctx.volume_fix(&why)
                } else {
                    Fix::Flag(ctx.tmpfs(&dir, Some("0700")))
                };
                let needed = if set.keys.is_empty() {
                    format!(
                        "to remove the SSH keys of {} revoked in the volume",
                        user.name
                    )
                } else {
                    format!("to install {} SSH key(s) for {}", set.keys.len(), user.name)
                };
                r.add(Problem {
                    path: dir.clone(),
                    at: at.clone(),
                    why,
                    needed,
                    fix,
                });
            }
            Some(why) if cfg.ssh.watch => {
                let why = why_text(&why, ctx.euid.as_raw());
                let what = if at == dir {
                    why
                } else {
                    format!("cannot be created in {}: {why}", at.display())
                };
                r.warnings.push(format!(
                    "ssh: {}: {what}: keys added to the volume while running will not be installed (add to docker run: {})",
                    dir.display(),
                    ctx.tmpfs(&dir, Some("0700"))
                ))
            }
            _ => {}
        }
    }
    if !root {
        return; // sshd is skipped with a warning
    }
    let runs = match cfg.ssh.sshd {
        SshdMode::Never => false,
        SshdMode::Always => true,
        SshdMode::Auto => {
            !set.keys.is_empty()
                && (which::which("sshd").is_ok() || which::which("/usr/sbin/sshd").is_ok())
        }
    };
    if !runs {
        return;
    }
    let hk = &cfg.ssh.host_keys_dir;
    let at = existing(hk);
    if let Some(why) = probe(&at) {
        let fix = if ctx.in_volume(&at) {
            ctx.volume_fix(&why)
        } else {
            Fix::Text(format!(
                "make {} writable, or set ssh.host_keys_dir in the data volume (the default)",
                hk.display()
            ))
        };
        r.add(Problem {
            path: hk.clone(),
            at,
            why,
            needed: "to keep sshd's host keys".into(),
            fix,
        });
    }
    need_state(ctx, r, "to write sshd's config");
    let run_sshd = Path::new("/run/sshd");
    if !run_sshd.is_dir() {
        let at = existing(run_sshd);
        if let Some(why) = probe(&at) {
            r.add(Problem {
                path: run_sshd.to_path_buf(),
                at,
                why,
                needed: "to create /run/sshd, sshd's privilege separation directory".into(),
                fix: Fix::Flag("--tmpfs /run".into()),
            });
        }
    }
}

/// Step 3: the template destinations, unless `skip_unchanged` will skip
/// the phase (salt and command steps write where they like: not knowable).
pub(super) fn reconfigure(ctx: &Ctx, r: &mut Report) {
    let cfg = ctx.cfg;
    let rc = &cfg.reconfigure;
    let templates = rc
        .steps
        .iter()
        .any(|s| matches!(s.kind, StepKind::Template { .. }));
    if !templates {
        return;
    }
    let unchanged = |state: &PathBuf| super::reconfigure::unchanged(cfg, state);
    if rc.skip_unchanged && !r.pillar_changes && ctx.state.as_ref().is_some_and(unchanged) {
        return;
    }
    for step in &rc.steps {
        let StepKind::Template { dest, .. } = &step.kind else {
            continue;
        };
        let Some(parent) = dest.parent() else {
            continue;
        };
        let at = existing(parent);
        if let Some(why) = probe(&at) {
            let fix = ctx.dest_fix(&at, &why);
            r.add(Problem {
                path: parent.to_path_buf(),
                at,
                why,
                needed: format!("by {} to write {}", step.name, dest.display()),
                fix,
            });
        }
    }
}

/// A destination outside the volume: the image must make it writable.
fn outside_fix(ctx: &Ctx, dir: &Path, why: &Why) -> Fix {
    let u = ctx.euid;
    match why {
        Why::ReadOnly => Fix::Text(format!(
            "move the destination into the data volume, or mount a tmpfs on {} ({}; it hides what the image has there)",
            dir.display(),
            ctx.tmpfs(dir, None)
        )),
        _ => Fix::Text(format!(
            "move the destination into the data volume, or give {} to uid {u} in the image (RUN chown {u} {})",
            dir.display(),
            dir.display()
        )),
    }
}

/// Step 4: every destination that is going to be filled.
pub(super) fn prepopulate(ctx: &Ctx, r: &mut Report) {
    use super::prepopulate::{dest_state, DestState};
    for item in &ctx.cfg.prepopulate {
        let dest = &item.dest;
        if std::fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink()) {
            continue; // refused by the step itself, with its own message
        }
        match dest_state(dest) {
            Ok(DestState::Empty | DestState::Interrupted) => {}
            _ => continue,
        }
        let at = existing(dest);
        let mut why = probe(&at);
        if why.is_none() && at == *dest && !ctx.euid.is_root() {
            // The copy gives the destination the source's mode.
            if let Ok(md) = std::fs::metadata(dest) {
                if md.uid() != ctx.euid.as_raw() {
                    why = Some(Why::NotOwner { owner: md.uid() });
                }
            }
        }
        if let Some(why) = why {
            let fix = ctx.dest_fix(&at, &why);
            r.add(Problem {
                path: dest.clone(),
                at,
                why,
                needed: format!(
                    "to prepopulate {} from {}",
                    dest.display(),
                    item.src.display()
                ),
                fix,
            });
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// `p` itself when it exists, else its nearest existing ancestor (where
/// the phase would create what is missing).
pub fn existing(p: &Path) -> PathBuf {
    let mut cur = p;
    loop {
        if std::fs::symlink_metadata(cur).is_ok() {
            return cur.to_path_buf();
        }
        match cur.parent() {
            Some(up) if !up.as_os_str().is_empty() => cur = up,
            _ => return PathBuf::from("/"),
        }
    }
}

/// Whether entries can be created in `dir` (an existing path), tested
/// without writing: a read-only mount, then the effective ids' access.
pub fn probe(dir: &Path) -> Option<Why> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    if statvfs(dir).is_ok_and(|s| s.flags().contains(FsFlags::ST_RDONLY)) {
        return Some(Why::ReadOnly);
    }
    match nix::unistd::eaccess(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
        Ok(()) => None,
        Err(nix::errno::Errno::EROFS) => Some(Why::ReadOnly),
        Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => {
            let md = std::fs::metadata(dir).ok();
            Some(Why::Denied {
                owner: md.as_ref().map(|m| m.uid()).unwrap_or(0),
                mode: md.map(|m| m.permissions().mode()).unwrap_or(0),
            })
        }
        Err(nix::errno::Errno::ENOENT) => None, // gone meanwhile: the step says
        Err(e) => Some(Why::Other(e.desc().to_string())),
    }
}

/// Whether `p` is where a filesystem is mounted (a Docker `--tmpfs`,
/// `-v`, `--mount`): /proc/self/mountinfo, else a device change.
pub fn is_mount_point(p: &Path) -> bool {
    let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        return info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| Path::new(&unescape_mount(m)) == real);
    }
    let dev = |q: &Path| std::fs::metadata(q).map(|m| m.dev()).ok();
    match real.parent() {
        Some(up) => dev(&real).is_some() && dev(&real) != dev(up),
        None => false,
    }
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|t| u8::from_str_radix(t, 8).ok())
        });
        match (b.get(i), oct) {
            (Some(b'\\'), Some(c)) => {
                out.push(c);
                i += 4;
            }
            (Some(&c), _) => {
                out.push(c);
                i += 1;
            }
            (None, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mount("/srv/a\\040b"), "/srv/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount("/odd\\04"), "/odd\\04");
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
    }

    #[test]
    fn existing_walks_up() {
        let d = std::env::temp_dir().join(format!("mcl-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        assert_eq!(existing(&d.join("a/b/c")), d);
        assert_eq!(existing(&d), d);
        assert_eq!(probe(&d), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn message_lists_paths_and_one_line_of_flags() {
        let r = Report {
            problems: vec![
                Problem {
                    path: "/srv/p".into(),
                    at: "/srv/p".into(),
                    why: Why::ReadOnly,
                    needed: "to install the pillar override /v/c/pillar.sls".into(),
                    fix: Fix::Flag("--tmpfs /srv/p".into()),
                },
                Problem {
                    path: "/root/.ssh".into(),
                    at: "/root".into(),
                    why: Why::ReadOnly,
                    needed: "to install 1 SSH key(s) for root".into(),
                    fix: Fix::Flag("--tmpfs /root/.ssh:mode=0700".into()),
                },
            ],
            notes: vec!["the default comes back".into()],
            first: true,
            ..Report::default()
        };
        let m = r.message().expect("message");
        assert!(
            m.starts_with("cannot prepare this container: 2 path(s)"),
            "{m}"
        );
        assert!(m.contains("(nothing was written)"), "{m}");
        assert!(
            m.contains("\n  /srv/p: read-only filesystem; needed to install"),
            "{m}"
        );
        assert!(
            m.contains("\n  fix: add to docker run: --tmpfs /srv/p --tmpfs /root/.ssh:mode=0700"),
            "{m}"
        );
        assert!(
            m.contains("\n  /root/.ssh: cannot be created in /root: read-only filesystem; needed"),
            "{m}"
        );
        assert!(m.contains("(the default comes back)"), "{m}");
        assert!(Report::default().message().is_none());
    }
}
