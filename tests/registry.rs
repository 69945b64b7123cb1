//! The registry image (example-registry/) on the local Docker engine, and
//! the seeds' workflow through it (README.rst "Ship a signed image"): a
//! fresh volume, the host trusting its private CA, `docker login`, a signed
//! push of the example image through the image's own notary, `docker trust
//! inspect`, a trusted pull and run, an unsigned tag refused, the trust
//! data kept across `docker restart`, a wrong password refused; and the
//! image as an operator runs it (`ctl status`, `docker kill -s HUP`,
//! `docker stop`).
//!
//! The registry is published on the docker0 address (172.17.0.1), never
//! localhost: Docker checks no certificate for localhost and 127.x names
//! (content-trust-notes pitfall 2). Everything is removed: containers and
//! volumes by their guards, /etc/docker/certs.d/ADDR by its guard, the
//! images pushed or pulled under ADDR by `Pushed`, the built images when
//! the test binary exits, then checked gone.

mod common;
use common::docker::*;
use common::registry::Registry;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A docker command with the client's environment for content trust.
fn client(cfg: &Path, trust: bool, extra: &[(&str, &str)], args: &[&str]) -> Out {
    let mut c = Command::new("docker");
    c.env("DOCKER_CONFIG", cfg)
        .env("DOCKER_CONTENT_TRUST", if trust { "1" } else { "0" })
        .args(args);
    for (k, v) in extra {
        c.env(k, v);
    }
    c.output().expect("docker").into()
}

/// Every image whose name starts with the registry's address, removed
/// when dropped (pushed tags, pulled digests).
struct Pushed(String);

impl Drop for Pushed {
    fn drop(&mut self) {
        let o = docker(&["images", "--format", "{{.Repository}} {{.ID}}"]);
        let prefix = format!("{}/", self.0);
        for line in o.stdout.lines() {
            if let Some((repo, id)) = line.split_once(' ') {
                if repo.starts_with(&prefix) {
                    let _ = docker(&["rmi", "-f", id]);
                }
            }
        }
    }
}

