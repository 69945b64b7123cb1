//! Docker for the tests: the `docker` CLI, the release binary the images
//! hold, names and tags of this run (removed, and checked gone, when the
//! test binary exits), volumes and containers removed when dropped.
//! tests/docker.rs, tests/registry.rs, tests/swarm.rs and the registry
//! helper (common::registry) share it.

use super::{http_get, repo, wait_until};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;

/// An image tag of this run: removed when the test binary exits.
pub fn test_tag(name: &str) -> String {
    format!("mc-launcher/{name}:test-{}", std::process::id())
}

/// A container or volume name of this run.
pub fn test_name(tag: &str) -> String {
    format!("mcl-{tag}-{}", std::process::id())
}

pub struct Out {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Out {
    fn from(o: std::process::Output) -> Out {
        Out {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn docker(args: &[&str]) -> Out {
    docker_env(args, &[])
}

/// `docker ARGS` with these variables added to its environment
/// (`DOCKER_CONFIG`, a stack file's variables).
pub fn docker_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("docker").into()
}

pub fn must(args: &[&str]) -> String {
    must_env(args, &[])
}

/// `must` with these variables added to docker's environment.
pub fn must_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = docker_env(args, env);
    assert!(o.ok, "docker {args:?}: {}{}", o.stdout, o.stderr);
    o.stdout.trim().to_string()
}

/// The release artifact: `MC_STATIC_BIN`, or what scripts/build-static.sh
/// builds (a cargo no-op when it is current).
pub fn static_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MC_STATIC_BIN").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let o = Command::new(repo().join("scripts/build-static.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("build-static.sh");
        assert!(o.status.success(), "scripts/build-static.sh failed");
        PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
    })
}

// ----- cleanup at exit ---------------------------------------------------

static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" {
    fn atexit(cb: extern "C" fn()) -> i32;
    fn _exit(code: i32) -> !;
}

/// Remove `image` when the test binary exits (tests share it meanwhile).
pub fn remove_at_exit(image: &str) {
    static REGISTER: Once = Once::new();
    // SAFETY: registers a plain function; it runs once, at exit.
    REGISTER.call_once(|| unsafe {
        atexit(at_exit);
    });
    if let Ok(mut v) = BUILT.lock() {
        v.push(image.to_string());
    }
}

/// At exit: the images of this run go (last built first), then nothing of
/// this run may remain: a leftover container or volume fails the run.
extern "C" fn at_exit() {
    let images = BUILT
        .lock()
        .map(|v| v.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    for img in images.iter().rev() {
        let _ = docker(&["rmi", "-f", img]);
    }
    let suffix = format!("-{}", std::process::id());
    let ours = |out: Out| -> Vec<String> {
        out.stdout
            .lines()
            .filter(|n| n.starts_with("mcl-") && n.ends_with(&suffix))
            .map(str::to_string)
            .collect()
    };
    let containers = ours(docker(&["ps", "-a", "--format", "{{.Names}}"]));
    let volumes = ours(docker(&["volume", "ls", "--format", "{{.Name}}"]));
    let images: Vec<String> = images
        .into_iter()
        .filter(|i| docker(&["image", "inspect", i]).ok)
        .collect();
    if !(containers.is_empty() && volumes.is_empty() && images.is_empty()) {
        eprintln!(
            "this test binary left behind: containers {containers:?}, volumes {volumes:?}, images {images:?}"
        );
        for c in &containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        for v in &volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
        // SAFETY: leaving from an exit handler without running others.
        unsafe { _exit(1) };
    }
}

// ----- images ----------------------------------------------------------

/// Build an image of this tree with `script` (scripts/docker-image.sh or
/// scripts/registry-image.sh: `script BINARY TAG`) from the binary under
/// test, tagged `tag` (removed when the test binary exits), with the
/// script's output as an operator sees it: no legacy-builder banner, no
/// debconf noise.
pub fn build_image(script: &str, tag: &str) {
    remove_at_exit(tag);
    let o = Command::new(repo().join(script))
        .arg(static_bin())
        .arg(tag)
        .output()
        .expect(script);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "building {tag} failed:\n{out}{err}");
    assert_eq!(out.trim(), tag);
    for noise in ["DEPRECATED", "legacy builder", "debconf", "apt-utils"] {
        assert!(
            !err.contains(noise),
            "{noise:?} in the output of {script}:\n{err}"
        );
    }
}

