//! `mc-launcher completion bash|zsh|fish`: completion scripts made from the
//! same lists `--help` prints (subcommands, options, ctl verbs), so the
//! three cannot disagree. Service names are asked of the running launcher
//! (`ctl --json status`) when a verb wants one.

/// A shell `completion` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    pub fn parse(word: &str) -> Option<Shell> {
        match word {
            "bash" => Some(Shell::Bash),
            "zsh" => Some(Shell::Zsh),
            "fish" => Some(Shell::Fish),
            _ => None,
        }
    }
}

pub use crate::ctl::proto::CtlVerb;

/// Every ctl verb, in the order help lists them (kept beside the
/// `Command` enum, which a test holds it equal to).
pub fn ctl_verbs() -> &'static [CtlVerb] {
    crate::ctl::proto::VERBS
}

/// The subcommands, as completion offers them.
pub const SUBCOMMANDS: &[&str] = &[
    "run",
    "prepare",
    "check",
    "render",
    "ctl",
    "help",
    "completion",
];
/// The launcher's options that take a value.
pub const VALUE_OPTIONS: &[&str] = &[
    "-c",
    "--config",
    "--project",
    "--root",
    "--skip",
    "--profile",
];
/// The launcher's options that take none.
pub const FLAG_OPTIONS: &[&str] = &[
    "-v",
    "--verbose",
    "-q",
    "--quiet",
    "-h",
    "--help",
    "-V",
    "--version",
];
/// ctl's own options (before the verb).
pub const CTL_OPTIONS: &[&str] = &["--json", "--timeout", "--help"];
/// The prepare steps `--skip` takes.
pub const STEPS: &[&str] = &["pillar", "ssh", "reconfigure", "prepopulate"];
/// The signals offered after `signal NAME`.
pub const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "TERM", "KILL", "USR1", "USR2", "WINCH", "CONT", "STOP",
];

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let verbs = ctl_verbs();
    let words = |list: &[&str]| list.join(" ");
    let all_verbs: Vec<&str> = verbs.iter().map(|v| v.verb).collect();
    let named: Vec<&str> = verbs
        .iter()
        .filter(|v| v.takes_name)
        .map(|v| v.verb)
        .collect();
    let options: Vec<&str> = VALUE_OPTIONS.iter().chain(FLAG_OPTIONS).copied().collect();
    let template = match shell {
        Shell::Bash => BASH,
        Shell::Zsh => ZSH,
        Shell::Fish => FISH,
    };
    let mut out = template
        .replace("@SCAN@", SCAN)
        .replace("@SUBCOMMANDS@", &words(SUBCOMMANDS))
        .replace("@OPTIONS@", &words(&options))
        .replace("@VALUE_OPTIONS@", &words(VALUE_OPTIONS))
        .replace("@VALUE_CASE@", &VALUE_OPTIONS.join("|"))
        .replace("@CTL_OPTIONS@", &words(CTL_OPTIONS))
        .replace("@VERBS@", &words(&all_verbs))
        .replace("@NAMED@", &words(&named))
        .replace("@NAMED_CASE@", &named.join("|"))
        .replace("@STEPS@", &words(STEPS))
        .replace("@SIGNALS@", &words(SIGNALS));
    let flag_lines: Vec<(&str, String)> = verbs
        .iter()
        .filter(|v| !v.flags.is_empty())
        .map(|v| (v.verb, words(v.flags)))
        .collect();
    let per_verb = match shell {
        Shell::Bash | Shell::Zsh => flag_lines
            .iter()
            .map(|(verb, flags)| format!("            {verb}) flags=\"{flags}\" ;;\n"))
            .collect::<String>(),
        Shell::Fish => flag_lines
            .iter()
            .map(|(verb, flags)| {
                format!(
                    "complete -c mc-launcher -n '__fish_seen_subcommand_from ctl; and __fish_seen_subcommand_from {verb}' -a '{flags}'\n"
                )
            })
            .collect::<String>(),
    };
    out = out.replace("@VERB_FLAGS@", &per_verb);
    out
}

