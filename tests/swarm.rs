//! The example as a one-node Docker Swarm stack
//! (example-project/swarm/stack.yml), on a swarm this test creates and
//! leaves: the example image pushed to the registry image and deployed by
//! digest (`--with-registry-auth`), its pillar a Docker config, its SSH key
//! a Docker secret, its health `mc-launcher ctl health --ready`; then a
//! start-first rolling update to a new pillar config and a rollback while a
//! client on the stack's network polls the page, resolving
//! `tasks.<stack>_web` as a DNS-caching proxy does: not one request may
//! fail.
//!
//! The test never touches a swarm it did not create: when this Docker node
//! is already in one it fails, saying so. Everything it makes goes, also
//! when it fails (a guard): the stack, its configs, secrets, network and
//! volume, the client container, the swarm (left), the `docker_gwbridge`
//! network the swarm made, the images, the registry's CA file under
//! /etc/docker/certs.d/, the Docker client config of the login.

mod common;
use common::docker::*;
use common::registry::Registry;
use common::*;
use std::path::PathBuf;
use std::time::Duration;

/// A hang guard for each wait, not a performance bound.
const HANG_GUARD: Duration = Duration::from_secs(180);

fn swarm_dir() -> PathBuf {
    repo().join("example-project/swarm")
}

/// The stack file, rendered by Docker's own loader with these variables
/// (`docker stack config`), as JSON.
fn stack_config(env: &[(&str, &str)]) -> serde_json::Value {
    let file = swarm_dir().join("stack.yml");
    let text = must_env(&["stack", "config", "-c", &file.to_string_lossy()], env);
    mc_launcher::yaml::parse(&text, &file)
        .unwrap_or_else(|e| panic!("docker stack config output: {e:?}\n{text}"))
        .to_json()
}

/// A duration as Docker prints it (`30s`, `1m0s`), in seconds.
fn seconds(d: &str) -> u64 {
    let (mut total, mut n) = (0, 0);
    for c in d.chars() {
        match c {
            '0'..='9' => n = n * 10 + u64::from(c as u8 - b'0'),
            'h' => (total, n) = (total + n * 3600, 0),
            'm' => (total, n) = (total + n * 60, 0),
            's' => (total, n) = (total + n, 0),
            _ => panic!("duration {d:?}"),
        }
    }
    assert_eq!(n, 0, "duration {d:?} ends without a unit");
    total
}

