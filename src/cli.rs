//! The command line (DESIGN §2) and the dispatch of subcommands.

use crate::config::{self, Config, LoadOptions, Service};
use crate::error::{self, Diag};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

const USAGE: &str = "\
usage: mc-launcher [OPTIONS] [run] [key=value...] [--] [CMD [ARGS...]]
       mc-launcher [OPTIONS] prepare
       mc-launcher [OPTIONS] check
       mc-launcher [OPTIONS] render
       mc-launcher [OPTIONS] ctl [--json] COMMAND [NAME] [SIGNAL]
       mc-launcher --version | --help

Prepare a makina-style container from its data volume, then supervise its
services as PID 1 until it is stopped.

commands:
  run       prepare, then supervise (the default; CMD becomes the main service)
  prepare   run the prepare phase only (pillar, ssh, reconfigure, prepopulate), then exit
  check     validate the config and volume inputs, print the plan, change nothing
  render    print the config after templating
  ctl       talk to the running launcher: status, health, start NAME, stop NAME,
            restart NAME, signal NAME SIG, incr NAME, decr NAME, reload, quit
            (exit 0 ok, 1 the command failed, 3 no launcher listening)

options:
  -c, --config FILE   config file (env MC_LAUNCHER_CONFIG)
      --project NAME  project name (env MC_PROJECT)
      --root DIR      root of the makina tree, default /srv (env MC_ROOT)
      --skip STEP     skip a prepare step: pillar, ssh, reconfigure, prepopulate
                      (repeatable; env MC_SKIP=ssh,reconfigure)
  -v, --verbose       more log output (repeat for more); env MC_LOG overrides
  -q, --quiet         less log output
  -h, --help          this help
  -V, --version       the version

The original launcher's arguments are accepted: ssh_config=True re_configure=True name=PROJECT.
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    Prepare,
    Check,
    Render,
    Ctl,
}

/// A prepare step that `--skip` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Pillar,
    Ssh,
    Reconfigure,
    Prepopulate,
}

impl Step {
    fn parse(s: &str) -> Option<Step> {
        match s.trim() {
            "pillar" => Some(Step::Pillar),
            "ssh" => Some(Step::Ssh),
            "reconfigure" => Some(Step::Reconfigure),
            "prepopulate" => Some(Step::Prepopulate),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub command: Command,
    pub config: Option<PathBuf>,
    pub project: Option<String>,
    pub root: Option<PathBuf>,
    pub skip: Vec<Step>,
    pub verbosity: i32,
    /// The main service's argv (`-- CMD` or the first plain positional).
    pub cmd: Vec<String>,
    /// The words after `ctl`.
    pub ctl: Vec<String>,
    /// The original launcher's `key=value` arguments were given: the
    /// prepare phase runs with the makina defaults even without a config.
    pub original: bool,
}

/// What parsing the command line decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Args(Args),
    Help,
    Version,
}

/// Parse `argv` (without the program name) with the environment `env`.
pub fn parse(argv: Vec<OsString>, env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(argv);
    let mut args = Args {
        command: Command::Run,
        config: env("MC_LAUNCHER_CONFIG")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        project: env("MC_PROJECT").filter(|s| !s.is_empty()),
        root: env("MC_ROOT").filter(|s| !s.is_empty()).map(PathBuf::from),
        skip: Vec::new(),
        verbosity: 0,
        cmd: Vec::new(),
        ctl: Vec::new(),
        original: false,
    };
    let mut skip_args: Vec<String> = Vec::new();
    let mut subcommand_seen = false;
    let mut positional_seen = false;
    let mut ssh_config: Option<bool> = None;
    let mut re_configure: Option<bool> = None;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            Short('c') | Long("config") => {
                args.config = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?))
            }
            Long("project") => args.project = Some(string(p.value().map_err(|e| e.to_string())?)?),
            Long("root") => args.root = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?)),
            Long("skip") => skip_args.push(string(p.value().map_err(|e| e.to_string())?)?),
            Short('v') | Long("verbose") => args.verbosity += 1,
            Short('q') | Long("quiet") => args.verbosity -= 1,
            Value(v) => {
                let text = string(v.clone())?;
                if !subcommand_seen && !positional_seen {
                    let sub = match text.as_str() {
                        "run" => Some(Command::Run),
                        "prepare" => Some(Command::Prepare),
                        "check" => Some(Command::Check),
                        "render" => Some(Command::Render),
                        "ctl" => Some(Command::Ctl),
                        _ => None,
                    };
                    if let Some(c) = sub {
                        args.command = c;
                        subcommand_seen = true;
                        if c == Command::Ctl {
                            // Everything after `ctl` is its own (`--json` too).
                            for raw in p.raw_args().map_err(|e| e.to_string())? {
                                args.ctl.push(string(raw)?);
                            }
                        }
                        continue;
                    }
                }
                if let Some((key, value)) = original_arg(&text) {
                    positional_seen = true;
                    match key {
                        "ssh_config" => ssh_config = Some(yaml_bool(key, value)?),
                        "re_configure" => re_configure = Some(yaml_bool(key, value)?),
                        "name" => args.project = Some(value.to_string()),
                        _ => return Err(format!("unknown argument {key}= (the original launcher took ssh_config=, re_configure=, name=)")),
                    }
                    continue;
                }
                // Anything else starts the main command; the rest is its own.
                args.cmd.push(text);
                for raw in p.raw_args().map_err(|e| e.to_string())? {
                    args.cmd.push(string(raw)?);
                }
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    // lexopt hands everything after `--` back as values: collected above.
    if args.command != Command::Run && !args.cmd.is_empty() {
        return Err(format!("`{}` takes no command", command_name(args.command)));
    }
    if let Some(env_skip) = env("MC_SKIP") {
        skip_args.push(env_skip);
    }
    for item in skip_args
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
    {
        match Step::parse(item) {
            Some(step) if !args.skip.contains(&step) => args.skip.push(step),
            Some(_) => {}
            None => {
                return Err(format!(
                    "unknown step to skip: {item} (pillar, ssh, reconfigure, prepopulate)"
                ))
            }
        }
    }
    // The original launch(ssh_config=False, re_configure=False): once either
    // is given, the other keeps the original's default (False); ssh keys were
    // installed when either was true.
    if ssh_config.is_some() || re_configure.is_some() {
        args.original = true;
        let (ssh, reconf) = (ssh_config.unwrap_or(false), re_configure.unwrap_or(false));
        if !reconf && !args.skip.contains(&Step::Reconfigure) {
            args.skip.push(Step::Reconfigure);
        }
        if !(ssh || reconf || args.skip.contains(&Step::Ssh)) {
            args.skip.push(Step::Ssh);
        }
    }
    Ok(Parsed::Args(args))
}

