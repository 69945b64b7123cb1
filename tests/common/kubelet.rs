//! The kubelet's atomic writer, as it projects a ConfigMap, Secret,
//! downwardAPI or projected volume into a pod, reproduced step by step so
//! that tests can update a "mounted ConfigMap" exactly as Kubernetes does.
//!
//! What the kubelet leaves in the volume's directory, after any update:
//!
//! ```text
//! ..2026_12_02_07_31_05.3046529087/   the payload, real files with their modes
//! ..data -> ..2026_12_02_07_31_05.3046529087
//! pillar.sls -> ..data/pillar.sls     one link per top-level payload name
//! ```
//!
//! An update writes a whole new timestamped directory, points a new link
//! `..data_tmp` at it and renames that over `..data` (the one atomic step),
//! then adds links for new names, removes the links of names that left the
//! payload and removes the previous timestamped directory. So the
//! user-visible `pillar.sls` is the same symlink inode before and after: only
//! what `..data` points to changes, and a reader that keeps a file open
//! keeps reading the old content, now unlinked.
//!
//! Not reproduced: the ownership step (`fsGroup`, `FsUser`), which needs
//! root and changes no path, and the read-only bind mount the container sees.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The link that names the current timestamped directory.
pub const DATA_DIR: &str = "..data";
/// The link made next to it, then renamed over it.
pub const DATA_DIR_TMP: &str = "..data_tmp";

/// Project `files` (path in the volume, content, mode) into `dir` as the
/// kubelet does on each sync of a ConfigMap or Secret volume. An unchanged
/// payload changes nothing (no new directory). An empty payload is valid:
/// it is what a deleted `optional: true` ConfigMap becomes.
pub fn kubelet_write(dir: &Path, files: &[(&str, &[u8], u32)]) -> io::Result<()> {
    // 1. Validate the payload: relative paths, no `..` element, nothing
    //    starting with `..` at the top (those names are the writer's own).
    let mut payload: Vec<(PathBuf, &[u8], u32)> = Vec::new();
    for (name, data, mode) in files {
        payload.push((clean_path(name)?, data, *mode));
    }

    // 2. The current timestamped directory, from the `..data` link.
    let data_link = dir.join(DATA_DIR);
    let old = match std::fs::read_link(&data_link) {
        Ok(target) => Some(target),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };

    let mut to_remove = BTreeSet::new();
    let mut write = true;
    let mut old = old.map(|t| dir.join(t));
    if let Some(old_dir) = &old {
        // 3. Paths of the previous version that the new payload (and the
        //    directories leading to its files) no longer has.
        let mut present = BTreeSet::new();
        walk(old_dir, Path::new(""), &mut present)?;
        let mut wanted = BTreeSet::new();
        for (path, _, _) in &payload {
            let mut p = path.as_path();
            loop {
                wanted.insert(p.to_path_buf());
                match p.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                    _ => break,
                }
            }
        }
        to_remove = present.difference(&wanted).cloned().collect();

        // 4. Is any file new or different?
        let mut differs = false;
        for (path, data, _) in &payload {
            match std::fs::read(old_dir.join(path)) {
                Ok(on_disk) if on_disk == *data => {}
                Ok(_) => differs = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => differs = true,
                Err(e) => return Err(e),
            }
        }
        if !differs && to_remove.is_empty() {
            // Up to date: keep the directory, only make sure the visible
            // links exist (below).
            write = false;
            old = None;
        }
    }

    if write {
        // 5. A new directory: `..` + the UTC time as
        //    YYYY_MM_DD_HH_MM_SS + `.` + a random number (Go's MkdirTemp
        //    suffix), created 0700 then set to 0755 whatever the umask.
        let ts_dir = new_timestamp_dir(dir)?;
        let ts_name = ts_dir
            .file_name()
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::other("timestamped dir without a name"))?;

        // 6. The payload, each file with exactly its mode.
        for (path, data, mode) in &payload {
            let full = ts_dir.join(path);
            if let Some(parent) = full.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o777)
                    .create(parent)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(*mode)
                .open(&full)?;
            f.write_all(data)?;
            drop(f);
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(*mode))?;
        }

        // 7. (ownership for fsGroup: not reproduced.)
        // 8. `..data_tmp` -> the new directory, by its bare name.
        let tmp_link = dir.join(DATA_DIR_TMP);
        if let Err(e) = std::os::unix::fs::symlink(&ts_name, &tmp_link) {
            let _ = std::fs::remove_dir_all(&ts_dir);
            return Err(e);
        }
        // 9. The atomic step: rename it over `..data`.
        if let Err(e) = std::fs::rename(&tmp_link, &data_link) {
            let _ = std::fs::remove_file(&tmp_link);
            let _ = std::fs::remove_dir_all(&ts_dir);
            return Err(e);
        }
    }

    // 10. A link `NAME -> ..data/NAME` for each top-level name that has
    //     none yet; existing links are left alone (they already go through
    //     `..data`).
    for (path, _, _) in &payload {
        let Some(Component::Normal(top)) = path.components().next() else {
            continue;
        };
        let visible = dir.join(top);
        match std::fs::symlink_metadata(&visible) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink(Path::new(DATA_DIR).join(top), &visible)?;
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }

    // 11. The links of top-level names that left the payload (deeper paths
    //     vanish with the old directory).
    let mut last_err = None;
    for gone in &to_remove {
        if gone.components().count() != 1 {
            continue;
        }
        if let Err(e) = std::fs::remove_file(dir.join(gone)) {
            last_err = Some(e);
        }
    }
    if let Some(e) = last_err {
        return Err(e);
    }

    // 12. The previous timestamped directory.
    if let Some(old_dir) = old {
        std::fs::remove_dir_all(old_dir)?;
    }
    Ok(())
}