/// bash and zsh alike: the words before the cursor give the subcommand,
/// then after `ctl` its verb and how many arguments it has so far.
const SCAN: &str = r#"        if [[ -z $sub ]]; then
            case $w in
                @VALUE_CASE@) ((i++)) ;;
                -*) ;;
                *) sub=$w ;;
            esac
        elif [[ $sub == ctl ]]; then
            case $w in
                --timeout|-n) ((i++)) ;;
                -*) ;;
                *) if [[ -z $verb ]]; then verb=$w; else ((nargs++)); fi ;;
            esac
        else
            ((nargs++))
        fi
    done
"#;

/// bash: `source <(mc-launcher completion bash)`.
const BASH: &str = r#"# bash completion for mc-launcher; load it with
#   source <(mc-launcher completion bash)
# or install it as /usr/share/bash-completion/completions/mc-launcher.

_mc_launcher_services() {
    "${COMP_WORDS[0]}" ctl --json --timeout 1s status 2>/dev/null |
        grep -o '"name":"[^"]*"' | cut -d'"' -f4
}

_mc_launcher() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local prev=${COMP_WORDS[COMP_CWORD-1]}
    local i w sub="" verb="" nargs=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
@SCAN@    COMPREPLY=()
    case $prev in
        -c|--config|--root) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --skip) COMPREPLY=($(compgen -W "@STEPS@" -- "$cur")); return ;;
        --project|--profile|--timeout|-n) return ;;
    esac
    local list=""
    case $sub in
        "")
            if [[ $cur == -* ]]; then list="@OPTIONS@"; else list="@SUBCOMMANDS@"; fi ;;
        ctl)
            if [[ -z $verb ]]; then
                if [[ $cur == -* ]]; then list="@CTL_OPTIONS@"; else list="@VERBS@"; fi
            else
                local flags=""
                case $verb in
@VERB_FLAGS@                esac
                list=$flags
                case $verb in
                    @NAMED_CASE@)
                        if ((nargs == 0)); then
                            list="$list $(_mc_launcher_services)"
                        elif [[ $verb == signal && nargs -eq 1 ]]; then
                            list="@SIGNALS@"
                        fi ;;
                esac
            fi ;;
        help) ((nargs == 0)) && list="ctl" ;;
        completion) ((nargs == 0)) && list="bash zsh fish" ;;
        *) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    COMPREPLY=($(compgen -W "$list" -- "$cur"))
}

complete -F _mc_launcher mc-launcher
"#;

/// zsh: `source <(mc-launcher completion zsh)` after compinit, or as
/// `_mc-launcher` on the fpath.
const ZSH: &str = r#"#compdef mc-launcher
# zsh completion for mc-launcher; load it with
#   source <(mc-launcher completion zsh)
# (after compinit) or install it as _mc-launcher in a directory of $fpath.

_mc_launcher_services() {
    ${words[1]} ctl --json --timeout 1s status 2>/dev/null |
        grep -o '"name":"[^"]*"' | cut -d'"' -f4
}

_mc_launcher() {
    local i w sub="" verb="" nargs=0 cur=${words[CURRENT]} prev=${words[CURRENT-1]}
    for ((i = 2; i < CURRENT; i++)); do
        w=${words[i]}
@SCAN@    case $prev in
        -c|--config|--root) _files; return ;;
        --skip) compadd -- @STEPS@; return ;;
        --project|--profile|--timeout|-n) return ;;
    esac
    local -a list
    case $sub in
        "")
            if [[ $cur == -* ]]; then list=(@OPTIONS@); else list=(@SUBCOMMANDS@); fi ;;
        ctl)
            if [[ -z $verb ]]; then
                if [[ $cur == -* ]]; then list=(@CTL_OPTIONS@); else list=(@VERBS@); fi
            else
                local flags=""
                case $verb in