fn command_name(c: Command) -> &'static str {
    match c {
        Command::Run => "run",
        Command::Prepare => "prepare",
        Command::Check => "check",
        Command::Render => "render",
        Command::Ctl => "ctl",
    }
}

fn string(v: OsString) -> Result<String, String> {
    v.into_string()
        .map_err(|v| format!("argument is not valid UTF-8: {}", v.to_string_lossy()))
}

/// `key=value` where key looks like an identifier (so `a=b` paths or
/// `--opt=x` are not taken for one).
fn original_arg(text: &str) -> Option<(&str, &str)> {
    let (k, v) = text.split_once('=')?;
    let ident = !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    ident.then_some((k, v))
}

fn yaml_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "y" => Ok(true),
        "false" | "no" | "off" | "0" | "n" | "" => Ok(false),
        _ => Err(format!("{key}={v}: expected a boolean (True or False)")),
    }
}

fn init_logging(verbosity: i32) {
    let level = match verbosity {
        i32::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let mut b = env_logger::Builder::new();
    b.parse_filters(level);
    if let Ok(spec) = std::env::var("MC_LOG") {
        b.parse_filters(&spec);
    }
    b.format(|f, rec| {
        let tag = match rec.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            log::Level::Info => "",
            log::Level::Debug => "debug: ",
            log::Level::Trace => "trace: ",
        };
        writeln!(f, "mc-launcher: {tag}{}", rec.args())
    });
    b.target(env_logger::Target::Stderr);
    let _ = b.try_init();
}

