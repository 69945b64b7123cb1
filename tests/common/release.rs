//! The release (scripts/release.sh) as the tests see it: one `dist/` per
//! test binary, built into this target dir (the static builds are cached
//! there, so a second run is a cargo no-op) and signed with a throw-away
//! GPG key made for the run.

use super::{repo, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The target dir the tests were built in (scripts/build-static.sh builds
/// the static binaries under it too).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// The arches of a release, as in the binaries' names.
pub const ARCHES: [&str; 3] = ["x86_64", "aarch64", "armv7"];

/// Docker's platform of an arch (its release image's).
pub fn platform(arch: &str) -> &'static str {
    match arch {
        "x86_64" => "linux/amd64",
        "aarch64" => "linux/arm64",
        "armv7" => "linux/arm/v7",
        other => panic!("no platform for {other}"),
    }
}

/// Debian's name of an arch (the .deb's, the image tag's).
pub fn deb_arch(arch: &str) -> &'static str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7" => "armhf",
        other => panic!("no Debian arch for {other}"),
    }
}

/// The version in Cargo.toml.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// A finished release.
pub struct Release {
    pub dist: PathBuf,
    /// The public half of the throw-away key that signed SHA256SUMS (a
    /// keyring for `gpgv --keyring`).
    pub signer: PathBuf,
}

impl Release {
    pub fn binary(&self, arch: &str) -> PathBuf {
        self.dist.join(format!("mc-launcher-{}-{arch}", version()))
    }
    pub fn deb(&self, arch: &str) -> PathBuf {
        self.dist
            .join(format!("mc-launcher_{}_{}.deb", version(), deb_arch(arch)))
    }
    pub fn sbom(&self) -> PathBuf {
        self.dist
            .join(format!("mc-launcher-{}.cdx.json", version()))
    }
}

/// Run scripts/release.sh with `args` and the environment `env`; its
/// stdout (the dist dir), or a failed test with its stderr.
pub fn release_sh(args: &[&str], env: &[(&str, &Path)]) -> PathBuf {
    let mut c = Command::new(repo().join("scripts/release.sh"));
    c.args(args).env("CARGO_TARGET_DIR", target_dir());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run scripts/release.sh");
    assert!(
        o.status.success(),
        "scripts/release.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

/// The release of this run: built once per test binary, no images (the
/// Docker tests make theirs under test tags).
pub fn release() -> &'static Release {
    static REL: OnceLock<Release> = OnceLock::new();
    REL.get_or_init(|| {
        let gnupg = throwaway_gpg_key();
        let _agent = AgentGoes(gnupg.path());
        let out = target_dir().join("release-dist");
        let dist = release_sh(
            &["--out", &out.to_string_lossy(), "--no-images"],
            &[("GNUPGHOME", gnupg.path())],
        );
        assert_eq!(dist, out);
        let signer = target_dir().join("release-test-signer.gpg");
        let key = gpg(gnupg.path(), &["--export"]);
        std::fs::write(&signer, key).expect("write the signer's public key");
        Release { dist, signer }
    })
}

/// The gpg-agent that signed ends with its home (even when a step fails).
struct AgentGoes<'a>(&'a Path);

impl Drop for AgentGoes<'_> {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.0)
            .args(["--kill", "all"])
            .status();
    }
}

/// `gpg --batch ARGS` in `home`: its stdout, or a failed test.
fn gpg(home: &Path, args: &[&str]) -> Vec<u8> {
    let o = Command::new("gpg")
        .env("GNUPGHOME", home)
        .arg("--batch")
        .args(args)
        .output()
        .expect("gpg");
    assert!(
        o.status.success(),
        "gpg {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// A GNUPGHOME with one fresh signing key (no passphrase), for this run.
fn throwaway_gpg_key() -> TempDir {
    let home = TempDir::new("gnupg");
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod GNUPGHOME");
    gpg(
        home.path(),
        &[
            "--quiet",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-generate-key",
            "mc-launcher test release <release@mc-launcher.invalid>",
            "ed25519",
            "sign",
            "1d",
        ],
    );
    home
}
