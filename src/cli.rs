//! The command line (README "Command line"): argv and the environment in,
//! `Args` out. Nothing else: the dispatch lives in `app`.

use crate::config::model::PrepareStep;
use std::ffi::OsString;
use std::path::PathBuf;

pub mod complete;
pub use complete::Shell;

/// The top of `--help`; the ctl verbs and the rest follow (`usage`).
const USAGE_HEAD: &str = "\
usage: mc-launcher [OPTIONS] [run] [key=value...] [--] [CMD [ARGS...]]
       mc-launcher [OPTIONS] prepare
       mc-launcher [OPTIONS] check
       mc-launcher [OPTIONS] render
       mc-launcher [OPTIONS] ctl [--json] [--timeout D] VERB [NAME] [ARGS]
       mc-launcher help [ctl]
       mc-launcher completion bash|zsh|fish
       mc-launcher --version | --help

Prepare a makina-style container from its data volume, then supervise its
services as PID 1 until it is stopped.

commands:
  run         prepare, then supervise (the default; CMD becomes the main service)
  prepare     run the prepare phase only (pillar, ssh, reconfigure, prepopulate), then exit
  check       validate the config and volume inputs, print the plan, change nothing
  render      print the config after templating
  ctl         talk to the running launcher (exit 0 ok, 1 the command failed,
              3 no launcher listening); its verbs:
";

const USAGE_TAIL: &str = "\
\x20 help        this help; `help ctl`: the ctl verbs in full
  completion  print a completion script for bash, zsh or fish

options:
  -c, --config FILE   config file (env MC_LAUNCHER_CONFIG)
      --project NAME  project name (env MC_PROJECT)
      --root DIR      root of the makina tree, default /srv (env MC_ROOT)
      --skip STEP     skip a prepare step: pillar, ssh, reconfigure, prepopulate
                      (repeatable; env MC_SKIP=ssh,reconfigure)
      --profile NAME  start the services of this profile too (repeatable;
                      env MC_PROFILES=a,b)
  -v, --verbose       more log output (repeat for more); env MC_LOG overrides
  -q, --quiet         less log output
  -h, --help          this help
  -V, --version       the version, commit, target, build date and allocator

The original launcher's arguments are accepted: ssh_config=True re_configure=True name=PROJECT.
A main command named like a subcommand (run, help, ...) follows `--`.
See mc-launcher(1).
";

/// `mc-launcher --help`: every subcommand, every ctl verb, every option.
pub fn usage() -> String {
    let mut out = String::from(USAGE_HEAD);
    let verbs: Vec<&str> = complete::ctl_verbs().iter().map(|v| v.verb).collect();
    let mut line = String::from("             ");
    for (i, v) in verbs.iter().enumerate() {
        let word = if i + 1 < verbs.len() {
            format!(" {v},")
        } else {
            format!(" {v}")
        };
        if line.len() + word.len() > 78 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("             ");
        }
        line.push_str(&word);
    }
    out.push_str(&line);
    out.push('\n');
    out.push_str(USAGE_TAIL);
    out
}

/// `mc-launcher help ctl`, `mc-launcher ctl --help`: each verb in full.
pub fn ctl_usage() -> String {
    let mut out = String::from(
        "usage: mc-launcher [OPTIONS] ctl [--json] [--timeout D] VERB [NAME] [ARGS]\n\n\
         Talk to the running launcher over its control socket.\n\n\
         verbs:\n",
    );
    for v in complete::ctl_verbs() {
        let synopsis = if v.args.is_empty() {
            v.verb.to_string()
        } else {
            format!("{} {}", v.verb, v.args)
        };
        out.push_str(&format!("  {synopsis:<28}{}\n", v.help));
    }
    out.push_str(
        "\noptions:\n\
         \x20 --json                      the launcher's answer as one JSON object\n\
         \x20 --timeout D                 how long to wait for the launcher (default 5s;\n\
         \x20                             reconfigure: 1h), e.g. 500ms, 30s\n\n\
         exit status: 0 ok, 1 the command failed, 2 bad command line,\n\
         3 no launcher listening, 130/143/129 interrupted by INT/TERM/HUP.\n",
    );
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    Prepare,
    Check,
    Render,
    Ctl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub command: Command,
    pub config: Option<PathBuf>,
    pub project: Option<String>,
    pub root: Option<PathBuf>,
    pub skip: Vec<PrepareStep>,
    /// `--profile` (repeatable), else `MC_PROFILES=a,b`.
    pub profiles: Vec<String>,
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
    Help(HelpTopic),
    Version,
    /// `completion bash|zsh|fish`: print that shell's completion script.
    Completion(Shell),
}