/// Entry point of the binary: returns the exit status.
pub fn main() -> i32 {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let args = match parse(argv, &|k| std::env::var(k).ok()) {
        Ok(Parsed::Args(a)) => a,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return error::EXIT_OK;
        }
        Ok(Parsed::Version) => {
            println!("mc-launcher {}", env!("CARGO_PKG_VERSION"));
            return error::EXIT_OK;
        }
        Err(msg) => {
            eprintln!("mc-launcher: {msg}\n\n{USAGE}");
            return error::EXIT_USAGE;
        }
    };
    init_logging(args.verbosity);
    let opts = LoadOptions {
        config: args.config.clone(),
        root: args.root.clone(),
        project: args.project.clone(),
    };
    let loaded = match config::load(&opts) {
        Ok(l) => l,
        Err(diags) if args.command == Command::Ctl => {
            // The client only needs the socket path: fall back to defaults.
            log::debug!(
                "config not loaded ({} error(s)); using default socket paths",
                diags.len()
            );
            let root = opts.root.clone().unwrap_or_else(|| PathBuf::from("/srv"));
            config::Loaded {
                config: Config::plain(root, opts.project.clone()),
                rendered: None,
                warnings: Vec::new(),
            }
        }
        Err(diags) => {
            error::report(&diags);
            return error::EXIT_CONFIG;
        }
    };
    match args.command {
        Command::Render => render(&loaded),
        Command::Check => check(&loaded.config, &loaded.warnings, &args),
        Command::Run => run(loaded.config, &loaded.warnings, &args, opts),
        Command::Prepare => prepare_only(&loaded.config, &loaded.warnings, &args),
        Command::Ctl => crate::ctl::client(&loaded.config, &args.ctl),
    }
}

fn render(loaded: &config::Loaded) -> i32 {
    match &loaded.rendered {
        Some(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        }
        None => eprintln!("mc-launcher: no config file found: nothing to render"),
    }
    error::EXIT_OK
}

/// Commands of services that cannot be found on PATH or are not executable.
fn command_problems(cfg: &Config) -> Vec<Diag> {
    let mut out = Vec::new();
    for s in &cfg.services {
        let Some(prog) = s.argv.first() else { continue };
        if let Err(e) = which::which(prog) {
            let file = cfg.file.clone().unwrap_or_default();
            out.push(Diag::new(
                &file,
                s.origin.pos,
                format!("service {}: command {prog}: {e}", s.name),
            ));
        }
    }
    out
}

fn check(cfg: &Config, warnings: &[Diag], args: &Args) -> i32 {
    let mut problems = command_problems(cfg);
    problems.extend(crate::prepare::phase::check(cfg));
    // What `run` would only warn about (unsupported circus options) fails
    // `check`: nothing is dropped silently.
    problems.extend(warnings.iter().cloned());
    let mut out = String::new();
    let file = cfg
        .file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(none: plain init)".into());
    out.push_str(&format!("config:   {file}\n"));
    out.push_str(&format!(
        "project:  {}\n",
        cfg.project.as_deref().unwrap_or("(none)")
    ));
    out.push_str(&format!("root:     {}\n", cfg.root.display()));
    out.push_str("paths:\n");
    for (k, v) in [
        ("salt", &cfg.paths.salt),
        ("project", &cfg.paths.project),
        ("pillar", &cfg.paths.pillar),
        ("volume", &cfg.paths.volume),
        ("state", &cfg.paths.state),
    ] {
        out.push_str(&format!("  {k:<8} {}\n", v.display()));
    }
    out.push_str("prepare:\n");
    let skipped = |s: Step| {
        if args.skip.contains(&s) {
            " (skipped)"
        } else {
            ""
        }
    };
    out.push_str(&format!(
        "  pillar       {} -> {}{}\n",
        cfg.pillar.source.display(),
        cfg.pillar.target.display(),
        skipped(Step::Pillar)
    ));
    let dirs: Vec<String> = cfg
        .ssh
        .keys_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    out.push_str(&format!(
        "  ssh          keys of {} from {}{}\n",
        cfg.ssh.user,
        dirs.join(", "),
        skipped(Step::Ssh)
    ));
    out.push_str(&format!(
        "  reconfigure  {} step(s){}\n",
        cfg.reconfigure.steps.len(),
        skipped(Step::Reconfigure)
    ));
    for st in &cfg.reconfigure.steps {
        out.push_str(&format!("    - {}\n", st.name));
    }
    out.push_str(&format!(
        "  prepopulate  {} destination(s){}\n",
        cfg.prepopulate.len(),
        skipped(Step::Prepopulate)
    ));
    for p in &cfg.prepopulate {
        out.push_str(&format!(
            "    - {} -> {}\n",
            p.src.display(),
            p.dest.display()
        ));
    }
    let services = services_with_main(cfg, &args.cmd);
    out.push_str("services (start order):\n");
    for name in start_order(&services) {
        out.push_str(&format!("  - {name}\n"));
    }
    print!("{out}");
    if problems.is_empty() {
        error::EXIT_OK
    } else {
        error::report(&problems);
        error::EXIT_CONFIG
    }
}

/// The configured services plus the main one from the command line.
fn services_with_main(cfg: &Config, cmd: &[String]) -> Vec<Service> {
    let mut services = cfg.services.clone();
    if !cmd.is_empty() {
        services.push(Service::main(cmd.to_vec()));
    }
    services
}

