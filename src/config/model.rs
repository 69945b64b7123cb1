//! The validated configuration: what the rest of the launcher works from.
//! Built by `config::decode` (from mc-launcher.yml) and `circus` (from INI
//! files); nothing here is raw user text that still needs checking.

use crate::error::Pos;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub mod probe;
pub use probe::{CheckKind, Host, HostPort, HttpUrl, ReadyCheck, CHECK_KINDS, PROBE_KINDS};

/// Where a definition came from, for messages (`file:line:col`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: PathBuf,
    pub pos: Pos,
}

/// A step of the prepare phase, as `--skip` and `MC_SKIP` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrepareStep {
    Pillar,
    Ssh,
    Reconfigure,
    Prepopulate,
}

impl PrepareStep {
    /// Every step, in the order the phase runs them (`prepare::step` holds
    /// what each one plans, does and checks).
    pub const ALL: [PrepareStep; 4] = [
        PrepareStep::Pillar,
        PrepareStep::Ssh,
        PrepareStep::Reconfigure,
        PrepareStep::Prepopulate,
    ];

    /// Its name in `--skip`, `MC_SKIP` and messages.
    pub fn name(self) -> &'static str {
        match self {
            PrepareStep::Pillar => "pillar",
            PrepareStep::Ssh => "ssh",
            PrepareStep::Reconfigure => "reconfigure",
            PrepareStep::Prepopulate => "prepopulate",
        }
    }

    pub fn parse(s: &str) -> Option<PrepareStep> {
        Self::ALL.into_iter().find(|step| step.name() == s.trim())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file read, `None` for the built-in default (plain init).
    pub file: Option<PathBuf>,
    pub project: Option<String>,
    pub root: PathBuf,
    pub paths: Paths,
    pub pillar: PillarCfg,
    pub ssh: SshCfg,
    pub reconfigure: ReconfigureCfg,
    pub prepopulate: Vec<Prepopulate>,
    pub circus: CircusCfg,
    /// In the order they were written.
    pub services: Vec<Service>,
    pub shutdown: ShutdownCfg,
    pub control: ControlCfg,
    /// The launcher's own lines and the `prefix` streams (README "Logging").
    pub log: LogCfg,
    pub metrics: MetricsCfg,
    /// Where the termination report goes (`None`: nowhere).
    pub termination_log: Option<PathBuf>,
    /// Top-level `env_file`: dotenv files every service reads first.
    pub env_file: Vec<PathBuf>,
}

/// README "The makina layout": every path derives from `root` and the project name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub salt: PathBuf,
    pub project: PathBuf,
    pub pillar: PathBuf,
    pub volume: PathBuf,
    pub state: PathBuf,
}