/// What `help` (or `--help`) is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelpTopic {
    /// `--help`, `help`: the whole command line.
    Main,
    /// `help ctl`, `ctl --help`: the ctl verbs in full.
    Ctl,
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
        profiles: Vec::new(),
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
            Short('h') | Long("help") => return Ok(Parsed::Help(HelpTopic::Main)),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            Short('c') | Long("config") => {
                args.config = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?))
            }
            Long("project") => args.project = Some(string(p.value().map_err(|e| e.to_string())?)?),
            Long("root") => args.root = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?)),
            Long("skip") => skip_args.push(string(p.value().map_err(|e| e.to_string())?)?),
            Long("profile") => args
                .profiles
                .push(string(p.value().map_err(|e| e.to_string())?)?),
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
                    match text.as_str() {
                        "help" => return help_topic(p.raw_args().map_err(|e| e.to_string())?),
                        "completion" => {
                            return completion(p.raw_args().map_err(|e| e.to_string())?)
                        }
                        _ => {}
                    }
                    if let Some(c) = sub {
                        args.command = c;
                        subcommand_seen = true;
                        if c == Command::Ctl {
                            // Everything after `ctl` is its own (`--json` too).
                            for raw in p.raw_args().map_err(|e| e.to_string())? {
                                args.ctl.push(string(raw)?);
                            }
                            // `ctl --help`, `ctl -h`, `ctl help`: answered here,
                            // with no launcher to ask.
                            let first_verb = args.ctl.iter().find(|w| !w.starts_with('-'));
                            if args.ctl.iter().any(|w| w == "--help" || w == "-h")
                                || first_verb.is_some_and(|w| w == "help")
                            {
                                return Ok(Parsed::Help(HelpTopic::Ctl));
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
    // As Docker Compose: the command line wins over COMPOSE_PROFILES.
    if args.profiles.is_empty() {
        if let Some(list) = env("MC_PROFILES") {
            args.profiles = list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect();
        }
    }
    if let Some(env_skip) = env("MC_SKIP") {
        skip_args.push(env_skip);
    }
    for item in skip_args
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
    {
        match PrepareStep::parse(item) {
            Some(step) if !args.skip.contains(&step) => args.skip.push(step),
            Some(_) => {}
            None => {
                let names: Vec<&str> = PrepareStep::ALL.iter().map(|s| s.name()).collect();
                return Err(format!(
                    "unknown step to skip: {item} ({})",
                    names.join(", ")
                ));
            }
        }
    }
    // The original launch(ssh_config=False, re_configure=False): once either
    // is given, the other keeps the original's default (False); ssh keys were
    // installed when either was true.
    if ssh_config.is_some() || re_configure.is_some() {
        args.original = true;
        let (ssh, reconf) = (ssh_config.unwrap_or(false), re_configure.unwrap_or(false));
        if !reconf && !args.skip.contains(&PrepareStep::Reconfigure) {
            args.skip.push(PrepareStep::Reconfigure);
        }
        if !(ssh || reconf || args.skip.contains(&PrepareStep::Ssh)) {
            args.skip.push(PrepareStep::Ssh);
        }
    }
    Ok(Parsed::Args(args))
}

/// The words after `help`: none (the whole command line), a subcommand,
/// or `ctl` (its verbs in full).
fn help_topic(rest: lexopt::RawArgs<'_>) -> Result<Parsed, String> {
    let words: Vec<String> = rest.map(string).collect::<Result<_, _>>()?;
    match words.as_slice() {
        [] => Ok(Parsed::Help(HelpTopic::Main)),
        [w] if w == "ctl" => Ok(Parsed::Help(HelpTopic::Ctl)),
        // Any other subcommand: the whole help (`ctl` is matched above).
        [w] if complete::SUBCOMMANDS.contains(&w.as_str()) => Ok(Parsed::Help(HelpTopic::Main)),
        [w] => Err(format!(
            "no help on {w}: try `mc-launcher help` or `mc-launcher help ctl`"
        )),
        _ => Err("help takes one topic at most (`help ctl`)".into()),
    }
}

/// The words after `completion`: exactly one shell.
fn completion(rest: lexopt::RawArgs<'_>) -> Result<Parsed, String> {
    let words: Vec<String> = rest.map(string).collect::<Result<_, _>>()?;
    match words.as_slice() {
        [w] => Shell::parse(w)
            .map(Parsed::Completion)
            .ok_or_else(|| format!("completion {w}: the shells are bash, zsh and fish")),
        _ => Err("completion takes one shell: bash, zsh or fish".into()),
    }
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
    crate::units::parse_bool(v)
        .ok_or_else(|| format!("{key}={v}: expected a boolean (True or False)"))
}

/// The allocator the binary was built with (src/main.rs): dlmalloc in the
/// static musl build, the C library's malloc otherwise.
pub const ALLOCATOR: &str = if cfg!(target_env = "musl") {
    "dlmalloc"
} else {
    "system (libc malloc)"
};

/// What `--version` prints: the version line, then the build's facts (from
/// build.rs: the date is SOURCE_DATE_EPOCH's, so a rebuild prints the same).
pub fn version_text(
    version: &str,
    commit: &str,
    target: &str,
    date: &str,
    allocator: &str,
) -> String {
    format!(
        "mc-launcher {version}\ncommit:    {commit}\ntarget:    {target}\nbuilt:     {date}\nallocator: {allocator}\n"
    )
}

/// `version_text` of this build.
pub fn version() -> String {
    version_text(
        env!("CARGO_PKG_VERSION"),
        env!("MC_BUILD_COMMIT"),
        env!("MC_BUILD_TARGET"),
        env!("MC_BUILD_DATE"),
        ALLOCATOR,
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
        assert_eq!(
            a.skip,
            vec![
                PrepareStep::Ssh,
                PrepareStep::Pillar,
                PrepareStep::Prepopulate
            ]
        );
    }

    #[test]
    fn original_launcher_arguments() {
        // (argv, expected skips, project)
        let rows: &[(&[&str], &[PrepareStep], Option<&str>)] = &[
            (&["ssh_config=True", "re_configure=True"], &[], None),
            (
                &["ssh_config=True", "re_configure=False"],
                &[PrepareStep::Reconfigure],
                None,
            ),
            (
                &["ssh_config=false"],
                &[PrepareStep::Reconfigure, PrepareStep::Ssh],
                None,
            ),
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
        assert_eq!(a.skip, vec![PrepareStep::Ssh, PrepareStep::Reconfigure]);
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
    fn profiles_from_the_command_line_or_the_environment() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[], &[], &[]),
            (&["--profile", "a", "--profile", "b"], &[], &["a", "b"]),
            (&["check", "--profile=a"], &[], &["a"]),
            (&[], &[("MC_PROFILES", "a, b,,")], &["a", "b"]),
            (&["--profile", "c"], &[("MC_PROFILES", "a,b")], &["c"]),
        ];
        for (argv, env, want) in cases {
            match parse_args(argv, env) {
                Ok(Parsed::Args(a)) => assert_eq!(a.profiles, *want, "{argv:?} {env:?}"),
                other => panic!("{argv:?}: {other:?}"),
            }
        }
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
        assert_eq!(
            parse_args(&["--help"], &[]),
            Ok(Parsed::Help(HelpTopic::Main))
        );
        assert_eq!(parse_args(&["-V"], &[]), Ok(Parsed::Version));
    }

    #[test]
    fn version_names_commit_target_date_and_allocator() {
        let text = version_text(
            "1.2.3",
            "0123456789ab",
            "aarch64-unknown-linux-musl",
            "2026-12-07",
            "dlmalloc",
        );
        assert_eq!(
            text,
            "mc-launcher 1.2.3\ncommit:    0123456789ab\ntarget:    aarch64-unknown-linux-musl\nbuilt:     2026-12-07\nallocator: dlmalloc\n"
        );
        // This build's: the first line is what scripts and tests/pid1.rs read.
        let own = version();
        assert!(
            own.starts_with(&format!("mc-launcher {}\n", env!("CARGO_PKG_VERSION"))),
            "{own}"
        );
        assert!(
            own.contains(&format!("target:    {}", env!("MC_BUILD_TARGET"))),
            "{own}"
        );
        assert_eq!(own.lines().count(), 5, "{own}");
    }
}
