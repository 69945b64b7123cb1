//! Help that matches (README "Command line", "Completion and man page"):
//! `--help`, `help ctl` and `ctl --help` list every verb the launcher
//! accepts; the completion scripts complete them in bash, zsh and fish,
//! service names from a running launcher; the man page names them all and
//! formats without a warning.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env_remove("MC_LAUNCHER_CONFIG")
        .env("MC_ROOT", "/nonexistent-mcl-root")
        .output()
        .expect("run mc-launcher");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stdout_of(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, Some(0), "{args:?}: {err}");
    out
}

/// The verbs of `help ctl` with their synopsis words (`signal NAME SIG`).
fn verbs() -> Vec<Vec<String>> {
    let text = stdout_of(&["help", "ctl"]);
    let list: Vec<Vec<String>> = text
        .split("verbs:\n")
        .nth(1)
        .expect("a verbs section")
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            // "  signal NAME SIG             send …": the synopsis is the
            // words before the run of blanks.
            let synopsis = l.trim_start().split("  ").next().unwrap_or("");
            synopsis.split_whitespace().map(String::from).collect()
        })
        .collect();
    assert!(list.len() >= 12, "{text}");
    list
}

/// The subcommands every help lists.
const SUBCOMMANDS: [&str; 7] = [
    "run",
    "prepare",
    "check",
    "render",
    "ctl",
    "help",
    "completion",
];