@VERB_FLAGS@                esac
                list=(${=flags})
                case $verb in
                    @NAMED_CASE@)
                        if ((nargs == 0)); then
                            list+=(${(f)"$(_mc_launcher_services)"})
                        elif [[ $verb == signal ]] && ((nargs == 1)); then
                            list=(@SIGNALS@)
                        fi ;;
                esac
            fi ;;
        help) ((nargs == 0)) && list=(ctl) ;;
        completion) ((nargs == 0)) && list=(bash zsh fish) ;;
        *) _files; return ;;
    esac
    compadd -- "${list[@]}"
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _mc_launcher "$@"
else
    compdef _mc_launcher mc-launcher
fi
"#;

/// fish: `mc-launcher completion fish | source`.
const FISH: &str = r#"# fish completion for mc-launcher; load it with
#   mc-launcher completion fish | source
# or install it as ~/.config/fish/completions/mc-launcher.fish.

function __mc_launcher_services
    set -l cmd (commandline -opc)[1]
    type -q $cmd; or return
    $cmd ctl --json --timeout 1s status 2>/dev/null | string match -ra '"name":"[^"]*"' | string replace -r '"name":"([^"]*)"' '$1'
end

complete -c mc-launcher -f
complete -c mc-launcher -n __fish_use_subcommand -a '@SUBCOMMANDS@'
complete -c mc-launcher -n __fish_use_subcommand -s c -l config -r -F -d 'config file'
complete -c mc-launcher -n __fish_use_subcommand -l project -x -d 'project name'
complete -c mc-launcher -n __fish_use_subcommand -l root -r -F -d 'root of the makina tree'
complete -c mc-launcher -n __fish_use_subcommand -l skip -x -a '@STEPS@' -d 'skip a prepare step'
complete -c mc-launcher -n __fish_use_subcommand -l profile -x -d 'start this profile too'
complete -c mc-launcher -n __fish_use_subcommand -s v -l verbose -d 'more log output'
complete -c mc-launcher -n __fish_use_subcommand -s q -l quiet -d 'less log output'
complete -c mc-launcher -n __fish_use_subcommand -s h -l help -d 'help'
complete -c mc-launcher -n __fish_use_subcommand -s V -l version -d 'version'
complete -c mc-launcher -n '__fish_seen_subcommand_from ctl; and not __fish_seen_subcommand_from @VERBS@' -a '@VERBS@'
complete -c mc-launcher -n '__fish_seen_subcommand_from ctl; and not __fish_seen_subcommand_from @VERBS@' -l json -d 'answer as JSON'
complete -c mc-launcher -n '__fish_seen_subcommand_from ctl; and not __fish_seen_subcommand_from @VERBS@' -l timeout -x -d 'wait this long'
complete -c mc-launcher -n '__fish_seen_subcommand_from ctl; and __fish_seen_subcommand_from @NAMED@' -a '(__mc_launcher_services)'
complete -c mc-launcher -n '__fish_seen_subcommand_from ctl; and __fish_seen_subcommand_from signal' -a '@SIGNALS@'
@VERB_FLAGS@complete -c mc-launcher -n '__fish_seen_subcommand_from help' -a ctl
complete -c mc-launcher -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell);
            let left = s
                .split('@')
                .skip(1)
                .any(|rest| rest.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
            assert!(!left, "{shell:?}: a placeholder is left:\n{s}");
            for v in ctl_verbs() {
                assert!(s.contains(v.verb), "{shell:?} lacks {}", v.verb);
            }
        }
    }

    #[test]
    fn shells_by_name() {
        let rows = [
            ("bash", Some(Shell::Bash)),
            ("zsh", Some(Shell::Zsh)),
            ("fish", Some(Shell::Fish)),
            ("tcsh", None),
            ("", None),
        ];
        for (word, want) in rows {
            assert_eq!(Shell::parse(word), want, "{word}");
        }
    }
}