impl Paths {
    /// The makina defaults for `root` and `project`.
    pub fn defaults(root: &std::path::Path, project: &str) -> Paths {
        let p = root.join("projects").join(project);
        Paths {
            salt: root.join("salt"),
            project: p.join("project"),
            pillar: p.join("pillar"),
            volume: p.join("data"),
            state: PathBuf::from("/var/lib/mc-launcher"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    Abort,
    KeepDefault,
    /// Start on the last valid override, kept in the state dir.
    LastGood,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PillarCfg {
    pub source: PathBuf,
    pub target: PathBuf,
    pub on_invalid: OnInvalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshdMode {
    Auto,
    Never,
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshCfg {
    pub keys_dirs: Vec<PathBuf>,
    pub user: String,
    /// The user's home, when not the one of the password database (the
    /// demo writes keys into a temporary home).
    pub home: Option<PathBuf>,
    pub watch: bool,
    pub sshd: SshdMode,
    pub host_keys_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Abort,
    Continue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReconfigureCfg {
    pub on_error: OnError,
    pub skip_unchanged: bool,
    pub steps: Vec<Step>,
    /// Apply changes of the pillar override, the config file and the
    /// template sources while running (README "Live reconfigure").
    pub watch: bool,
}

/// `user:group`, or a user alone (its primary group), by name or number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub user: String,
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Salt {
        states: Vec<String>,
        config_dir: Option<PathBuf>,
    },
    Template {
        src: PathBuf,
        dest: PathBuf,
        mode: Option<u32>,
        owner: Option<Owner>,
    },
    Command {
        argv: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `salt`, `template`, `command`, numbered from 1 (`salt-1`), for prefixes.
    pub name: String,
    pub kind: StepKind,
    pub timeout: Option<Duration>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepopulate {
    pub src: PathBuf,
    pub dest: PathBuf,
    pub owner: Option<Owner>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CircusCfg {
    /// A main circusd.ini, if any.
    pub config: Option<PathBuf>,
    /// Glob patterns of INI files to read.
    pub include: Vec<String>,
}

/// `ready:`: a check that says when a started service is ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    pub check: ReadyCheck,
    /// Not ready by then after a start: FAILED.
    pub timeout: Duration,
    /// Between probes until the first success.
    pub interval: Duration,
    /// Probe again every period once ready (`None`: never again).
    pub period: Option<Duration>,
    /// Failed probes in a row that make a ready service not ready.
    pub failure_threshold: u32,
}

/// `live:`: a probe whose repeated failure restarts the service.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub check: ReadyCheck,
    pub period: Duration,
    /// Per probe.
    pub timeout: Duration,
    pub failure_threshold: u32,
    /// After each start, before the first probe.
    pub initial_delay: Duration,
}

/// What a live reconfigure that changed something does to a service
/// (README "Live reconfigure").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReconfigure {
    Restart,
    /// Send `reload_signal` to its process groups: the pids stay.
    Reload,
    None,
}

/// `pre_stop:`: run before the service is stopped, bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct PreStop {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stream {
    /// The child writes to the launcher's own fd, no copy.
    Inherit,
    /// Piped; whole lines written as `name | line`.
    Prefix,
    File(FileStream),
    /// /dev/null.
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileStream {
    pub path: PathBuf,
    /// Rotate when the file would grow past this; 0 = never.
    pub max_bytes: u64,
    pub backup_count: u32,
    /// strftime-like prefix per line (circus `time_format`).
    pub time_format: Option<String>,
    /// Reopen the file when it was moved away (circus WatchedFileStream).
    pub watched: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// A resource limit: the `RLIMIT_*` resource and its (soft = hard) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: nix::sys::resource::Resource,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// The exact argv (a `shell: true` service is already `/bin/sh -c STRING`).
    pub argv: Vec<String>,
    pub numprocesses: u32,
    pub working_dir: Option<PathBuf>,
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub env: BTreeMap<String, String>,
    pub copy_env: bool,
    pub after: Vec<String>,
    /// Higher starts first among peers and stops last.
    pub priority: i64,
    pub ready: Option<Ready>,
    pub live: Option<Live>,
    pub pre_stop: Option<PreStop>,
    pub respawn: bool,
    /// Consecutive failed starts before FAILED; `None` = forever (-1).
    pub max_retry: Option<u32>,
    pub backoff: Backoff,
    pub min_uptime: Duration,
    pub critical: bool,
    pub stop_signal: Signal,
    pub graceful_timeout: Duration,
    pub stdout: Stream,
    pub stderr: Stream,
    pub rlimits: Vec<Rlimit>,
    pub autostart: bool,
    /// Delay after spawning before the next service starts (circus).
    pub warmup_delay: Duration,
    /// Restart a process after this long (circus `max_age`), plus a random
    /// part up to the variance.
    pub max_age: Option<(Duration, Duration)>,
    /// `log_rate_limit`: this service's own limit over `log.rate_limit`
    /// (`Some(None)`: none for it); `None`: the global one.
    pub log_rate_limit: Option<Option<RateLimit>>,
    /// The `-- CMD` service: its exit status becomes the launcher's.
    pub main: bool,
    pub on_reconfigure: OnReconfigure,
    pub reload_signal: Signal,
    /// `env_file`, `secrets`, `credentials` (README "Env files and secrets").
    pub inputs: Inputs,
    /// `profiles`: started only when one of them is active (empty: always).
    pub profiles: Vec<String>,
    /// `liveness: ignore`: FAILED does not fail `ctl health --live`.
    pub liveness_ignore: bool,
    /// `schedule:`: a job run at these times rather than kept running
    /// (README "Scheduled jobs").
    pub schedule: Option<Schedule>,
    /// `watch:`: reload or restart on a change of these files.
    pub watch: Option<Watch>,
    pub origin: Origin,
}

/// What a service reads from files at each of its starts. Paths only:
/// the values are read when it starts, and never kept in the config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inputs {
    /// Dotenv files, in order (a later one wins).
    pub env_file: Vec<PathBuf>,
    /// `VAR: path`: VAR gets the file's content.
    pub secrets: Vec<(String, PathBuf)>,
    /// `NAME: path`: copied into `$CREDENTIALS_DIRECTORY/NAME`.
    pub credentials: Vec<(String, PathBuf)>,
}

/// When a scheduled job runs.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// A cron expression, in the job's time zone.
    Cron {
        text: String,
        cron: crate::cron::Cron,
        tz: crate::cron::Zone,
    },
    /// Fixed rate: from the start of the previous run.
    Every(Duration),
    /// `@reboot`: once, when the launcher starts.
    Reboot,
}

/// `services.NAME.schedule`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub when: When,
    /// Run once as soon as the launcher starts, too.
    pub run_on_start: bool,
    /// Services stopped for the run and started again after it.
    pub pause: Vec<String>,
    /// A run still going after this long is stopped (stop_signal, then
    /// SIGKILL after graceful_timeout).
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// `reload_signal` to the service's groups: the pids stay.
    Reload,
    Restart,
}

/// `services.NAME.watch`.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub paths: Vec<PathBuf>,
    pub on_change: OnChange,
    /// Quiet time after a change before acting (a burst is one change).
    pub debounce: Duration,
}

impl Service {
    /// A service with the documented defaults (README "Configuration reference").
    pub fn new(name: &str, argv: Vec<String>) -> Service {
        Service {
            name: name.to_string(),
            argv,
            numprocesses: 1,
            working_dir: None,
            user: None,
            uid: None,
            gid: None,
            env: BTreeMap::new(),
            copy_env: true,
            after: Vec::new(),
            priority: 0,
            ready: None,
            live: None,
            pre_stop: None,
            respawn: true,
            max_retry: Some(5),
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(30),
            },
            min_uptime: Duration::from_secs(1),
            critical: false,
            stop_signal: Signal::SIGTERM,
            graceful_timeout: Duration::from_secs(30),
            stdout: Stream::Inherit,
            stderr: Stream::Inherit,
            rlimits: Vec::new(),
            autostart: true,
            warmup_delay: Duration::ZERO,
            max_age: None,
            log_rate_limit: None,
            main: false,
            on_reconfigure: OnReconfigure::Restart,
            reload_signal: Signal::SIGHUP,
            inputs: Inputs::default(),
            profiles: Vec::new(),
            liveness_ignore: false,
            schedule: None,
            watch: None,
            origin: Origin::default(),
        }
    }

    /// The `-- CMD` main service: critical, never respawned, like tini's child.
    pub fn main(argv: Vec<String>) -> Service {
        Service {
            respawn: false,
            critical: true,
            main: true,
            ..Service::new("main", argv)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownCfg {
    /// One deadline for the whole stop.
    pub timeout: Duration,
    /// After the pre_stop hooks, wait this long (not ready meanwhile)
    /// before stopping anything.
    pub drain: Duration,
    /// Set by `MC_SHUTDOWN_TIMEOUT` (it wins over the file).
    pub from_env: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlCfg {
    pub socket: PathBuf,
}

/// How a record is written: `web | text`, or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// At most `lines` lines of one service per `per`; the rest are dropped
/// and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub lines: u64,
    pub per: Duration,
}

/// Docker's json-file and local drivers cut a line at 16 KiB: records
/// stay within this, framing included, unless configured otherwise.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;
/// The smallest `log.max_line`: room for the JSON envelope of a long
/// service name and some payload.
pub const MIN_MAX_LINE: usize = 1024;
/// The largest `log.max_line` (a longer record helps no log driver).
pub const MAX_MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCfg {
    pub format: LogFormat,
    /// Longest record written, newline and framing included.
    pub max_line: usize,
    /// Per service, each separately (`None`: no limit).
    pub rate_limit: Option<RateLimit>,
}

impl Default for LogCfg {
    fn default() -> LogCfg {
        LogCfg {
            format: LogFormat::Text,
            max_line: DEFAULT_MAX_LINE,
            rate_limit: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsCfg {
    /// `http.listen` (or its older name `metrics.listen`): serve
    /// `/metrics`, `/livez`, `/readyz` and `/status` there (`None`: only
    /// `ctl`).
    pub listen: Option<std::net::SocketAddr>,
}

impl Config {
    /// The configuration used when no file exists: a plain init.
    pub fn plain(root: PathBuf, project: Option<String>) -> Config {
        let name = project.clone().unwrap_or_default();
        let paths = Paths::defaults(&root, &name);
        Config {
            file: None,
            pillar: PillarCfg {
                source: paths.volume.join("configuration/pillar.sls"),
                target: paths.pillar.join("init.sls"),
                on_invalid: OnInvalid::Abort,
            },
            ssh: SshCfg {
                keys_dirs: vec![paths.volume.join("ssh"), paths.volume.join("ms_ssh")],
                user: "root".to_string(),
                home: None,
                watch: true,
                sshd: SshdMode::Auto,
                host_keys_dir: paths.volume.join("configuration/ssh_host_keys"),
            },
            reconfigure: ReconfigureCfg {
                on_error: OnError::Abort,
                skip_unchanged: true,
                steps: Vec::new(),
                watch: false,
            },
            prepopulate: Vec::new(),
            circus: CircusCfg::default(),
            services: Vec::new(),
            shutdown: ShutdownCfg {
                timeout: Duration::from_secs(9),
                drain: Duration::ZERO,
                from_env: false,
            },
            termination_log: Some(PathBuf::from(crate::error::DEFAULT_TERMINATION_LOG)),
            control: ControlCfg {
                socket: PathBuf::from("/run/mc-launcher.sock"),
            },
            log: LogCfg::default(),
            metrics: MetricsCfg::default(),
            env_file: Vec::new(),
            project,
            root,
            paths,
        }
    }
}

/// The container's size as templates see it: `cgroup.cpus`,
/// `cgroup.memory_max` (bytes, none when unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupSize {
    pub cpus: u32,
    pub memory_max: Option<u64>,
}

/// The context every template sees (mc-launcher.yml, `template` steps):
/// `env`, `project`, `root`, `paths`, and `cgroup` (`cpus`, `memory_max`).
pub fn template_context(
    root: &std::path::Path,
    project: &str,
    paths: &Paths,
    size: CgroupSize,
) -> minijinja::Value {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    minijinja::context! {
        env => env,
        project => project,
        root => s(root),
        paths => minijinja::context! {
            salt => s(&paths.salt),
            project => s(&paths.project),
            pillar => s(&paths.pillar),
            volume => s(&paths.volume),
            state => s(&paths.state),
        },
        cgroup => minijinja::context! {
            cpus => size.cpus,
            memory_max => size.memory_max,
        },
    }
}

impl Config {
    /// This config's template context.
    pub fn template_context(&self, size: CgroupSize) -> minijinja::Value {
        template_context(
            &self.root,
            self.project.as_deref().unwrap_or_default(),
            &self.paths,
            size,
        )
    }
}
