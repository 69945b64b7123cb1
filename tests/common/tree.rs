//! A makina tree in a temp root, shared by the tests of the prepare phase:
//! project `demo` with an image pillar, a data volume, and a config whose
//! state dir (and, with `Tree::new`, control socket) are inside the root.

use super::{as_nobody, chown_r, write, Launch, TempDir};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The image's default pillar of every tree.
pub const IMAGE_PILLAR: &str = "makina-projects.demo:\n  data:\n    site: image-default\n";

pub struct Tree {
    pub d: TempDir,
}

impl Tree {
    /// `config` is appended to mc-launcher.yml, after the state dir and
    /// the control socket.
    pub fn new(tag: &str, config: &str) -> Tree {
        Tree::make(
            tag,
            &format!("control:\n  socket: \"{{{{ root }}}}/ctl.sock\"\n{config}"),
        )
    }

    /// The same, with the default control socket (`/run`: a tmpfs in tests).
    pub fn default_socket(tag: &str, config: &str) -> Tree {
        Tree::make(tag, config)
    }

    fn make(tag: &str, config: &str) -> Tree {
        let t = Tree {
            d: TempDir::new(tag),
        };
        write(&t.pillar(), IMAGE_PILLAR);
        std::fs::create_dir_all(t.volume()).expect("volume");
        write(
            &t.config(),
            &format!("paths:\n  state: \"{{{{ root }}}}/state\"\n{config}"),
        );
        t
    }

    pub fn root(&self) -> &Path {
        self.d.path()
    }
    pub fn project(&self) -> PathBuf {
        self.d.join("projects/demo/project")
    }
    pub fn config(&self) -> PathBuf {
        self.project().join(".salt/mc-launcher.yml")
    }
    pub fn pillar_dir(&self) -> PathBuf {
        self.d.join("projects/demo/pillar")
    }
    pub fn pillar(&self) -> PathBuf {
        self.pillar_dir().join("init.sls")
    }
    pub fn volume(&self) -> PathBuf {
        self.d.join("projects/demo/data")
    }
    /// The operator's pillar override in the volume.
    pub fn source(&self) -> PathBuf {
        self.volume().join("configuration/pillar.sls")
    }
    pub fn state(&self) -> PathBuf {
        self.d.join("state")
    }
    /// Assert that the pillar is the image's default.
    #[track_caller]
    pub fn assert_image_pillar(&self) {
        let now = std::fs::read_to_string(self.pillar()).expect("pillar");
        assert_eq!(now, IMAGE_PILLAR, "the image default pillar");
    }
    /// The launcher over the tree as uid 65534 (setpriv, not PID 1), with
    /// TMPDIR a world-writable `scratch` in the tree.
    pub fn launch_as_nobody(&self, args: &[&str]) -> Launch {
        let scratch = self.d.join("scratch");
        std::fs::create_dir_all(&scratch).expect("scratch");
        std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        as_nobody(args)
            .env("TMPDIR", &scratch.to_string_lossy())
            .root(self.root())
    }
    /// The whole tree owned by uid 65534, with its `scratch` TMPDIR (for
    /// `launch_as_nobody`).
    pub fn give_to_nobody(&self) {
        let scratch = self.d.join("scratch");
        std::fs::create_dir_all(&scratch).expect("scratch");
        std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        chown_r("65534:65534", self.root());
    }
    /// `mc-launcher prepare` over the tree, to its end.
    pub fn prepare(&self) -> super::Output {
        self.launch(&["prepare"]).run()
    }
    pub fn launch(&self, args: &[&str]) -> Launch {
        Launch::new(args).root(self.root())
    }
    /// `script` as the main command over the tree, with the image's
    /// sshd_config for a test sshd on loopback `port` in a private
    /// /etc/ssh.
    pub fn launch_with_sshd(&self, port: u16, script: &str) -> Launch {
        let sshd_conf = format!("Port {port}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n");
        self.launch(&["--", "sh", "-c", script])
            .tmpfs("/etc/ssh")
            .before(&format!("printf '{sshd_conf}' > /etc/ssh/sshd_config"))
            .timeout(Duration::from_secs(60))
    }
}

/// The shell command that logs in as root on loopback `port` with `key`,
/// without a prompt; the remote command (if any) follows it.
pub fn ssh_login(port: u16, key: &Path) -> String {
    format!(
        "ssh -p {port} -i {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 root@127.0.0.1",
        key.display()
    )
}

/// A fresh ed25519 key pair `name` in `dir`: the private key's path and the
/// public key line.
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let key = dir.join(name);
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", name, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    (key, public.trim().to_string())
}