/// A random word (passphrases, unique content).
fn random_word() -> String {
    let mut b = [0u8; 12];
    let mut f = std::fs::File::open("/dev/urandom").expect("urandom");
    std::io::Read::read_exact(&mut f, &mut b).expect("urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// No secret anywhere in `text`.
fn assert_no_secret(text: &str, secrets: &[(&str, &str)]) {
    for (what, s) in secrets {
        assert!(!s.is_empty(), "{what}: an empty secret proves nothing");
        assert!(!text.contains(s), "{what} appears in the output:\n{text}");
    }
}

/// The digest `docker trust inspect` lists for `tag`, and the root key id.
fn signed_digest(inspect: &str, tag: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(inspect).expect("trust inspect JSON");
    let repo = &v[0];
    // the hex part only: as a reference, sha256:HEX
    let digest = repo["SignedTags"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["SignedTag"] == tag))
        .and_then(|t| t["Digest"].as_str())
        .map(|d| format!("sha256:{d}"))
        .unwrap_or_else(|| panic!("no signed tag {tag}: {inspect}"));
    let root = repo["AdministrativeKeys"]
        .as_array()
        .and_then(|a| a.iter().find(|k| k["Name"] == "Root"))
        .and_then(|k| k["Keys"][0]["ID"].as_str())
        .unwrap_or_else(|| panic!("no root key: {inspect}"))
        .to_string();
    (digest, root)
}

#[test]
fn a_signed_image_ships_through_the_registry_image() {
    let example = example_image();
    let reg = Registry::start("dct");
    let _ca = reg.trust_ca();
    let _pushed = Pushed(reg.addr.clone());
    let home = TempDir::new("dct-client");
    let cfg = home.join("docker");
    let mut seen = String::new();
    let mut keep = |o: Out| -> Out {
        seen.push_str(&o.stdout);
        seen.push_str(&o.stderr);
        o
    };

    // A wrong password: nginx's 401 (with Docker's header, or the client
    // would not even try basic auth).
    let wrong = keep(common::registry::login(
        &home.join("wrong"),
        &reg.addr,
        &reg.user,
        "not-the-password",
    ));
    assert!(!wrong.ok, "a wrong password logged in: {}", wrong.stdout);
    assert!(wrong.stderr.contains("401"), "{}", wrong.stderr);
    let login = keep(reg.login(&cfg));
    assert!(login.ok, "docker login: {}{}", login.stdout, login.stderr);

    let root_pass = format!("root-{}", random_word());
    let repo_pass = format!("repo-{}", random_word());
    let server = format!("https://{}", reg.addr);
    let trust_env = [
        ("DOCKER_CONTENT_TRUST_SERVER", server.as_str()),
        ("DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE", root_pass.as_str()),
        (
            "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE",
            repo_pass.as_str(),
        ),
    ];
    let repo = format!("{}/mcl-{}/example", reg.addr, std::process::id());
    let signed = format!("{repo}:signed");
    must(&["tag", example, &signed]);

    // The signed push: signed through the image's own notary.
    let push = keep(client(&cfg, true, &trust_env, &["push", &signed]));
    assert!(push.ok, "signed push: {}{}", push.stdout, push.stderr);
    assert!(
        push.stdout.contains("Successfully signed"),
        "{}{}",
        push.stdout,
        push.stderr
    );
    let inspect = keep(client(&cfg, true, &trust_env, &["trust", "inspect", &repo]));
    assert!(inspect.ok, "trust inspect: {}", inspect.stderr);
    let (digest, root_key) = signed_digest(&inspect.stdout, "signed");

    // Removed locally, then pulled with trust: the signed digest.
    must(&["rmi", &signed]);
    let pull = keep(client(&cfg, true, &trust_env, &["pull", &signed]));
    assert!(pull.ok, "trusted pull: {}{}", pull.stdout, pull.stderr);
    assert!(
        pull.stdout
            .contains(&format!("Pull (1 of 1): {signed}@{digest}")),
        "the pull was not resolved through notary to {digest}:\n{}",
        pull.stdout
    );
    let ran = keep(client(
        &cfg,
        true,
        &trust_env,
        &["run", "--rm", &signed, "echo", "the signed image ran"],
    ));
    assert!(
        ran.stdout.contains("the signed image ran"),
        "{}{}",
        ran.stdout,
        ran.stderr
    );

    // An unsigned tag, of content this daemon has never pulled (a layer of
    // random bytes, removed locally after the push): refused with trust.
    let ctx = TempDir::new("dct-unsigned");
    std::fs::write(ctx.join("unique"), random_word()).expect("unique file");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {example}\nCOPY unique /unique\n"),
    )
    .expect("Dockerfile");
    let unsigned = format!("{repo}:unsigned");
    let build_tag = test_tag("registry-unsigned");
    remove_at_exit(&build_tag);
    let b = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", &build_tag])
        .arg(ctx.path())
        .output()
        .expect("docker build");
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    must(&["tag", &build_tag, &unsigned]);
    let up = keep(client(&cfg, false, &[], &["push", &unsigned]));
    assert!(up.ok, "unsigned push: {}", up.stderr);
    must(&["rmi", &unsigned, &build_tag]);
    let refused = keep(client(&cfg, true, &trust_env, &["pull", &unsigned]));
    assert!(!refused.ok, "an unsigned tag was pulled with trust on");
    assert!(
        refused.stderr.contains("No valid trust data for unsigned"),
        "{}",
        refused.stderr
    );
    let refused = keep(client(
        &cfg,
        true,
        &trust_env,
        &["run", "--rm", &unsigned, "true"],
    ));
    assert!(!refused.ok, "an unsigned tag ran with trust on");
    assert!(
        !docker(&["image", "inspect", &unsigned]).ok,
        "the refused image is on the daemon"
    );
    // Without trust, the same tag is there: the refusal was trust's.
    let plain = keep(client(&cfg, false, &[], &["pull", &unsigned]));
    assert!(
        plain.ok,
        "the unsigned tag is not in the registry: {}",
        plain.stderr
    );

    // A restart of the registry container keeps the trust data: with a
    // fresh trust cache (nothing pinned, nothing cached), the same root key
    // and the same signed digest come from the server.
    reg.restart();
    must(&["rmi", &signed]);
    std::fs::remove_dir_all(cfg.join("trust/tuf")).expect("trust cache");
    let inspect = keep(client(&cfg, true, &trust_env, &["trust", "inspect", &repo]));
    assert!(
        inspect.ok,
        "trust inspect after restart: {}",
        inspect.stderr
    );
    assert_eq!(
        signed_digest(&inspect.stdout, "signed"),
        (digest.clone(), root_key)
    );
    // The garbage collection job, on request: the registry paused for it,
    // then back; what is signed is still there.
    must(&[
        "exec",
        &reg.container,
        "mc-launcher",
        "ctl",
        "start",
        "registry-gc",
    ]);
    let collected = wait_until(Duration::from_secs(120), || {
        reg.logs()
            .contains("registry: starting again after the run of registry-gc")
    });
    assert!(collected, "no GC run:\n{}", reg.logs());
    let logs = reg.logs();
    let order: Vec<usize> = [
        "registry: stopping for the run of registry-gc",
        "registry-gc: run started",
        "registry-gc: run ended (exit 0)",
        "registry: starting again after the run of registry-gc",
    ]
    .iter()
    .map(|l| {
        logs.find(l)
            .unwrap_or_else(|| panic!("{l:?} not in the log:\n{logs}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{logs}");
    reg.wait_ready();
    let pull = keep(client(&cfg, true, &trust_env, &["pull", &signed]));
    assert!(
        pull.ok,
        "trusted pull after restart: {}{}",
        pull.stdout, pull.stderr
    );
    assert!(
        pull.stdout.contains(&format!("{repo}@{digest}")),
        "{}",
        pull.stdout
    );
    assert!(!pull.stderr.contains("using cached"), "{}", pull.stderr);

    // No password or passphrase in anything printed: the container's log
    // (prepare steps and every service), `ctl status`, the clients.
    let volume_secret = |f: &str| -> String {
        let o = docker(&[
            "exec",
            &reg.container,
            "cat",
            &format!("{}/configuration/secrets/{f}", common::registry::VOLUME_DIR),
        ]);
        assert!(o.ok, "{f}: {}", o.stderr);
        o.stdout.trim().to_string()
    };
    let signer_pass = volume_secret("notary-signer.passphrase");
    let http_secret = volume_secret("registry-http.secret");
    let status = docker(&["exec", &reg.container, "mc-launcher", "ctl", "status"]);
    let all = format!("{seen}{}{}{}", reg.logs(), status.stdout, status.stderr);
    assert!(
        reg.logs().contains("nginx | "),
        "no access log:\n{}",
        reg.logs()
    );
    assert_no_secret(
        &all,
        &[
            ("the user's password", &reg.password),
            ("the root passphrase", &root_pass),
            ("the repository passphrase", &repo_pass),
            ("the signer's passphrase", &signer_pass),
            ("the registry's HTTP secret", &http_secret),
        ],
    );
}

#[test]
fn the_registry_image_as_an_operator_runs_it() {
    let reg = Registry::start("ops");
    let status = must(&["exec", &reg.container, "mc-launcher", "ctl", "status"]);
    for s in [
        "postgres",
        "notary-signer",
        "notary-server",
        "registry",
        "nginx",
    ] {
        let line = status
            .lines()
            .find(|l| l.split_whitespace().next() == Some(s))
            .unwrap_or_else(|| panic!("{s} not in ctl status:\n{status}"));
        assert!(line.contains("running"), "{line}\n{}", reg.logs());
    }
    // Started in order, each after the one before was ready.
    let logs = reg.logs();
    let ready: Vec<usize> = [
        "postgres",
        "notary-signer",
        "notary-server",
        "registry",
        "nginx",
    ]
    .iter()
    .map(|s| {
        logs.find(&format!("mc-launcher: {s}: ready"))
            .unwrap_or_else(|| panic!("{s} never ready:\n{logs}"))
    })
    .collect();
    assert!(ready.windows(2).all(|w| w[0] < w[1]), "{logs}");
    assert!(logs.contains("postgres: ready (sd_notify)"), "{logs}");

    // nginx's own 401 carries Docker's API version header, once; the
    // notary's health is public, the rest of it behind the same login.
    let head = |path: &str| -> String {
        let o = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-D", "-", "--cacert"])
            .arg(&reg.ca)
            .arg(format!("https://{}{path}", reg.addr))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&o.stdout).to_lowercase()
    };
    let v2 = head("/v2/");
    assert!(v2.starts_with("http/1.1 401"), "{v2}");
    assert_eq!(
        v2.matches("docker-distribution-api-version: registry/2.0")
            .count(),
        1,
        "{v2}"
    );
    assert!(
        v2.contains("www-authenticate: basic realm=\"registry\""),
        "{v2}"
    );
    assert!(head("/_notary_server/health").starts_with("http/1.1 200"));
    assert!(head("/v2/x/y/_trust/tuf/root.json").starts_with("http/1.1 401"));

    // HUP to the container: the launcher reloads its config; nothing
    // changed, so every service keeps its pid.
    let pids = |s: &str| -> String {
        let o = must(&[
            "exec",
            &reg.container,
            "mc-launcher",
            "ctl",
            "--json",
            "status",
        ]);
        let v: serde_json::Value = serde_json::from_str(&o).expect("status JSON");
        format!("{:?}", status_pids(&v, s))
    };
    let before: Vec<String> = ["nginx", "registry", "postgres"]
        .iter()
        .map(|s| pids(s))
        .collect();
    must(&["kill", "-s", "HUP", &reg.container]);
    let reloaded = wait_until(Duration::from_secs(30), || {
        reg.logs().contains("reloaded: ")
    });
    assert!(reloaded, "no reload in the log:\n{}", reg.logs());
    let after: Vec<String> = ["nginx", "registry", "postgres"]
        .iter()
        .map(|s| pids(s))
        .collect();
    assert_eq!(before, after, "{}", reg.logs());

    // A renewed certificate: nginx reloads it (watch, HUP), same pid.
    let served = || -> String {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect {} </dev/null 2>/dev/null | openssl x509 -noout -subject",
                reg.addr
            ))
            .output()
            .expect("openssl");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert!(served().contains("CN = registry"), "{}", served());
    let renew = format!(
        "set -e; cd {}/configuration/tls; t=$(mktemp -d); \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=renewed \
           -keyout $t/k -out $t/csr 2>/dev/null; \
         printf 'subjectAltName=IP:{}\\n' > $t/ext; \
         openssl x509 -req -in $t/csr -CA ca.crt -CAkey ca.key -CAserial $t/srl -CAcreateserial \
           -days 2 -extfile $t/ext -out $t/crt 2>/dev/null; \
         cp $t/k registry.key.new; mv registry.key.new registry.key; \
         cp $t/crt registry.crt.new; mv registry.crt.new registry.crt; rm -rf $t",
        common::registry::VOLUME_DIR,
        common::registry::HOST_ADDR
    );
    must(&["exec", &reg.container, "sh", "-c", &renew]);
    let renewed = wait_until(Duration::from_secs(30), || {
        served().contains("CN = renewed")
    });
    assert!(renewed, "nginx still serves {}:\n{}", served(), reg.logs());
    assert_eq!(
        pids("nginx"),
        before[0],
        "nginx was restarted:\n{}",
        reg.logs()
    );

    // sshd starts when a key appears in the volume's ssh/.
    let key = reg.dir().join("id_ed25519");
    let kg = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(kg.success());
    let ssh_dir = format!("{}:{}/ssh/", reg.container, common::registry::VOLUME_DIR);
    must(&["cp", &key.with_extension("pub").to_string_lossy(), &ssh_dir]);
    let sshd = wait_until(Duration::from_secs(30), || pids("sshd") != "[]");
    assert!(sshd, "no sshd after a key came:\n{}", reg.logs());

    // docker stop: a clean stop within Docker's 10 s (else 137), nginx by
    // QUIT, PostgreSQL by a fast shutdown, each with its summary line.
    must(&["stop", &reg.container]);
    let code = must(&["inspect", "-f", "{{.State.ExitCode}}", &reg.container]);
    let logs = reg.logs();
    assert_eq!(code, "0", "{logs}");
    for s in [
        "nginx",
        "registry",
        "notary-server",
        "notary-signer",
        "postgres",
    ] {
        assert!(
            logs.contains(&format!("summary: {s}: stopped")),
            "{s}:\n{logs}"
        );
    }
    assert!(logs.contains("database system is shut down"), "{logs}");
    // Ended by their own hand, not killed: nginx by QUIT, the registry by
    // TERM (it drains: http.draintimeout), PostgreSQL by INT.
    for s in ["nginx", "registry", "postgres"] {
        let end = logs
            .lines()
            .find(|l| l.contains(&format!("summary: {s}: stopped")))
            .unwrap_or_default();
        assert!(end.ends_with("(exit 0)"), "{s}: {end}\n{logs}");
    }
    assert_no_secret(&logs, &[("the user's password", &reg.password)]);
}