/// The image `script` builds, tagged `test_tag(name)`: built at the first
/// call, kept in `cell` for the rest of the test binary.
pub fn image_once(cell: &'static OnceLock<String>, name: &str, script: &str) -> &'static str {
    cell.get_or_init(|| {
        let tag = test_tag(name);
        build_image(script, &tag);
        tag
    })
}

/// The example image (example-project/), built once per test binary.
pub fn example_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    image_once(&IMAGE, "example", "scripts/docker-image.sh")
}

// ----- containers, volumes ---------------------------------------------

/// A named volume, removed when dropped (after the containers using it:
/// declare it first).
pub struct Volume {
    pub name: String,
}

impl Volume {
    /// The name only: something else (a README recipe) creates it.
    pub fn named(tag: &str) -> Volume {
        let name = test_name(tag);
        let _ = docker(&["volume", "rm", "-f", &name]);
        Volume { name }
    }
    pub fn create(tag: &str) -> Volume {
        let v = Volume::named(tag);
        must(&["volume", "create", &v.name]);
        v
    }
    /// `-v` of this volume at `dir`.
    pub fn mount(&self, dir: &str) -> String {
        format!("{}:{dir}", self.name)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.name]);
    }
}

/// A container, removed with its anonymous volumes when dropped.
pub struct Container {
    pub name: String,
}

impl Container {
    /// The name only: something else (a README recipe) creates it.
    pub fn named(tag: &str) -> Container {
        let name = test_name(tag);
        let _ = docker(&["rm", "-f", "-v", &name]);
        Container { name }
    }
    pub fn run(tag: &str, opts: &[&str], cmd: &[&str]) -> Container {
        let c = Container::named(tag);
        let mut args = vec!["run", "-d", "--name", &c.name];
        args.extend_from_slice(opts);
        args.extend_from_slice(cmd);
        must(&args);
        c
    }
    pub fn ip(&self) -> String {
        must(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            &self.name,
        ])
    }
    pub fn logs(&self) -> String {
        let o = docker(&["logs", &self.name]);
        o.stdout + &o.stderr
    }
    pub fn state(&self, field: &str) -> String {
        must(&[
            "inspect",
            "-f",
            &format!("{{{{.State.{field}}}}}"),
            &self.name,
        ])
    }
    pub fn page(&self, port: u16, want: &str) -> String {
        let addr = format!("{}:{port}", self.ip());
        let mut page = String::new();
        let ok = wait_until(Duration::from_secs(30), || {
            page = http_get(&addr, "/").unwrap_or_default();
            page.contains(want)
        });
        assert!(ok, "{want:?} never on the page: {page:?}\n{}", self.logs());
        page
    }
    pub fn wait_exit(&self, limit: Duration) -> i32 {
        let ok = wait_until(limit, || self.state("Running") == "false");
        assert!(ok, "the container did not exit:\n{}", self.logs());
        self.state("ExitCode").parse().expect("exit code")
    }
    pub fn exec(&self, cmd: &[&str]) -> Out {
        let mut args = vec!["exec", &self.name];
        args.extend_from_slice(cmd);
        docker(&args)
    }
    /// Its anonymous volumes (named volumes have guards of their own).
    pub fn anonymous_volumes(&self) -> Vec<String> {
        let o = docker(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}",
            &self.name,
        ]);
        o.stdout
            .split_whitespace()
            .filter(|v| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let anonymous = self.anonymous_volumes();
        let _ = docker(&["rm", "-f", "-v", &self.name]);
        let left: Vec<&String> = anonymous
            .iter()
            .filter(|v| docker(&["volume", "inspect", v]).ok)
            .collect();
        for v in &left {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
        if !std::thread::panicking() {
            assert!(
                left.is_empty(),
                "{}: volumes left behind: {left:?}",
                self.name
            );
        }
    }
}
