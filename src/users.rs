//! Users and groups, read from the container's own `/etc/passwd` and
//! `/etc/group` — what runc and crun do for `docker run --user` — and never
//! through NSS: no `nsswitch.conf`, no NSS module of the image is loaded,
//! so the static build and the dynamic one resolve the same names, whatever
//! libc (if any) the image has.
//!
//! Parsing is strict: a line that is not exactly `name:pw:uid:gid:gecos:dir:shell`
//! (passwd) or `name:pw:gid:members` (group) with decimal ids in range is
//! skipped, as are comments, blank lines and NIS compat lines (`+…`, `-…`).
//! When a name or id appears twice, the first line wins (as with glibc's
//! files backend). Files are re-read on every lookup: the prepare phase
//! (salt) may add users before the services start. A missing file holds no
//! entries; one larger than `MAX_FILE` is an error, not a partial read.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The directory holding `passwd` and `group`.
const ETC: &str = "/etc";

/// Bigger files are refused (a real one is a few KiB; this bounds memory).
pub const MAX_FILE: u64 = 8 << 20;

/// The highest valid id: `(uid_t)-1` means "unchanged" to setuid(2).
const MAX_ID: u32 = u32::MAX - 1;

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// A decimal id in range, written without sign, spaces or leading `+`.
fn id(field: &str) -> Option<u32> {
    if field.is_empty() || field.len() > 10 || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse::<u32>().ok().filter(|&n| n <= MAX_ID)
}

/// A user or group name as the files backend takes it: not empty, not a
/// NIS compat entry, no whitespace or control characters.
fn name(field: &str) -> Option<&str> {
    let bad = |c: char| c.is_whitespace() || c.is_control();
    let nis = field.starts_with('+') || field.starts_with('-');
    (!field.is_empty() && !nis && !field.contains(bad)).then_some(field)
}

/// The fields of a non-comment line, if it has exactly `n` of them.
fn fields(line: &str, n: usize) -> Option<Vec<&str>> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    (f.len() == n).then_some(f)
}

/// Parse one passwd line; `None` for comments and malformed lines.
pub fn parse_passwd_line(line: &str) -> Option<User> {
    let f = fields(line, 7)?;
    let (n, uid, gid, home, shell) = (f.first()?, f.get(2)?, f.get(3)?, f.get(5)?, f.get(6)?);
    Some(User {
        name: name(n)?.to_string(),
        uid: id(uid)?,
        gid: id(gid)?,
        home: PathBuf::from(home),
        shell: shell.to_string(),
    })
}

/// Parse one group line; `None` for comments and malformed lines.
pub fn parse_group_line(line: &str) -> Option<Group> {
    let f = fields(line, 4)?;
    let (n, gid, members) = (f.first()?, f.get(2)?, f.get(3)?);
    Some(Group {
        name: name(n)?.to_string(),
        gid: id(gid)?,
        members: members
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// The file's bytes, bounded; a missing file is empty.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let at = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(at(e)),
    };
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut buf).map_err(at)?;
    if buf.len() as u64 > MAX_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: larger than {} MiB", path.display(), MAX_FILE >> 20),
        ));
    }
    Ok(buf)
}

