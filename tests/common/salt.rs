//! Real salt for the tests: the salt-call of the test venv, and a
//! masterless minion config inside a test tree.
#![allow(dead_code)]

use super::write;
use std::path::{Path, PathBuf};

/// The salt-call of the test venv (scripts/setup-test-env.sh makes it).
pub fn salt_call() -> PathBuf {
    // Outside /root, which every test hides behind a tmpfs.
    let venv = std::env::var("MC_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/cache/mc-launcher-test/salt-venv"));
    let p = venv.join("bin/salt-call");
    assert!(
        p.exists(),
        "{} missing: run scripts/setup-test-env.sh",
        p.display()
    );
    p
}

/// `PATH` for a launcher that runs salt: the test venv's bin (salt-call)
/// first, then the system's directories.
pub fn path_with_salt() -> String {
    format!(
        "{}:/usr/sbin:/usr/bin:/sbin:/bin",
        salt_call().parent().expect("bin").display()
    )
}

/// A salt state that writes `site=` and the pillar's
/// `makina-projects.demo:data:site` to `out`.
pub fn site_state(out: &Path) -> String {
    format!(
        "site-file:\n  file.managed:\n    - name: {}\n    - contents: \"site={{{{ salt['pillar.get']('makina-projects.demo:data:site', 'none') }}}}\"\n",
        out.display()
    )
}

/// A masterless minion config inside the tree: file_roots hold a link
/// `demo` -> the project's .salt, pillar_roots the makina layering.
pub fn salt_tree(r: &Path, project: &Path) -> PathBuf {
    let etc = r.join("etc/salt");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::create_dir_all(r.join("salt-roots")).expect("mkdir");
    std::os::unix::fs::symlink(project.join(".salt"), r.join("salt-roots/demo")).expect("link");
    std::fs::create_dir_all(r.join("pillar-roots/makina-projects")).expect("mkdir");
    std::os::unix::fs::symlink(
        r.join("projects/demo/pillar"),
        r.join("pillar-roots/makina-projects/demo"),
    )
    .expect("link");
    write(
        &r.join("pillar-roots/top.sls"),
        "base:\n  '*':\n    - makina-projects.demo\n",
    );
    write(
        &etc.join("minion"),
        &format!(
            "id: test-minion\nfile_client: local\nroot_dir: {r}\nfile_roots:\n  base:\n    - {r}/salt-roots\npillar_roots:\n  base:\n    - {r}/pillar-roots\ncachedir: {r}/var/cache/salt\npki_dir: {r}/etc/salt/pki\nsock_dir: {r}/var/run/salt\nlog_file: {r}/var/log/salt/minion\nextension_modules: {r}/var/cache/salt/extmods\nuser: root\n",
            r = r.display()
        ),
    );
    etc
}
