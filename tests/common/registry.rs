//! The registry image (example-registry/) for the tests: built once per test
//! binary from local files (scripts/registry-image.sh, the binary under
//! test inside), started on a fresh named volume with a pillar that names
//! the docker0 address, published there, so that the host's Docker daemon
//! pushes and pulls through it like any remote registry (not localhost:
//! Docker skips TLS checks for localhost and 127.x names, content-trust-notes
//! pitfall 2). Everything is removed when the `Registry` is dropped (the
//! image when the test binary exits).
//!
//! ```ignore
//! let reg = common::registry::Registry::start("swarm");
//! reg.addr      // "172.17.0.1:PORT": images are "{addr}/name:tag"
//! reg.ca        // the CA file on the host (in a temp dir)
//! reg.user, reg.password
//! let _ca = reg.trust_ca();                   // /etc/docker/certs.d/{addr}/ca.crt until dropped
//! reg.login(&docker_config_dir);              // docker login with a private DOCKER_CONFIG
//! ```

use super::docker::{docker, image_once, must, test_name, Container, Volume};
use super::{free_port, wait_until, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// Where the image mounts its volume.
pub const VOLUME_DIR: &str = "/srv/projects/registry/data";

/// The docker0 bridge's address: reachable from the host's daemon and from
/// containers, and a name Docker treats as a secure registry.
pub const HOST_ADDR: &str = "172.17.0.1";

/// The registry image of this test run (`mc-launcher/registry:test-PID`),
/// built once by scripts/registry-image.sh from local files; removed when
/// the test binary exits.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    image_once(&IMAGE, "registry", "scripts/registry-image.sh")
}

/// A running registry container on a fresh volume.
pub struct Registry {
    /// `172.17.0.1:PORT`, the name images are pushed under.
    pub addr: String,
    /// The registry's CA certificate, copied to the host.
    pub ca: PathBuf,
    pub user: String,
    pub password: String,
    /// The container's name (for `docker restart`, `docker exec`, logs).
    pub container: String,
    // dropped in this order: the container, then its volume, then the dir
    ctr: Container,
    vol: Volume,
    dir: TempDir,
}

impl Registry {
    /// Build the image (once), then start it on a new volume under a name
    /// of this run made from `tag`, and wait until every service is ready.
    pub fn start(tag: &str) -> Registry {
        Registry::start_with(tag, &[])
    }

    /// The same, with more `docker run` options (before the image).
    pub fn start_with(tag: &str, opts: &[&str]) -> Registry {
        let img = image();
        let dir = TempDir::new(&format!("registry-{tag}"));
        let vol = Volume::create(&format!("{tag}-data"));
        let user = "pusher".to_string();
        let password = format!("pw-{:016x}-{}", random_u64(), std::process::id());
        // The operator's pillar: the address clients use, one user.
        let pillar = format!(
            "makina-projects.registry:\n  data:\n    server_aliases: [\"{HOST_ADDR}\"]\n    users:\n      {user}: {{password: \"{password}\"}}\n"
        );
        let conf = dir.join("configuration");
        std::fs::create_dir_all(&conf).expect("configuration dir");
        std::fs::write(conf.join("pillar.sls"), pillar).expect("pillar");
        let port = free_port();
        let publish = format!("{HOST_ADDR}:{port}:443");
        let mount = vol.mount(VOLUME_DIR);
        let name = test_name(tag);
        let _ = docker(&["rm", "-f", "-v", &name]);
        let mut args = vec!["create", "--name", &name, "-p", &publish, "-v", &mount];
        args.extend_from_slice(opts);
        args.push(img);
        must(&args);
        let ctr = Container { name: name.clone() };
        // Into the volume before the first start (docker cp mounts it).
        must(&[
            "cp",
            &conf.to_string_lossy(),
            &format!("{name}:{VOLUME_DIR}/"),
        ]);
        must(&["start", &name]);
        let reg = Registry {
            addr: format!("{HOST_ADDR}:{port}"),
            ca: dir.join("ca.crt"),
            user,
            password,
            container: name,
            ctr,
            vol,
            dir,
        };
        reg.wait_ready();
        must(&[
            "cp",
            &format!("{}:{VOLUME_DIR}/configuration/tls/ca.crt", reg.container),
            &reg.ca.to_string_lossy(),
        ]);
        reg
    }

    /// Wait until `ctl health` says every service is ready (panics with
    /// the container's log after two minutes).
    pub fn wait_ready(&self) {
        let ok = wait_until(Duration::from_secs(120), || {
            if self.ctr.state("Running") != "true" {
                return false;
            }
            self.ctr.exec(&["mc-launcher", "ctl", "health"]).ok
        });
        assert!(ok, "the registry never became ready:\n{}", self.logs());
    }

    /// The container's whole output so far.
    pub fn logs(&self) -> String {
        self.ctr.logs()
    }

    /// `docker restart`, then wait until ready again.
    pub fn restart(&self) {
        must(&["restart", &self.container]);
        self.wait_ready();
    }

    /// The volume's name.
    pub fn volume(&self) -> &str {
        &self.vol.name
    }

    /// A scratch directory of this registry (removed with it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Make the host's Docker daemon trust the registry's CA for `addr`
    /// (`/etc/docker/certs.d/ADDR/ca.crt`, read per request: no restart)
    /// until the guard is dropped.
    pub fn trust_ca(&self) -> CaGuard {
        let d = PathBuf::from("/etc/docker/certs.d").join(&self.addr);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("certs.d dir");
        let guard = CaGuard(d.clone());
        std::fs::copy(&self.ca, d.join("ca.crt")).expect("install the CA");
        guard
    }

    /// `docker login` into a private Docker client config dir (the
    /// password on stdin); also makes the client trust the CA for the
    /// registry's notary (`DIR/tls/ADDR/ca.crt`, same address).
    pub fn login(&self, docker_config: &Path) -> super::docker::Out {
        let tls = docker_config.join("tls").join(&self.addr);
        std::fs::create_dir_all(&tls).expect("tls dir");
        std::fs::copy(&self.ca, tls.join("ca.crt")).expect("client CA");
        login(docker_config, &self.addr, &self.user, &self.password)
    }
}

/// `docker login ADDR -u USER --password-stdin` with `DOCKER_CONFIG`.
pub fn login(docker_config: &Path, addr: &str, user: &str, password: &str) -> super::docker::Out {
    use std::io::Write;
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", docker_config)
        .args(["login", addr, "-u", user, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker login");
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(password.as_bytes());
    child.wait_with_output().expect("docker login").into()
}

/// `/etc/docker/certs.d/ADDR`, removed when dropped.
pub struct CaGuard(PathBuf);

impl Drop for CaGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Enough randomness for a test password (not for keys).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u64::from_le_bytes(b)
}