/// A payload path as the kubelet accepts it, cleaned (`a//b/./c` is `a/b/c`).
fn clean_path(name: &str) -> io::Result<PathBuf> {
    let invalid =
        |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?}: {why}"));
    if name.is_empty() {
        return Err(invalid("empty path"));
    }
    if name.len() > 4096 {
        return Err(invalid("longer than 4096 characters"));
    }
    let path = Path::new(name);
    let mut clean = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => {
                if part.len() > 255 {
                    return Err(invalid("a name longer than 255 characters"));
                }
                clean.push(part);
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid("contains '..'")),
            Component::RootDir | Component::Prefix(_) => return Err(invalid("absolute path")),
        }
    }
    let first = clean
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    if first.is_empty() {
        return Err(invalid("empty path"));
    }
    if first.starts_with("..") {
        return Err(invalid("starts with '..'"));
    }
    Ok(clean)
}

/// Every path under `root`, relative to it (directories included).
fn walk(root: &Path, rel: &Path, out: &mut BTreeSet<PathBuf>) -> io::Result<()> {
    let entries = match std::fs::read_dir(root.join(rel)) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        let is_dir = entry.file_type()?.is_dir();
        out.insert(path.clone());
        if is_dir {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

fn new_timestamp_dir(dir: &Path) -> io::Result<PathBuf> {
    let prefix = format!("..{}.", utc_stamp(std::time::SystemTime::now()));
    // As Go's MkdirTemp: retry with another number when the name is taken.
    for _ in 0..10_000 {
        let path = dir.join(format!("{prefix}{}", random_u32()?));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free timestamped directory name",
    ))
}

fn random_u32() -> io::Result<u32> {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u32::from_ne_bytes(b))
}

/// `YYYY_MM_DD_HH_MM_SS` in UTC (Go layout `2006_01_02_15_04_05`).
pub fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01, by whole
/// 400-year eras (146,097 days each), years starting in March so that the
/// leap day is the last day of a year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// What the kubelet's prober concludes from one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Success(String),
    Failure(String),
}

/// One `httpGet` probe as the kubelet's prober makes it: a plain HTTP/1.1
/// GET of `path` on `addr` (the pod's IP and the probe's port) with its
/// `User-Agent: kube-probe/MAJOR.MINOR` and `Accept: */*`, the whole
/// exchange within `timeoutSeconds`; a status from 200 to 399 is success,
/// anything else (or no answer in time) a failure. The kubelet keeps at
/// most 10 KiB of the body as the probe's output (shown in the pod's
/// events on a failure).
pub fn http_get_probe(addr: &str, path: &str, timeout: std::time::Duration) -> ProbeResult {
    use std::net::{TcpStream, ToSocketAddrs};
    let deadline = std::time::Instant::now() + timeout;
    let Some(sock) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return ProbeResult::Failure(format!("bad address {addr}"));
    };
    let mut s = match TcpStream::connect_timeout(&sock, timeout) {
        Ok(s) => s,
        Err(e) => return ProbeResult::Failure(format!("Get \"http://{addr}{path}\": {e}")),
    };
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let left = left.max(std::time::Duration::from_millis(1));
    let _ = s.set_read_timeout(Some(left));
    let _ = s.set_write_timeout(Some(left));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.30\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        return ProbeResult::Failure(format!("Get \"http://{addr}{path}\": {e}"));
    }
    let mut answer = Vec::new();
    if let Err(e) = s.take(64 * 1024).read_to_end(&mut answer) {
        return ProbeResult::Failure(format!("Get \"http://{addr}{path}\": {e}"));
    }
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return ProbeResult::Failure("malformed HTTP response".into());
    };
    let code: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body: String = body.chars().take(10 * 1024).collect();
    if (200..400).contains(&code) {
        ProbeResult::Success(body)
    } else {
        ProbeResult::Failure(format!("HTTP probe failed with statuscode: {code}: {body}"))
    }
}