#[test]
fn every_help_lists_every_verb_the_launcher_accepts() {
    let ctl_help = stdout_of(&["help", "ctl"]);
    for alias in [
        &["ctl", "--help"][..],
        &["ctl", "-h"],
        &["ctl", "help"],
        &["ctl", "--json", "--help"],
    ] {
        assert_eq!(stdout_of(alias), ctl_help, "{alias:?}");
    }
    let main_help = stdout_of(&["--help"]);
    assert_eq!(stdout_of(&["help"]), main_help);
    assert_eq!(stdout_of(&["-h"]), main_help);
    for v in verbs() {
        let verb = &v[0];
        assert!(
            main_help.contains(&format!(" {verb},")) || main_help.contains(&format!(" {verb}\n")),
            "--help lacks ctl verb {verb}:\n{main_help}"
        );
        // The launcher's parser takes it, with the arguments help shows:
        // no launcher listens here (3), never "unknown command" (2).
        let mut args: Vec<String> = vec!["ctl".into(), "--timeout".into(), "200ms".into()];
        args.push(verb.clone());
        for word in &v[1..] {
            match word.as_str() {
                "NAME" | "[NAME]" => args.push("web".into()),
                "SIG" => args.push("HUP".into()),
                w if w.starts_with('[') || w.starts_with('-') => {}
                w => panic!("an argument help does not explain: {w}"),
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = run(&refs);
        assert_eq!(code, Some(3), "{refs:?}: {err}");
        assert!(err.contains("no launcher"), "{refs:?}: {err}");
    }
    for sub in SUBCOMMANDS {
        assert!(
            main_help.contains(&format!("\n  {sub} ")),
            "--help lacks {sub}"
        );
    }
    // A verb nobody knows is an error naming it, not a quit.
    let (code, _, err) = run(&["ctl", "frobnicate"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("frobnicate"), "{err}");
    // And help on nothing known says what there is.
    let (code, _, err) = run(&["help", "nothing"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("help ctl"), "{err}");
}

/// A launcher with services `web` and `worker`; completion runs inside its
/// mount namespace (its socket is in its private /run).
fn launcher(d: &TempDir) -> Running {
    let cfg = config(
        d,
        "services:\n  web:\n    cmd: [sleep, '1000']\n  worker:\n    cmd: [sleep, '1000']\n",
    );
    let run = Launch::new(&["-c", &cfg]).root(d.path()).spawn();
    assert!(
        wait_until(Duration::from_secs(10), || service_json(&run, "worker")
            .is_some_and(|s| s["state"] == "running")),
        "worker never ran"
    );
    run
}

/// Run `shell -c script` in the launcher's mount namespace, with the
/// launcher's directory first in PATH as `mc-launcher`.
fn shell_in(run: &Running, d: &TempDir, shell: &str, script: &str) -> String {
    let bindir = d.join("bin");
    std::fs::create_dir_all(&bindir).expect("mkdir");
    let link = bindir.join("mc-launcher");
    if !link.exists() {
        std::os::unix::fs::symlink(bin(), &link).expect("symlink");
    }
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("nsenter")
        .args(["--mount", "--target", &run.launcher_pid().to_string(), "--"])
        .args([shell, "-c", script])
        .env("PATH", path)
        .env("MC_ROOT", "/nonexistent-mcl-root")
        .env("HOME", d.path())
        .env("XDG_CONFIG_HOME", d.path())
        .env("XDG_DATA_HOME", d.path())
        .env_remove("MC_LAUNCHER_CONFIG")
        .output()
        .expect("run the shell");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{shell}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `words` of each answer line of a completion run.
fn answers(text: &str, tag: &str) -> Vec<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{tag}:")))
        .unwrap_or_else(|| panic!("no {tag} in {text}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn bash_completes_verbs_flags_signals_and_running_services() {
    let d = TempDir::new("complete-bash");
    let run = launcher(&d);
    let script = r#"
eval "$(mc-launcher completion bash)"
c() { local tag=$1; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _mc_launcher; echo "$tag: ${COMPREPLY[*]}"; }
c verb mc-launcher ctl sta
c flags mc-launcher ctl health --
c names mc-launcher --root /x ctl restart w
c signals mc-launcher ctl signal web U
c subs mc-launcher co
c skip mc-launcher --skip pre
c shells mc-launcher completion z
"#;
    let out = shell_in(&run, &d, "bash", script);
    assert_eq!(answers(&out, "verb"), ["status", "start"], "{out}");
    assert_eq!(answers(&out, "flags"), ["--live", "--ready"], "{out}");
    assert_eq!(answers(&out, "names"), ["web", "worker"], "{out}");
    assert_eq!(answers(&out, "signals"), ["USR1", "USR2"], "{out}");
    assert_eq!(answers(&out, "subs"), ["completion"], "{out}");
    assert_eq!(answers(&out, "skip"), ["prepopulate"], "{out}");
    assert_eq!(answers(&out, "shells"), ["zsh"], "{out}");
}

#[test]
fn zsh_and_fish_complete_the_same_words() {
    let d = TempDir::new("complete-zsh-fish");
    let run = launcher(&d);
    // zsh outside an interactive completion: compadd stands in, printing
    // what it is given (zsh itself filters by the prefix).
    let zsh = r#"
compadd() { [[ $1 == -- ]] && shift; print -r -- "$tag: $*"; }
_files() { print -r -- "$tag: FILES"; }
compdef() { :; }
eval "$(mc-launcher completion zsh)"
tag=verb; words=(mc-launcher ctl ''); CURRENT=3; _mc_launcher
tag=names; words=(mc-launcher ctl stop ''); CURRENT=4; _mc_launcher
tag=signals; words=(mc-launcher ctl signal web ''); CURRENT=5; _mc_launcher
tag=config; words=(mc-launcher -c ''); CURRENT=3; _mc_launcher
"#;
    let out = shell_in(&run, &d, "zsh", zsh);
    assert_verbs_and_names(&out, "zsh");
    assert!(
        answers(&out, "signals").contains(&"HUP".to_string()),
        "{out}"
    );
    assert_eq!(answers(&out, "config"), ["FILES"], "{out}");

    let fish = r#"
mc-launcher completion fish | source
echo "verb:" (complete -C 'mc-launcher ctl ' | string replace -r '\t.*' '')
echo "names:" (complete -C 'mc-launcher ctl restart ' | string replace -r '\t.*' '')
echo "health:" (complete -C 'mc-launcher ctl health --' | string replace -r '\t.*' '')
"#;
    let out = shell_in(&run, &d, "fish", fish);
    assert_verbs_and_names(&out, "fish");
    assert_eq!(answers(&out, "health"), ["--live", "--ready"], "{out}");
}

/// `shell` completed every verb of the help, and the service names.
#[track_caller]
fn assert_verbs_and_names(out: &str, shell: &str) {
    let verbs = answers(out, "verb");
    for v in verbs_of_help() {
        assert!(verbs.contains(&v), "{shell} lacks {v}: {out}");
    }
    assert_eq!(answers(out, "names"), ["web", "worker"], "{out}");
}

fn verbs_of_help() -> Vec<String> {
    verbs().into_iter().map(|v| v[0].clone()).collect()
}

#[test]
fn the_man_page_names_every_verb_and_option_and_formats_cleanly() {
    let page = repo().join("doc/mc-launcher.1");
    let text = std::fs::read_to_string(&page).expect("doc/mc-launcher.1");
    // groff, every warning on: none.
    let out = Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(&page)
        .output()
        .expect("groff");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && warnings.is_empty(), "{warnings}");
    // Roff escapes a dash as \-: read the page with them undone.
    let plain = text
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "");
    for v in verbs_of_help() {
        assert!(plain.contains(&v), "the man page lacks ctl verb {v}");
    }
    let help = stdout_of(&["--help"]);
    for opt in help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches([',', ')', '.']))
    {
        assert!(plain.contains(opt), "the man page lacks {opt}");
    }
    for sub in SUBCOMMANDS {
        assert!(
            plain.contains(&format!("\n.B {sub}"))
                || plain.contains(&format!("\n.BR {sub}"))
                || plain.contains(&format!("\n.TP\n.B {sub}")),
            "the man page lacks {sub}"
        );
    }
    // `man` renders it (what an operator types after installing the .deb).
    let out = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("man");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("mc-launcher"), "{shown}");
}
