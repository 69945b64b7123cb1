//! README.rst stays true to the code: every config option the decoder
//! accepts is documented, and the two set-up commands are the ones CI and a
//! newcomer run.

use mc_launcher::config::decode::REFERENCE;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.rst")).expect("README.rst")
}

#[test]
fn every_config_option_is_in_the_reference() {
    let text = readme();
    let reference = &text[text
        .find("Configuration reference")
        .expect("reference section")..];
    let mut missing = Vec::new();
    for (section, keys) in REFERENCE {
        for key in *keys {
            let name = if section.is_empty() {
                format!("``{key}``")
            } else {
                format!("``{section}.{key}``")
            };
            if !reference.contains(&name) {
                missing.push(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "options missing from README.rst's reference: {missing:?}"
    );
}

#[test]
fn the_two_commands_are_documented_and_ci_runs_the_test_command() {
    let text = readme();
    assert!(text.contains("\n    scripts/demo.sh\n"), "demo command");
    assert!(
        text.contains("\n    bash scripts/test.sh\n"),
        "test command"
    );
    let ci =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).expect(".ci/run");
    assert!(
        ci.lines()
            .any(|l| l.trim().trim_start_matches("exec ") == "bash scripts/test.sh"),
        "{ci}"
    );
}

/// The Dockerfile lines README.rst gives image authors (a copy of the
/// default pillar for the launcher to restore) are the example's own.
#[test]
fn the_image_pillar_copy_is_the_example_dockerfiles() {
    let text = readme();
    let dockerfile = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/example-project/Dockerfile"
    ))
    .expect("Dockerfile");
    let start = dockerfile
        .find("RUN mkdir -p /var/lib/mc-launcher")
        .expect("the copy in the Dockerfile");
    let lines: Vec<&str> = dockerfile[start..].lines().take(2).collect();
    let shown: String = lines.iter().map(|l| format!("    {l}\n")).collect();
    assert!(text.contains(&shown), "README.rst does not show:\n{shown}");
}

/// Whether Rust source `text` names the host's temp dir itself.
fn names_the_temp_dir(text: &str) -> bool {
    text.contains(&["std::env::", "temp_dir()"].concat())
}

/// No test leaves files in the host's temp dir: in tests/ only the
/// harness's `TempDir` (tests/common/mod.rs, removed on drop, so also when
/// a test panics) names it; `scripts/test.sh` checks what the binaries
/// themselves would leave.
#[test]
fn only_the_harness_names_the_temp_dir() {
    assert!(names_the_temp_dir(
        &["let p = std::env::", "temp_dir().join(\"x\");"].concat()
    ));
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    let mut files = Vec::new();
    for dir in [tests.to_string(), format!("{tests}/common")] {
        for e in std::fs::read_dir(&dir).expect("tests dir").flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 20, "{files:?}");
    let offenders: Vec<_> = files
        .iter()
        .filter(|p| !p.ends_with("common/mod.rs"))
        .filter(|p| names_the_temp_dir(&std::fs::read_to_string(p).unwrap_or_default()))
        .collect();
    assert!(
        offenders.is_empty(),
        "use common::TempDir, not the temp dir itself: {offenders:?}"
    );
}