/// Names in the order `run` starts them: dependency level, then priority
/// (higher first), then file order; the main service last.
pub fn start_order(services: &[Service]) -> Vec<String> {
    let n = services.len();
    let index = |name: &str| services.iter().position(|s| s.name == name);
    let mut level = vec![0u32; n];
    for _ in 0..n {
        let mut changed = false;
        for (i, s) in services.iter().enumerate() {
            let want = s
                .after
                .iter()
                .filter_map(|d| index(d).and_then(|j| level.get(j)).map(|l| l + 1))
                .max()
                .unwrap_or(0)
                .min(n as u32);
            if let Some(l) = level.get_mut(i) {
                if *l != want {
                    *l = want;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| {
        let s = services.get(i);
        (
            s.is_some_and(|s| s.main),
            level.get(i).copied().unwrap_or(0),
            std::cmp::Reverse(s.map(|s| s.priority).unwrap_or(0)),
            i,
        )
    });
    order
        .into_iter()
        .filter_map(|i| services.get(i).map(|s| s.name.clone()))
        .collect()
}

fn signal_source() -> Result<crate::signals::SignalSource, i32> {
    // Signals have been blocked since the first instruction; from here on
    // they are read, never lost.
    crate::signals::SignalSource::new().map_err(|e| {
        eprintln!("mc-launcher: cannot read signals: {e}");
        error::EXIT_FAILURE
    })
}

/// Whether the prepare phase runs: with a config file, or with the original
/// launcher's arguments for a known project (its makina defaults then apply:
/// the volume's pillar override and keys, as `launch.sh` did).
fn prepares(cfg: &Config, args: &Args) -> bool {
    cfg.file.is_some() || (args.original && cfg.project.is_some())
}

fn prepare_only(cfg: &Config, warnings: &[Diag], args: &Args) -> i32 {
    for w in warnings {
        log::warn!("{w}");
    }
    let mut signals = match signal_source() {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Asked for explicitly: a known project gets its makina defaults.
    let enabled = cfg.file.is_some() || cfg.project.is_some();
    if !enabled {
        log::warn!("no config file and no project: nothing to prepare");
    }
    let mut cfg = cfg.clone();
    if enabled {
        cfg.paths.state = crate::fsutil::usable_state_dir(&cfg.paths.state);
    }
    match crate::prepare::phase::run(&cfg, &args.skip, enabled, &mut signals) {
        Ok(_) => error::EXIT_OK,
        Err(code) => code,
    }
}

fn run(mut cfg: Config, warnings: &[Diag], args: &Args, opts: LoadOptions) -> i32 {
    for w in warnings {
        log::warn!("{w}");
    }
    let mut signals = match signal_source() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut services = services_with_main(&cfg, &args.cmd);
    if services.is_empty() && cfg.file.is_none() {
        eprintln!("mc-launcher: nothing to run: give a command (mc-launcher -- CMD) or a config file\n\n{USAGE}");
        return error::EXIT_USAGE;
    }
    let prepare = prepares(&cfg, args);
    if prepare {
        cfg.paths.state = crate::fsutil::usable_state_dir(&cfg.paths.state);
    }
    let state_dir = cfg.paths.state.clone();
    match crate::prepare::phase::run(&cfg, &args.skip, prepare, &mut signals) {
        // sshd, when the phase asks for it, runs first among the services.
        Ok(extra) => {
            for s in extra.into_iter().rev() {
                services.insert(0, s);
            }
        }
        Err(code) => return code,
    }
    // SIGHUP / `ctl reload` re-read the same file the launcher started from.
    let reloader: Option<crate::supervisor::Reloader> = cfg.file.clone().map(|file| {
        let mut opts = opts;
        opts.config = Some(file);
        Box::new(move || {
            config::load(&opts).map(|mut l| {
                l.config.paths.state = state_dir.clone();
                let services = l.config.services.clone();
                (l.config, services)
            })
        }) as crate::supervisor::Reloader
    });
    let watch_keys = prepare && cfg.ssh.watch && !args.skip.contains(&Step::Ssh);
    crate::supervisor::run(
        cfg,
        services,
        signals,
        crate::supervisor::RunOptions {
            reloader,
            watch_keys,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(list: &[&str], env: &[(&str, &str)]) -> Result<Parsed, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.clone());
        parse(list.iter().map(OsString::from).collect(), &lookup)
    }

    fn args(list: &[&str]) -> Args {
        match parse_args(list, &[]) {
            Ok(Parsed::Args(a)) => a,
            other => panic!("{list:?}: {other:?}"),
        }
    }

    #[test]
    fn command_lines() {
        let a = args(&["--", "sh", "-c", "exit 3"]);
        assert_eq!(
            (a.command, a.cmd),
            (
                Command::Run,
                vec!["sh".into(), "-c".into(), "exit 3".into()]
            )
        );
        let a = args(&["bash", "-l"]);
        assert_eq!(a.cmd, vec!["bash", "-l"]);
        let a = args(&["run", "--", "check"]);
        assert_eq!(
            (a.command, a.cmd),
            (Command::Run, vec!["check".to_string()])
        );
        let a = args(&["-v", "check"]);
        assert_eq!((a.command, a.verbosity), (Command::Check, 1));
        let a = args(&[
            "--root",
            "/tmp/r",
            "--project",
            "p",
            "-c",
            "/x.yml",
            "render",
        ]);
        assert_eq!(a.root, Some(PathBuf::from("/tmp/r")));
        assert_eq!(a.project.as_deref(), Some("p"));
        assert_eq!(a.config, Some(PathBuf::from("/x.yml")));
        assert_eq!(a.command, Command::Render);
        let a = args(&["--skip", "ssh", "--skip=pillar,prepopulate"]);
        assert_eq!(a.skip, vec![Step::Ssh, Step::Pillar, Step::Prepopulate]);
    }

    #[test]
    fn original_launcher_arguments() {
        // (argv, expected skips, project)
        let rows: &[(&[&str], &[Step], Option<&str>)] = &[
            (&["ssh_config=True", "re_configure=True"], &[], None),
            (
                &["ssh_config=True", "re_configure=False"],
                &[Step::Reconfigure],
                None,
            ),
            (&["ssh_config=false"], &[Step::Reconfigure, Step::Ssh], None),
            (&["re_configure=yes"], &[], None),
            (
                &["run", "name=registry", "ssh_config=TRUE", "re_configure=1"],
                &[],
                Some("registry"),
            ),
        ];
        for (argv, skips, project) in rows {
            let a = args(argv);
            assert_eq!(a.skip, skips.to_vec(), "{argv:?}");
            assert_eq!(a.project.as_deref(), *project, "{argv:?}");
            assert!(a.cmd.is_empty(), "{argv:?}");
        }
        let a = args(&["ssh_config=True", "bash"]);
        assert_eq!(a.cmd, vec!["bash"]);
    }

    #[test]
    fn environment() {
        let env = [
            ("MC_PROJECT", "p"),
            ("MC_ROOT", "/r"),
            ("MC_SKIP", "ssh,reconfigure"),
            ("MC_LAUNCHER_CONFIG", "/c.yml"),
        ];
        let Ok(Parsed::Args(a)) = parse_args(&["check"], &env) else {
            panic!("parse")
        };
        assert_eq!(a.project.as_deref(), Some("p"));
        assert_eq!(a.root, Some(PathBuf::from("/r")));
        assert_eq!(a.config, Some(PathBuf::from("/c.yml")));
        assert_eq!(a.skip, vec![Step::Ssh, Step::Reconfigure]);
        let Ok(Parsed::Args(a)) = parse_args(&["--project", "q", "check"], &env) else {
            panic!("parse")
        };
        assert_eq!(
            a.project.as_deref(),
            Some("q"),
            "the command line wins over the environment"
        );
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["--bogus"][..],
            &["--skip", "nope"],
            &["check", "extra"],
            &["ssh_config=maybe"],
            &["colour=blue"],
            &["--config"],
        ] {
            assert!(
                parse_args(bad, &[]).is_err(),
                "{bad:?} should be a usage error"
            );
        }
        assert_eq!(parse_args(&["--help"], &[]), Ok(Parsed::Help));
        assert_eq!(parse_args(&["-V"], &[]), Ok(Parsed::Version));
    }

    #[test]
    fn start_order_follows_after_and_priority() {
        let mut a = Service::new("a", vec!["x".into()]);
        a.after = vec!["b".into()];
        let mut b = Service::new("b", vec!["x".into()]);
        b.priority = 1;
        let c = Service::new("c", vec!["x".into()]);
        let mut d = Service::new("d", vec!["x".into()]);
        d.priority = 5;
        let main = Service::main(vec!["sh".into()]);
        assert_eq!(
            start_order(&[main, a, b, c, d]),
            vec!["d", "b", "c", "a", "main"]
        );
    }
}
