//! The probe kinds (README "Probes"): what a `ready:` or `live:` check may
//! be, and its addresses parsed once, when the config is read. Layer 1 (the
//! model holds them); `proc::probe` runs them.
//!
//! A new kind is a variant of [`ReadyCheck`] and of [`CheckKind`] here; the
//! compiler then names the two other places: its decoding
//! (`config::decode::check`) and its run (`proc::probe::Probes::start`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// A readiness or liveness check, exactly one per `ready:` or `live:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyCheck {
    /// `host:port` accepts a connection.
    Tcp(HostPort),
    /// `http://host[:port]/path`: a GET answered 2xx or 3xx.
    Http(HttpUrl),
    /// `notify: true`: the service says `READY=1` on its `NOTIFY_SOCKET`.
    Notify,
    /// An argv that exits 0.
    Cmd(Vec<String>),
    /// A path that exists.
    File(PathBuf),
}

impl ReadyCheck {
    pub fn kind(&self) -> CheckKind {
        match self {
            ReadyCheck::Tcp(_) => CheckKind::Tcp,
            ReadyCheck::Http(_) => CheckKind::Http,
            ReadyCheck::Notify => CheckKind::Notify,
            ReadyCheck::Cmd(_) => CheckKind::Cmd,
            ReadyCheck::File(_) => CheckKind::File,
        }
    }
}

/// A check in a few words, its key first (`tcp 127.0.0.1:8080`,
/// `notify`): as `ctl status NAME` shows it.
impl fmt::Display for ReadyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.kind().name();
        match self {
            ReadyCheck::Tcp(a) => write!(f, "{key} {a}"),
            ReadyCheck::Http(u) => write!(f, "{key} {u}"),
            ReadyCheck::Notify => f.write_str(key),
            ReadyCheck::Cmd(argv) => write!(f, "{key} {}", argv.join(" ")),
            ReadyCheck::File(p) => write!(f, "{key} {}", p.display()),
        }
    }
}

/// The kinds of check, by their key in `ready:` and `live:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Tcp,
    Http,
    Cmd,
    File,
    Notify,
}

impl CheckKind {
    /// Every kind, in the order messages and the reference list them.
    pub const ALL: [CheckKind; 5] = [
        CheckKind::Tcp,
        CheckKind::Http,
        CheckKind::Cmd,
        CheckKind::File,
        CheckKind::Notify,
    ];

    /// Its key in the config.
    pub const fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Cmd => "cmd",
            CheckKind::File => "file",
            CheckKind::Notify => "notify",
        }
    }

    /// Whether the launcher probes it: a notify service tells instead, so
    /// it is a readiness check only (never `live:`).
    pub const fn probed(self) -> bool {
        !matches!(self, CheckKind::Notify)
    }

    pub fn from_name(name: &str) -> Option<CheckKind> {
        CheckKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The keys of every kind (`ready:` accepts them all).
pub const CHECK_KINDS: [&str; CheckKind::ALL.len()] = names::<{ CheckKind::ALL.len() }>(false);
/// The keys of the probed kinds (`live:` accepts these).
pub const PROBE_KINDS: [&str; probed_count()] = names::<{ probed_count() }>(true);

#[allow(clippy::indexing_slicing)] // in bounds, and evaluated at compile time
const fn probed_count() -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < CheckKind::ALL.len() {
        if CheckKind::ALL[i].probed() {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The names of the kinds (`probed_only`: of the probed ones), computed
/// when the crate is compiled (an index out of bounds fails the build).
#[allow(clippy::indexing_slicing)]
const fn names<const N: usize>(probed_only: bool) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut n) = (0, 0);
    while i < CheckKind::ALL.len() {
        let k = CheckKind::ALL[i];
        if !probed_only || k.probed() {
            out[n] = k.name();
            n += 1;
        }
        i += 1;
    }
    out
}

/// A host of a probe: an address, or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name (`localhost` is 127.0.0.1 without asking).
    Name(String),
}

impl Host {
    /// The address to connect to without resolving, when there is one.
    pub fn literal(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(n) if n == "localhost" => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for Host {
    /// As written in a URL or an HTTP `Host:` header (IPv6 in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// `host:port`, `[v6]:port`: the address of a `tcp` check and of an `http`
/// URL. The one parser of host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: Host,
    pub port: u16,
}

impl HostPort {
    /// `host:port`; with `default_port`, the port may be left out.
    pub fn parse(text: &str, default_port: Option<u16>) -> Result<HostPort, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let Some((ip, after)) = rest.split_once(']') else {
                return Err("no `]` after the IPv6 address".into());
            };
            let ip = ip
                .parse::<Ipv6Addr>()
                .map_err(|_| format!("`{ip}` is not an IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("`{after}` after the address")),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            };
            if port.is_some_and(|p| p.contains(':')) {
                return Err("an IPv6 address goes in brackets, e.g. [::1]:80".into());
            }
            (name_or_ip(host)?, port)
        };
        let port = match (port, default_port) {
            (Some(p), _) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("`{p}` is not a port (1 to 65535)")),
            },
            (None, Some(d)) => d,
            (None, None) => return Err("no port".into()),
        };
        Ok(HostPort { host, port })
    }
}