/// The stack file keeps the launcher's contract, read the way Docker reads
/// it: without EXAMPLE_IMAGE it refuses to deploy (saying which variable);
/// the image is a digest; Docker's kill comes after the launcher's own
/// deadline; the healthcheck is the launcher's readiness, which fails while
/// it drains; the drain outlasts Docker's own 2 s between taking a task
/// out of DNS and SIGTERM; the pillar config and the key secret land where
/// the example's mc-launcher.yml reads them; start-first updates and
/// rollbacks over DNS round robin on an attachable network.
#[test]
fn the_stack_file_keeps_the_launchers_contract() {
    let o = docker(&[
        "stack",
        "config",
        "-c",
        &swarm_dir().join("stack.yml").to_string_lossy(),
    ]);
    assert!(
        !o.ok && o.stderr.contains("EXAMPLE_IMAGE"),
        "no image, yet: {}{}",
        o.stdout,
        o.stderr
    );
    let image = "registry.example:5000/mc-launcher/example@sha256:0123";
    let c = stack_config(&[("EXAMPLE_IMAGE", image)]);
    let web = &c["services"]["web"];
    assert_eq!(web["image"], image);

    let env = &web["environment"];
    let shutdown = seconds(
        env["MC_SHUTDOWN_TIMEOUT"]
            .as_str()
            .expect("MC_SHUTDOWN_TIMEOUT"),
    );
    let drain = seconds(env["MC_EXAMPLE_DRAIN"].as_str().expect("MC_EXAMPLE_DRAIN"));
    let grace = seconds(
        web["stop_grace_period"]
            .as_str()
            .expect("stop_grace_period"),
    );
    assert!(
        shutdown < grace,
        "MC_SHUTDOWN_TIMEOUT {shutdown}s must end before stop_grace_period {grace}s"
    );
    assert!(drain > 2 && drain < shutdown, "drain {drain}s");

    assert_eq!(
        web["healthcheck"]["test"],
        serde_json::json!(["CMD", "mc-launcher", "ctl", "health", "--ready"])
    );
    let configs = web["configs"].as_array().expect("configs");
    assert_eq!(configs.len(), 1, "{configs:?}");
    assert_eq!(
        configs[0]["target"],
        "/srv/projects/example/data/configuration/pillar.sls"
    );
    let secrets = web["secrets"].as_array().expect("secrets");
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let key = secrets[0]["target"].as_str().expect("secret target");
    assert!(
        key.starts_with("/srv/projects/example/data/ssh/") && key.ends_with(".pub"),
        "{key}"
    );
    let deploy = &web["deploy"];
    assert_eq!(deploy["endpoint_mode"], "dnsrr");
    assert_eq!(deploy["update_config"]["order"], "start-first");
    assert_eq!(deploy["rollback_config"]["order"], "start-first");
    let network = web["networks"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("a network");
    assert_eq!(c["networks"][&network]["attachable"], true);

    // The example's config reads the drain from MC_EXAMPLE_DRAIN, and the
    // config and secret names follow their versions.
    let yml = std::fs::read_to_string(repo().join("example-project/.salt/mc-launcher.yml"))
        .expect("mc-launcher.yml");
    assert!(yml.contains("env.MC_EXAMPLE_DRAIN"), "{yml}");
    let v = stack_config(&[
        ("EXAMPLE_IMAGE", image),
        ("PILLAR_VERSION", "7"),
        ("SSH_KEY_VERSION", "3"),
    ]);
    assert_eq!(v["configs"]["pillar"]["name"], "example-pillar-7");
    assert_eq!(v["secrets"]["operator_key"]["name"], "example-ssh-key-3");
}

// ----- the swarm, its stack and everything they make ------------------------

/// Names of this run.
fn ours(what: &str) -> String {
    format!("mcl-swarm-{what}-{}", std::process::id())
}

/// Everything the swarm test makes, undone in reverse by `teardown` (and by
/// drop, after a failure).
#[derive(Default)]
struct World {
    /// The swarm is ours (we ran `docker swarm init`).
    swarm: bool,
    /// `docker_gwbridge` was there before the swarm (then it stays).
    gwbridge_was_there: bool,
    stack: Option<String>,
    client: Option<String>,
    images: Vec<String>,
    done: bool,
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> bool {
    let ok = wait_until(HANG_GUARD, &mut f);
    if !ok {
        eprintln!("swarm test: gave up waiting for {what}");
    }
    ok
}

fn lines(args: &[&str]) -> Vec<String> {
    docker(args)
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

impl World {
    /// Undo everything; what could not be removed, as messages.
    fn teardown(&mut self) -> Vec<String> {
        self.done = true;
        let mut left = Vec::new();
        if let Some(c) = self.client.take() {
            let _ = docker(&["rm", "-f", "-v", &c]);
        }
        if let Some(stack) = self.stack.take() {
            let _ = docker(&["stack", "rm", &stack]);
            let label = format!("label=com.docker.stack.namespace={stack}");
            wait_for("the stack's containers to go", || {
                lines(&["ps", "-a", "-q", "--filter", &label]).is_empty()
            });
            let volume = format!("{stack}_data");
            wait_for("the stack's volume to go", || {
                let _ = docker(&["volume", "rm", &volume]);
                !docker(&["volume", "inspect", &volume]).ok
            });
            for kind in ["service", "config", "secret", "network"] {
                wait_for("the stack's objects to go", || {
                    lines(&[kind, "ls", "-q", "--filter", &label]).is_empty()
                });
            }
            let containers = lines(&["ps", "-a", "-q", "--filter", &label]);
            if !containers.is_empty() {
                left.push(format!("containers of {stack}: {containers:?}"));
                for c in &containers {
                    let _ = docker(&["rm", "-f", "-v", c]);
                }
            }
            if docker(&["volume", "inspect", &volume]).ok {
                left.push(format!("volume {volume}"));
            }
            if self.swarm {
                for kind in ["service", "config", "secret", "network"] {
                    let l = lines(&[kind, "ls", "-q", "--filter", &label]);
                    if !l.is_empty() {
                        left.push(format!("{kind}s of {stack}: {l:?}"));
                    }
                }
            }
        }
        if self.swarm {
            self.swarm = false;
            let o = docker(&["swarm", "leave", "--force"]);
            if !o.ok || swarm_state() != "inactive" {
                left.push(format!("the swarm: {}{}", o.stdout, o.stderr));
            }
            if !self.gwbridge_was_there {
                wait_for("docker_gwbridge to go", || {
                    let _ = docker(&["network", "rm", "docker_gwbridge"]);
                    !docker(&["network", "inspect", "docker_gwbridge"]).ok
                });
                if docker(&["network", "inspect", "docker_gwbridge"]).ok {
                    left.push("network docker_gwbridge".into());
                }
            }
            if docker(&["network", "inspect", "ingress"]).ok {
                left.push("network ingress".into());
            }
        }
        for img in self.images.drain(..).rev() {
            let _ = docker(&["rmi", "-f", &img]);
            if docker(&["image", "inspect", &img]).ok {
                left.push(format!("image {img}"));
            }
        }
        left
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !self.done {
            let left = self.teardown();
            if !left.is_empty() {
                eprintln!("tests/swarm.rs left behind: {left:?}");
            }
        }
    }
}

fn swarm_state() -> String {
    must(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
}

/// The client's view of the page so far: one entry per request.
struct Polls {
    lines: Vec<String>,
}

impl Polls {
    fn of(client: &str) -> Polls {
        Polls {
            lines: docker(&["logs", client])
                .stdout
                .lines()
                .map(str::to_string)
                .collect(),
        }
    }
    fn failures(&self) -> Vec<&String> {
        self.lines
            .iter()
            .filter(|l| l.starts_with("fail "))
            .collect()
    }
    /// The titles the page had, from request `from` on.
    fn titles_from(&self, from: usize) -> Vec<&str> {
        self.lines
            .iter()
            .skip(from)
            .filter_map(|l| l.strip_prefix("ok "))
            .filter_map(|l| l.split_once(' ').map(|(_, t)| t))
            .collect()
    }
}

/// Wait until the client has seen `title` on `n` requests in a row, all
/// after request `from`; the number of requests then.
fn wait_title(client: &str, from: usize, title: &str, n: usize) -> usize {
    let mut seen = 0;
    let ok = wait_for(title, || {
        let p = Polls::of(client);
        seen = p.lines.len();
        let t = p.titles_from(from);
        t.len() >= n && t[t.len() - n..].iter().all(|x| *x == title)
    });
    let p = Polls::of(client);
    assert!(
        ok,
        "the client never saw {title:?} {n} times in a row; last requests:\n{}",
        p.lines[p.lines.len().saturating_sub(20)..].join("\n")
    );
    assert!(
        p.failures().is_empty(),
        "failed requests: {:?}",
        p.failures()
    );
    seen
}

/// The running tasks' containers of a service.
fn tasks(service: &str) -> Vec<String> {
    lines(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
        "--filter",
        "status=running",
    ])
}

fn service_field(service: &str, field: &str) -> String {
    must(&["service", "inspect", "-f", field, service])
}

#[test]
fn stack_deploys_by_digest_and_rolls_the_pillar_without_a_failed_request() {
    let state = swarm_state();
    assert_eq!(
        state, "inactive",
        "this Docker node is already in a swarm ({state}): tests/swarm.rs creates a swarm of its \
         own and leaves it, and will not touch one it did not create; leave it first \
         (`docker swarm leave --force`) or run the other tests without this one"
    );
    // The registry image, trusted (its CA for its address only) and
    // logged into with a Docker client config of this test.
    let t0 = std::time::Instant::now();
    let phase = |what: &str| eprintln!("swarm: {:>5.1}s {what}", t0.elapsed().as_secs_f64());
    // The example image builds while the registry starts.
    let build = std::thread::spawn(example_image);
    let registry = Registry::start("swarm-registry");
    phase("registry ready");
    let _ca = registry.trust_ca();
    let mut world = World::default();
    world.gwbridge_was_there = docker(&["network", "inspect", "docker_gwbridge"]).ok;
    let tmp = TempDir::new("swarm");
    let docker_config = tmp.join("docker-config");
    std::fs::create_dir(&docker_config).expect("docker config dir");
    let dc = docker_config.to_string_lossy().into_owned();
    let client_env = [("DOCKER_CONFIG", dc.as_str())];
    let o = registry.login(&docker_config);
    assert!(o.ok, "docker login: {}{}", o.stdout, o.stderr);

    // The example image, pushed; then only the registry has it.
    let built = build.join().expect("building the example image");
    let repo_ref = format!("{}/mc-launcher/example", registry.addr);
    let pushed = format!("{repo_ref}:swarm-{}", std::process::id());
    world.images.push(pushed.clone());
    must(&["tag", built, &pushed]);
    let push = must_env(&["push", &pushed], &client_env);
    let digest = push
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in the push output:\n{push}"))
        .to_string();
    let image = format!("{repo_ref}@{digest}");
    world.images.push(image.clone());
    // Only the registry has it by that name (the daemon keeps the layers
    // under the test's own tag: the pull fetches the manifest).
    must(&["rmi", &pushed]);
    if docker(&["image", "inspect", &image]).ok {
        must(&["rmi", &image]);
    }
    assert!(
        !docker(&["image", "inspect", &image]).ok,
        "{image} is still here: the swarm would not pull it"
    );

    phase("example image pushed");
    // The swarm: one manager, on loopback only.
    let o = docker(&[
        "swarm",
        "init",
        "--advertise-addr",
        "127.0.0.1",
        "--listen-addr",
        "127.0.0.1:2377",
    ]);
    world.swarm = o.ok || swarm_state() == "active";
    assert!(o.ok, "docker swarm init: {}{}", o.stdout, o.stderr);

    // The operator's inputs: pillar v1 and v2, an SSH key pair.
    let pillar = |v: u32| {
        let p = tmp.join(&format!("pillar-{v}.sls"));
        write(
            &p,
            &format!(
                "makina-projects.example:\n  data:\n    site_name: Swarm pillar {v}\n    greeting: Hello from config {v}\n"
            ),
        );
        p.to_string_lossy().into_owned()
    };
    let (pillar1, pillar2) = (pillar(1), pillar(2));
    let key = tmp.join("operator");
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "swarm@test", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(o.status.success(), "ssh-keygen: {o:?}");
    let public_key = tmp.join("operator.pub").to_string_lossy().into_owned();

    let stack = ours("stack");
    let web = format!("{stack}_web");
    let stack_file = swarm_dir().join("stack.yml").to_string_lossy().into_owned();
    world.stack = Some(stack.clone());
    let deploy = |version: &str, pillar_file: &str| {
        let env = [
            ("DOCKER_CONFIG", dc.as_str()),
            ("EXAMPLE_IMAGE", image.as_str()),
            ("PILLAR_VERSION", version),
            ("PILLAR_FILE", pillar_file),
            ("SSH_KEY_FILE", public_key.as_str()),
        ];
        must_env(
            &[
                "stack",
                "deploy",
                "--with-registry-auth",
                "--detach=false",
                "-c",
                &stack_file,
                &stack,
            ],
            &env,
        )
    };
    deploy("1", &pillar1);
    phase("stack deployed");

    // The task runs the image by digest, healthy, with the pillar config
    // and the key secret installed.
    let task = tasks(&web);
    assert_eq!(task.len(), 1, "{task:?}");
    let task = &task[0];
    assert_eq!(
        must(&["inspect", "-f", "{{.Config.Image}}", task]),
        image,
        "the task's image"
    );
    assert!(
        wait_for("a healthy task", || must(&[
            "inspect",
            "-f",
            "{{.State.Health.Status}}",
            task
        ]) == "healthy"),
        "the task never became healthy"
    );
    let status = must(&["exec", task, "mc-launcher", "ctl", "status"]);
    for s in ["web", "worker", "sshd"] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(s) && l.contains("running")),
            "{s} is not running:\n{status}"
        );
    }

    // A client on the stack's network: the page, over DNS round robin,
    // through a 3 s DNS cache (longer than the 2 s Docker waits between
    // taking a task out of DNS and stopping it: the drain covers the rest).
    let client = ours("client");
    world.client = Some(client.clone());
    let poll = swarm_dir().join("poll.py");
    must(&[
        "run",
        "-d",
        "--name",
        &client,
        "--network",
        &format!("{stack}_front"),
        "-v",
        &format!("{}:/poll.py:ro", poll.display()),
        "-v",
        &format!("{}:/key:ro", key.display()),
        "mc-launcher/base:bookworm",
        "python3",
        "/poll.py",
        "--interval",
        "0.02",
        "--dns-cache",
        "3",
        &web,
    ]);
    let v1 = "Swarm pillar 1";
    let before_update = wait_title(&client, 0, v1, 20);
    let page = must(&[
        "exec",
        &client,
        "python3",
        "-c",
        &format!(
            "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://tasks.{web}:8080/').read().decode())"
        ),
    ]);
    assert!(
        page.contains("<h1>Swarm pillar 1</h1>") && page.contains("Hello from config 1"),
        "{page}"
    );
    // The operator logs in with the key of the secret.
    let target = format!("root@tasks.{web}");
    let mut args = vec!["exec", &client, "ssh", "-i", "/key", "-o", "LogLevel=ERROR"];
    args.extend_from_slice(SSH_BATCH);
    args.extend([
        target.as_str(),
        "cat /srv/projects/example/data/configuration/app.json",
    ]);
    let ssh = must(&args);
    assert!(ssh.contains("\"site_name\": \"Swarm pillar 1\""), "{ssh}");

    // The rolling update to pillar v2, start-first, under the client.
    phase("client polling");
    deploy("2", &pillar2);
    phase("update completed");
    assert_eq!(service_field(&web, "{{.UpdateStatus.State}}"), "completed");
    let v2 = "Swarm pillar 2";
    let after_update = wait_title(&client, before_update, v2, 20);
    // The old task drained before it stopped, and stopped cleanly.
    assert!(
        wait_for("the old task to exit", || !tasks(&web).contains(task)),
        "the old task still runs"
    );
    let old = docker(&["logs", task]);
    let old_logs = old.stdout + &old.stderr;
    assert!(old_logs.contains("draining for 5.0s"), "{old_logs}");
    assert_eq!(must(&["inspect", "-f", "{{.State.ExitCode}}", task]), "0");

    phase("old task drained and gone");
    // Rollback to the previous spec: the v1 config, start-first.
    must(&["service", "rollback", "--detach=false", &web]);
    assert_eq!(
        service_field(&web, "{{.UpdateStatus.State}}"),
        "rollback_completed"
    );
    let after_rollback = wait_title(&client, after_update, v1, 20);
    phase("rolled back");

    // The client's account: every request answered.
    must(&["stop", &client]);
    let p = Polls::of(&client);
    let last = p.lines.last().cloned().unwrap_or_default();
    let (requests, failed) = last
        .strip_prefix("done ")
        .and_then(|r| r.split_once(' '))
        .unwrap_or_else(|| panic!("no summary from the client: {last:?}"));
    assert_eq!(failed, "0", "failed requests: {:?}", p.failures());
    let requests: usize = requests.parse().expect("count");
    assert!(
        requests >= after_rollback && after_update > before_update && after_rollback > after_update,
        "{requests} requests, {before_update}/{after_update}/{after_rollback}"
    );
    eprintln!(
        "swarm: {requests} requests, 0 failed ({} during the update, {} during the rollback)",
        after_update - before_update,
        after_rollback - after_update
    );

    let left = world.teardown();
    phase("torn down");
    assert!(left.is_empty(), "left behind: {left:?}");
}