/// The lines of `buf` that are UTF-8 (the others cannot name anyone).
fn lines(buf: &[u8]) -> impl Iterator<Item = &str> {
    buf.split(|&b| b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
}

/// Every valid entry of `dir/passwd`, in file order.
pub fn users_in(dir: &Path) -> io::Result<Vec<User>> {
    let buf = read_bounded(&dir.join("passwd"))?;
    Ok(lines(&buf).filter_map(parse_passwd_line).collect())
}

/// Every valid entry of `dir/group`, in file order.
pub fn groups_in(dir: &Path) -> io::Result<Vec<Group>> {
    let buf = read_bounded(&dir.join("group"))?;
    Ok(lines(&buf).filter_map(parse_group_line).collect())
}

/// The groups `user` belongs to, like getgrouplist(3): `primary` first,
/// then every group whose member list names the user, each gid once.
pub fn member_gids(groups: &[Group], user: &str, primary: u32) -> Vec<u32> {
    let mut out = vec![primary];
    for g in groups {
        if g.members.iter().any(|m| m == user) && !out.contains(&g.gid) {
            out.push(g.gid);
        }
    }
    out
}

/// The first user called `name` in the container's /etc/passwd.
pub fn user_by_name(name: &str) -> io::Result<Option<User>> {
    Ok(users_in(Path::new(ETC))?
        .into_iter()
        .find(|u| u.name == name))
}

/// The first user with `uid` in the container's /etc/passwd.
pub fn user_by_uid(uid: u32) -> io::Result<Option<User>> {
    Ok(users_in(Path::new(ETC))?.into_iter().find(|u| u.uid == uid))
}

/// The first group called `name` in the container's /etc/group.
pub fn group_by_name(name: &str) -> io::Result<Option<Group>> {
    Ok(groups_in(Path::new(ETC))?
        .into_iter()
        .find(|g| g.name == name))
}

/// The supplementary groups of `user` (primary group `primary` first) from
/// the container's /etc/group.
pub fn groups_of(user: &str, primary: u32) -> io::Result<Vec<u32>> {
    Ok(member_gids(&groups_in(Path::new(ETC))?, user, primary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines() {
        let user = |name: &str, uid, gid, home: &str| {
            Some(User {
                name: name.into(),
                uid,
                gid,
                home: home.into(),
                shell: "/bin/sh".into(),
            })
        };
        let cases: &[(&str, Option<User>)] = &[
            ("root:x:0:0:root:/root:/bin/sh", user("root", 0, 0, "/root")),
            (
                "app:*:1000:1000::/srv/app:/bin/sh",
                user("app", 1000, 1000, "/srv/app"),
            ),
            (
                "big:x:4294967294:4294967294::/:/bin/sh",
                user("big", u32::MAX - 1, u32::MAX - 1, "/"),
            ),
            ("nohome:x:5:5:::/bin/sh", user("nohome", 5, 5, "")),
            // (uid_t)-1 and beyond are not ids.
            ("neg:x:4294967295:0::/:/bin/sh", None),
            ("huge:x:99999999999:0::/:/bin/sh", None),
            ("minus:x:-1:0::/:/bin/sh", None),
            ("plus:x:+1:0::/:/bin/sh", None),
            ("space:x: 1:0::/:/bin/sh", None),
            ("hex:x:0x10:0::/:/bin/sh", None),
            ("emptyid:x::0::/:/bin/sh", None),
            // Field count is exact.
            ("short:x:1:1::/", None),
            ("long:x:1:1::/:/bin/sh:extra", None),
            ("", None),
            ("   ", None),
            ("# comment:x:0:0::/:/bin/sh", None),
            // NIS compat lines are ignored, never looked up.
            ("+::::::", None),
            ("+nisuser:x:10:10::/:/bin/sh", None),
            ("-baduser:x:11:11::/:/bin/sh", None),
            (":x:1:1::/:/bin/sh", None),
            ("two words:x:1:1::/:/bin/sh", None),
        ];
        for (line, want) in cases {
            assert_eq!(&parse_passwd_line(line), want, "{line:?}");
        }
    }

    #[test]
    fn group_lines() {
        type Want<'a> = Option<(&'a str, u32, &'a [&'a str])>;
        let cases: &[(&str, Want)] = &[
            ("root:x:0:", Some(("root", 0, &[]))),
            ("web:x:33:app,www", Some(("web", 33, &["app", "www"]))),
            (
                "sparse:x:34:app,,www,",
                Some(("sparse", 34, &["app", "www"])),
            ),
            ("big:x:4294967294:", Some(("big", u32::MAX - 1, &[]))),
            ("neg:x:4294967295:", None),
            ("short:x:1", None),
            ("long:x:1::", None),
            ("#c:x:1:", None),
            ("+:::", None),
            ("+nis:x:1:", None),
            ("bad:x:one:", None),
        ];
        for (line, want) in cases {
            let got = parse_group_line(line);
            let want = want.map(|(n, gid, m)| Group {
                name: n.into(),
                gid,
                members: m.iter().map(|s| s.to_string()).collect(),
            });
            assert_eq!(got, want, "{line:?}");
        }
    }

    fn etc(passwd: &str, group: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let d = std::env::temp_dir().join(format!("mcl-users-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("passwd"), passwd).expect("passwd");
        std::fs::write(d.join("group"), group).expect("group");
        d
    }

    #[test]
    fn files_first_entry_wins_and_bad_lines_are_skipped() {
        let d = etc(
            "# image users\nroot:x:0:0:root:/root:/bin/sh\nbroken line\nbad\u{1}:x:3:3::/:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n\
             app:x:2000:2000::/elsewhere:/bin/sh\n+::::::\nother:x:1000:7::/o:/bin/sh\n",
            "root:x:0:\napp:x:1000:\nweb:x:33:app\nweb:x:34:\nlogs:x:4:root,app\nnis:x:5:\n+:::\nstaff:x:33:app\n",
        );
        let users = users_in(&d).expect("users");
        let first = |n: &str| users.iter().find(|u| u.name == n).cloned();
        assert_eq!(
            first("app").map(|u| (u.uid, u.home)),
            Some((1000, "/home/app".into()))
        );
        // by uid: the first line with that uid is app, not other.
        assert_eq!(
            users
                .iter()
                .find(|u| u.uid == 1000)
                .map(|u| u.name.as_str()),
            Some("app")
        );
        assert_eq!(users.len(), 4);
        let groups = groups_in(&d).expect("groups");
        assert_eq!(
            groups.iter().find(|g| g.name == "web").map(|g| g.gid),
            Some(33)
        );
        // getgrouplist: primary first, then memberships, each gid once.
        assert_eq!(member_gids(&groups, "app", 1000), vec![1000, 33, 4]);
        assert_eq!(member_gids(&groups, "root", 0), vec![0, 4]);
        assert_eq!(member_gids(&groups, "nobody", 65534), vec![65534]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_files_are_empty_and_huge_ones_refused() {
        let d = etc("", "");
        std::fs::remove_file(d.join("passwd")).expect("rm");
        assert_eq!(users_in(&d).expect("missing is empty"), vec![]);
        let f = std::fs::File::create(d.join("group")).expect("create");
        f.set_len(MAX_FILE + 1).expect("sparse");
        let err = groups_in(&d).expect_err("too big");
        assert!(err.to_string().contains("larger than"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_real_files_parse() {
        // The host's /etc, read only: every system has root.
        let root = user_by_uid(0).expect("read /etc/passwd");
        assert_eq!(root.map(|u| u.name), Some("root".to_string()));
        assert!(user_by_name("no-such-user-mcl").expect("read").is_none());
        assert!(group_by_name("root").expect("read /etc/group").is_some());
    }
}