/// A host name (letters, digits, `-`, `_`, `.`) or an IPv4 address.
fn name_or_ip(host: &str) -> Result<Host, String> {
    if host.is_empty() {
        return Err("no host".into());
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let valid = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        return Err(format!("`{host}` is not a host name or address"));
    }
    Ok(Host::Name(host.to_string()))
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// `http://host[:port][/path]` (port 80 by default, path `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub addr: HostPort,
    /// From the first `/` on.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let url = url.trim();
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!("`{url}`: only http:// URLs can be probed"));
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let addr = HostPort::parse(hostport, Some(80)).map_err(|e| format!("`{url}`: {e}"))?;
        Ok(HttpUrl {
            addr,
            path: path.to_string(),
        })
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.addr, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        let v4 = |a: [u8; 4]| Host::Ip(IpAddr::V4(Ipv4Addr::from(a)));
        let v6 = |s: &str| Host::Ip(IpAddr::V6(s.parse().expect("v6")));
        let name = |s: &str| Host::Name(s.into());
        // (text, default port, host and port or part of the error)
        type Row = (&'static str, Option<u16>, Result<(Host, u16), &'static str>);
        let rows: &[Row] = &[
            ("127.0.0.1:8080", None, Ok((v4([127, 0, 0, 1]), 8080))),
            (" db:5432 ", None, Ok((name("db"), 5432))),
            ("localhost.:1", None, Ok((name("localhost."), 1))),
            (
                "my_host-1.svc.cluster.local:80",
                None,
                Ok((name("my_host-1.svc.cluster.local"), 80)),
            ),
            ("[::1]:80", None, Ok((v6("::1"), 80))),
            ("[fe80::1]:65535", None, Ok((v6("fe80::1"), 65535))),
            ("[::1]", Some(80), Ok((v6("::1"), 80))),
            ("web", Some(80), Ok((name("web"), 80))),
            ("web:8080", Some(80), Ok((name("web"), 8080))),
            ("localhost", None, Err("no port")),
            ("[::1]", None, Err("no port")),
            (":80", None, Err("no host")),
            ("", Some(80), Err("no host")),
            ("h:0", None, Err("`0` is not a port")),
            ("h:65536", None, Err("`65536` is not a port")),
            ("h:-1", None, Err("`-1` is not a port")),
            ("h:http", None, Err("`http` is not a port")),
            ("h:", None, Err("`` is not a port")),
            ("::1:80", None, Err("IPv6 address goes in brackets")),
            ("[::1:80", None, Err("no `]`")),
            ("[nope]:80", None, Err("`nope` is not an IPv6 address")),
            ("[::1]80", None, Err("`80` after the address")),
            ("user@h:80", None, Err("`user@h` is not a host name")),
            ("a b:80", None, Err("`a b` is not a host name")),
        ];
        for (text, default, want) in rows {
            let got = HostPort::parse(text, *default);
            match (want, &got) {
                (Ok((host, port)), Ok(hp)) => {
                    assert_eq!((&hp.host, hp.port), (host, *port), "{text}")
                }
                (Err(part), Err(e)) => assert!(e.contains(part), "{text}: {e}"),
                _ => panic!("{text}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn host_port_prints_as_written() {
        for text in ["127.0.0.1:8080", "[::1]:80", "db:5432"] {
            let hp = HostPort::parse(text, None).expect(text);
            assert_eq!(hp.to_string(), text);
        }
        assert_eq!(
            HostPort::parse("localhost:1", None).map(|h| h.host.literal()),
            Ok(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)))
        );
        assert_eq!(
            HostPort::parse("db:1", None).map(|h| h.host.literal()),
            Ok(None)
        );
    }

    #[test]
    fn http_urls() {
        // (url, host:port and path, or part of the error)
        type Row = (
            &'static str,
            Result<(&'static str, &'static str), &'static str>,
        );
        let rows: &[Row] = &[
            (
                "http://127.0.0.1:8080/health",
                Ok(("127.0.0.1:8080", "/health")),
            ),
            ("http://web", Ok(("web:80", "/"))),
            ("http://web/a/b?c=d", Ok(("web:80", "/a/b?c=d"))),
            ("http://[::1]/", Ok(("[::1]:80", "/"))),
            ("http://[::1]:8080/x", Ok(("[::1]:8080", "/x"))),
            ("https://web/", Err("only http:// URLs")),
            ("web:80/", Err("only http:// URLs")),
            ("http:///x", Err("no host")),
            ("http://web:0/", Err("is not a port")),
            ("http://web:abc/", Err("`abc` is not a port")),
            ("http://::1/", Err("in brackets")),
        ];
        for (url, want) in rows {
            let got = HttpUrl::parse(url);
            match (want, &got) {
                (Ok((addr, path)), Ok(u)) => {
                    assert_eq!(
                        (u.addr.to_string().as_str(), u.path.as_str()),
                        (*addr, *path),
                        "{url}"
                    )
                }
                (Err(part), Err(e)) => assert!(e.contains(part), "{url}: {e}"),
                _ => panic!("{url}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn every_kind_is_listed_once() {
        for k in CheckKind::ALL {
            // A new variant fails to compile here: list it in `ALL`.
            match k {
                CheckKind::Tcp
                | CheckKind::Http
                | CheckKind::Cmd
                | CheckKind::File
                | CheckKind::Notify => {}
            }
            assert_eq!(CheckKind::from_name(k.name()), Some(k));
            assert_eq!(CHECK_KINDS.iter().filter(|n| **n == k.name()).count(), 1);
            assert_eq!(PROBE_KINDS.contains(&k.name()), k.probed(), "{k:?}");
        }
        assert_eq!(CHECK_KINDS, ["tcp", "http", "cmd", "file", "notify"]);
        assert_eq!(PROBE_KINDS, ["tcp", "http", "cmd", "file"]);
        assert_eq!(CheckKind::from_name("grpc"), None);
    }
}
