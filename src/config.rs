//! Settings from an ini file and command-line flags, turned into typed,
//! validated configs ([`TrackerConfig`], [`PeerConfig`]).
//!
//! Each program declares its keys once ([`KeySpec`]: name, flag, default,
//! meaning). Values are layered: built-in default, then the ini file, then a
//! flag. Every value, whatever its source, goes through the same checks, and
//! an error names where the bad value came from (the file and key, or the
//! flag) and what is allowed. The shipped `config/*.ini` files list every
//! key with its default; a test keeps them in step with the specs here.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use crate::peer::fsutil::read_at_most;
use crate::peer::media::Profile;
use crate::protocol::fields::check_piece_size;
use crate::protocol::UserName;
use crate::ring::space::MAX_RING_SIZE;
use crate::ring::{Entry, IdChoice, RingSettings, RingSpace};
use crate::units::{parse_byte_size, parse_setting_size};

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// The key in the ini file.
    pub key: &'static str,
    /// The command-line flag that overrides it.
    pub flag: &'static str,
    /// The built-in default, as it would be written in the file.
    pub default: &'static str,
    /// What it means, for `--help`.
    pub help: &'static str,
}

impl KeySpec {
    /// Whether it is a switch (`true` or `false`), as its default says.
    pub fn is_switch(&self) -> bool {
        matches!(self.default, "true" | "false")
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Flag(&'static str),
}

/// A value that cannot be used, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: Source,
    pub section: &'static str,
    pub key: String,
    pub message: String,
}

/// The key of a [`ConfigError`] about a whole file rather than one key.
const WHOLE_FILE: &str = "-";

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            // About the whole file (cannot be read, a section unknown).
            Source::File(path) if self.key == WHOLE_FILE => {
                write!(f, "{}: {}", path.display(), self.message)
            }
            Source::File(path) => write!(
                f,
                "{}: key `{}` in [{}]: {}",
                path.display(),
                self.key,
                self.section,
                self.message
            ),
            Source::Flag(flag) => write!(f, "{flag}: {}", self.message),
            Source::Default => write!(f, "default of `{}`: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The layered raw values of one program's section.
#[derive(Debug, Clone)]
pub struct Settings {
    section: &'static str,
    specs: &'static [KeySpec],
    values: HashMap<&'static str, (String, Source)>,
}

/// Longest configuration file read (the shipped ones are under 10 KiB).
const MAX_CONFIG_FILE: usize = 1 << 20;

/// The text of a configuration file: a regular file of at most
/// [`MAX_CONFIG_FILE`] bytes (read as the state files are:
/// [`read_at_most`]), in UTF-8, without the byte-order mark some Windows
/// editors put first.
fn read_config_text(path: &Path) -> Result<String, String> {
    let bytes = read_at_most(path, MAX_CONFIG_FILE).map_err(|e| match e.kind() {
        // Not a regular file, or too big: said as such.
        std::io::ErrorKind::InvalidData => format!("is {e}"),
        _ => format!("cannot read the file: {e}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 text (byte {} is not): save it as UTF-8",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text))
}

impl Settings {
    /// The built-in defaults of `specs`, for section `[section]`.
    pub fn defaults(section: &'static str, specs: &'static [KeySpec]) -> Settings {
        let values = specs
            .iter()
            .map(|spec| (spec.key, (spec.default.to_string(), Source::Default)))
            .collect();
        Settings {
            section,
            specs,
            values,
        }
    }

    /// Lays the values of an ini file over the current ones. An unknown
    /// section or key is an error (it is usually a typo that would
    /// otherwise be silently ignored).
    pub fn load_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let file_error = |key: &str, message: String| ConfigError {
            source: Source::File(path.to_path_buf()),
            section: self.section,
            key: key.to_string(),
            message,
        };
        let text = read_config_text(path).map_err(|e| file_error(WHOLE_FILE, e))?;
        if let Some((key, first, second)) = set_twice(&text) {
            return Err(file_error(
                &key,
                format!("is set twice, on lines {first} and {second}; keep one"),
            ));
        }
        // `;` and `#` begin a comment only at the start of a line: a value
        // may hold them (a path like `a#b.log`).
        let mut defaults = configparser::ini::IniDefault::default();
        defaults.enable_inline_comments = false;
        let mut ini = configparser::ini::Ini::new_from_defaults(defaults);
        // The parser puts keys before any section and keys under a
        // `[default]` line in one place: the text tells the two apart.
        let default_header = text
            .lines()
            .any(|line| line.trim().eq_ignore_ascii_case("[default]"));
        let sections = ini
            .read(text)
            .map_err(|e| file_error(WHOLE_FILE, format!("cannot read the file: {e}")))?;
        for (section, keys) in sections {
            if let Some(key) = keys.keys().next().filter(|_| section == "default") {
                let place = if default_header {
                    "is under [default], which this file does not use"
                } else {
                    "comes before any section"
                };
                return Err(file_error(
                    key,
                    format!("{place}; keys go under the [{}] line", self.section),
                ));
            }
            if section != self.section && section != "default" {
                return Err(file_error(
                    WHOLE_FILE,
                    format!(
                        "unknown section [{section}]; this file has one section, [{}]",
                        self.section
                    ),
                ));
            }
            for (key, value) in keys {
                let Some(spec) = self.specs.iter().find(|s| s.key == key) else {
                    return Err(file_error(
                        &key,
                        format!("unknown key; known keys: {}", self.known_keys()),
                    ));
                };
                let value = value
                    .ok_or_else(|| file_error(&key, "has no value (write `key = value`)".into()))?;
                self.values.insert(
                    spec.key,
                    (
                        unquoted(&value).to_string(),
                        Source::File(path.to_path_buf()),
                    ),
                );
            }
        }
        Ok(())
    }

    /// Lays a flag's value over the current one.
    pub fn set_flag(&mut self, key: &str, value: String) {
        let spec = self
            .specs
            .iter()
            .find(|s| s.key == key)
            .unwrap_or_else(|| panic!("flag for undeclared key {key}"));
        self.values
            .insert(spec.key, (value, Source::Flag(spec.flag)));
    }

    /// The raw value of `key`, and where it came from.
    pub fn raw(&self, key: &str) -> (&str, &Source) {
        let (value, source) = self
            .values
            .get(key)
            .unwrap_or_else(|| panic!("undeclared key {key}"));
        (value.trim(), source)
    }

    /// `key`'s value converted by `convert`, whose error message says what
    /// is allowed.
    pub fn get<T>(
        &self,
        key: &str,
        convert: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (value, source) = self.raw(key);
        convert(value).map_err(|message| ConfigError {
            source: source.clone(),
            section: self.section,
            key: key.to_string(),
            message: format!("{value:?}: {message}"),
        })
    }

    fn known_keys(&self) -> String {
        self.specs
            .iter()
            .map(|s| s.key)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---------------------------------------------------------------------------
// Converters: each says what is allowed when it refuses.

/// A value written in quotes, as many write a path with spaces
/// (`download_dir = "~/My Music"`), without them: a pair of `"` or `'`
/// around the whole value. (Else the quotes would be part of the value: a
/// folder named `"~`.)
fn unquoted(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// The first key an ini text sets twice in one section (keys in any
/// case, as the parser reads them), with the lines (from 1) of both: the
/// parser would keep the last without a word.
fn set_twice(text: &str) -> Option<(String, usize, usize)> {
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut section = String::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with([';', '#']) {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_lowercase();
            continue;
        }
        let Some(end) = line.find(['=', ':']) else {
            continue;
        };
        let key = line[..end].trim().to_lowercase();
        if let Some(first) = seen.insert((section.clone(), key.clone()), number + 1) {
            return Some((key, first, number + 1));
        }
    }
    None
}

/// A whole number in `min..=max`.
pub fn number_in(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, String> {
    move |text| {
        text.parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("expected a whole number from {min} to {max}"))
    }
}

/// A byte size (units allowed) in `min..=max`.
pub fn size_in(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, String> {
    move |text| {
        let size = parse_setting_size(text)?;
        if (min..=max).contains(&size) {
            Ok(size)
        } else {
            Err(format!("expected a size from {min} to {max} bytes"))
        }
    }
}

/// A number of seconds in `min..=max`.
pub fn seconds_in(min: u64, max: u64) -> impl Fn(&str) -> Result<Duration, String> {
    move |text| number_in(min, max)(text).map(Duration::from_secs)
}

/// A number of milliseconds in `min..=max`.
pub fn millis_in(min: u64, max: u64) -> impl Fn(&str) -> Result<Duration, String> {
    move |text| number_in(min, max)(text).map(Duration::from_millis)
}

/// A port number (0 picks a free one).
pub fn port(text: &str) -> Result<u16, String> {
    number_in(0, 65535)(text).map(|n| n as u16)
}

/// An IP address to listen on.
pub fn ip_address(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| "expected an IP address such as 127.0.0.1, 0.0.0.0 or ::1".to_string())
}

/// `host:port` to connect to, resolved now. A name with IPv4 and IPv6
/// addresses gets its IPv4 one: `localhost` is `::1` first on Windows and
/// macOS, where a tracker listening on 0.0.0.0 (the default) is not
/// reachable. The wildcard a server prints when it listens everywhere
/// (`0.0.0.0`, `::`) is taken as this machine's loopback address, as Linux
/// takes it by itself (Windows refuses to connect to it).
pub fn host_port(text: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("expected host:port such as 127.0.0.1:6969 ({e})"))?
        .collect();
    let mut addr = addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text} resolves to no address"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// `host:port` checked but not looked up (a name's address is then the
/// unspecified one): for settings not in use.
pub fn host_port_unresolved(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let expected = || "expected host:port such as 127.0.0.1:6969".to_string();
    let (host, port) = text.rsplit_once(':').ok_or_else(expected)?;
    let port: u16 = port.parse().map_err(|_| expected())?;
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == ':') {
        return Err(expected());
    }
    Ok(SocketAddr::from(([0, 0, 0, 0], port)))
}

/// A log level.
pub fn log_level(text: &str) -> Result<LevelFilter, String> {
    text.parse()
        .map_err(|_| "expected one of off, error, warn, info, debug, trace".to_string())
}

/// The words a switch takes for true, and for false (see [`boolean`]),
/// letter case aside.
const TRUE_WORDS: [&str; 4] = ["true", "yes", "on", "1"];
const FALSE_WORDS: [&str; 4] = ["false", "no", "off", "0"];

/// `true` or `false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
pub fn boolean(text: &str) -> Result<bool, String> {
    let word = text.to_ascii_lowercase();
    if TRUE_WORDS.contains(&word.as_str()) {
        Ok(true)
    } else if FALSE_WORDS.contains(&word.as_str()) {
        Ok(false)
    } else {
        Err("expected true or false (or yes/no, on/off, 1/0)".into())
    }
}

/// A path, or nothing when empty. A leading `~` is the user's home, as a
/// shell would have it (see [`expand_home`]).
pub fn optional_path(text: &str) -> Result<Option<PathBuf>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    expand_home(text).map(Some)
}

/// `text` as a path, a leading `~` (alone, or before a `/`, or a `\` on
/// Windows) made the user's home folder, as a shell does: in an ini file,
/// after `--flag=`, or in the peer's own shell no shell has done it, and
/// the path would name a folder called `~` (which `rm -rf ~` then cleans
/// up with the home folder). Any other `~` is left as it is (`~$notes.doc`
/// is a file's name; `~user` is not looked up).
pub fn expand_home(text: &str) -> Result<PathBuf, String> {
    let Some(rest) = text.strip_prefix('~') else {
        return Ok(PathBuf::from(text));
    };
    let separator = |c: char| c == '/' || (cfg!(windows) && c == '\\');
    let rest = match rest.chars().next() {
        None => "",
        Some(c) if separator(c) => rest.trim_start_matches(separator),
        Some(_) => return Ok(PathBuf::from(text)),
    };
    let home = std::env::home_dir()
        .filter(|home| !home.as_os_str().is_empty())
        .ok_or_else(|| {
            let variable = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
            format!("{text}: no home folder is known for ~ ({variable} is not set)")
        })?;
    Ok(if rest.is_empty() {
        home
    } else {
        home.join(rest)
    })
}

/// The binary unit most likely meant by a piece size written in a
/// decimal one: `256KB` is 256,000 bytes, `256KiB` a piece size.
fn binary_meant(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, unit) = [("kb", "KiB"), ("mb", "MiB")]
        .into_iter()
        .find_map(|(decimal, binary)| Some((lower.strip_suffix(decimal)?.trim(), binary)))?;
    let meant = format!("{number}{unit}");
    let size = u32::try_from(parse_byte_size(&meant).ok()?).ok()?;
    check_piece_size(size).is_ok().then_some(meant)
}

/// A path that must be given.
pub fn path(text: &str) -> Result<PathBuf, String> {
    optional_path(text)?.ok_or_else(|| "expected a path".to_string())
}

// ---------------------------------------------------------------------------
// The tracker

/// The tracker's keys, in the order of `config/tracker.ini`.
pub const TRACKER_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "address",
        flag: "--address",
        default: "0.0.0.0",
        help: "IP address to listen on (0.0.0.0: every IPv4 interface; ::, every interface, IPv4 and IPv6)",
    },
    KeySpec {
        key: "port",
        flag: "--port",
        default: "6969",
        help: "TCP port to listen on (0 picks a free one)",
    },
    KeySpec {
        key: "log_file",
        flag: "--log-file",
        default: "tracker.log",
        help: "log file, appended to (empty: terminal only)",
    },
    KeySpec {
        key: "log_level",
        flag: "--log-level",
        default: "info",
        help: "off, error, warn, info, debug (every request) or trace",
    },
    KeySpec {
        key: "max_connections",
        flag: "--max-connections",
        default: "1024",
        help: "connections served at once; the next one gets ERRR 500",
    },
    KeySpec {
        key: "max_connections_per_ip",
        flag: "--max-connections-per-ip",
        default: "128",
        help: "connections served at once from one IP address; the next one gets ERRR 500",
    },
    KeySpec {
        key: "keep_alive_secs",
        flag: "--keep-alive-secs",
        default: "120",
        help: "a connection silent this long is closed and its session dropped",
    },
    KeySpec {
        key: "max_line_bytes",
        flag: "--max-line-bytes",
        default: "8192",
        help: "longest request line accepted, from 256 bytes to 1MiB (units allowed: 8KiB)",
    },
    KeySpec {
        key: "max_results",
        flag: "--max-results",
        default: "1000",
        help: "most lines in one RQFS or LSTF answer (at most 10000)",
    },
    KeySpec {
        key: "max_files_per_session",
        flag: "--max-files-per-session",
        default: "1000",
        help: "most files one peer may offer or report on (the next gets ERRR 405)",
    },
    KeySpec {
        key: "max_offer_bytes",
        flag: "--max-offer-bytes",
        default: "256MiB",
        help: "room for all offers together, their paths and names counted with an allowance for what holds them, which bounds the tracker's memory (units allowed; past it, ADDF or a first BITF gets ERRR 406)",
    },
    KeySpec {
        key: "max_peers_per_reply",
        flag: "--max-peers-per-reply",
        default: "50",
        help: "most peers listed in one REQF answer",
    },
    KeySpec {
        key: "ring_size",
        flag: "--ring-size",
        default: "65536",
        help: "how many ids the course's ring has, for the hash and welcome services the tracker serves (2 to 4294967296)",
    },
    KeySpec {
        key: "ring_port",
        flag: "--ring-port",
        default: "7000",
        help: "the port ring peers usually listen on: a `yo` without a port means it, and the welcome service writes addresses on it as a bare IP",
    },
];

/// The tracker's validated configuration.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    pub listen: SocketAddr,
    pub log_file: Option<PathBuf>,
    pub log_level: LevelFilter,
    pub options: crate::tracker::TrackerOptions,
}

impl TrackerConfig {
    /// Validates the tracker's settings.
    pub fn from_settings(s: &Settings) -> Result<TrackerConfig, ConfigError> {
        // A whole number of ids from 2 to 2^32.
        let ring_size = |text: &str| {
            number_in(2, crate::ring::space::MAX_RING_SIZE)(text)
                .and_then(|size| crate::ring::RingSpace::new(size).map(|space| space.size()))
        };
        Ok(TrackerConfig {
            listen: SocketAddr::new(s.get("address", ip_address)?, s.get("port", port)?),
            log_file: s.get("log_file", optional_path)?,
            log_level: s.get("log_level", log_level)?,
            options: crate::tracker::TrackerOptions {
                max_connections: s.get(
                    "max_connections",
                    number_in(1, crate::tracker::MAX_CONNECTIONS as u64),
                )? as usize,
                max_connections_per_ip: s.get("max_connections_per_ip", number_in(1, 100_000))?
                    as usize,
                keep_alive: s.get("keep_alive_secs", seconds_in(1, 86_400))?,
                max_line: s.get("max_line_bytes", size_in(256, 1 << 20))? as usize,
                max_peers: s.get(
                    "max_peers_per_reply",
                    number_in(1, crate::tracker::MAX_PEERS_PER_REPLY as u64),
                )? as usize,
                max_results: s.get(
                    "max_results",
                    number_in(1, crate::tracker::MAX_RESULTS as u64),
                )? as usize,
                max_files_per_session: s.get("max_files_per_session", number_in(1, 1_000_000))?
                    as usize,
                max_offer_bytes: usize::try_from(
                    s.get("max_offer_bytes", size_in(1 << 20, 1 << 40))?,
                )
                .unwrap_or(usize::MAX),
                ring_size: s.get("ring_size", ring_size)?,
                ring_port: s.get("ring_port", number_in(1, 65535))? as u16,
            },
        })
    }
}

// ---------------------------------------------------------------------------
// The peer

/// The peer's keys, in the order of `config/peer.ini`.
pub const PEER_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "tracker",
        flag: "--tracker",
        default: "127.0.0.1:6969",
        help: "the tracker's HOST:PORT",
    },
    KeySpec {
        key: "address",
        flag: "--address",
        default: "0.0.0.0",
        help: "IP address the mini-server listens on (0.0.0.0: every IPv4 interface; ::, every interface, IPv4 and IPv6)",
    },
    KeySpec {
        key: "port",
        flag: "--port",
        default: "0",
        help: "TCP port of the mini-server (0 picks a free one)",
    },
    KeySpec {
        key: "user",
        flag: "--user",
        default: "",
        help: "user name announced to the tracker (letters, digits, - and _; empty: none)",
    },
    KeySpec {
        key: "piece_size",
        flag: "--piece-size",
        default: "256KiB",
        help: "piece size for files this peer shares: a power of two from 16KiB to 16MiB (doubled for files that would have over 32000 pieces)",
    },
    KeySpec {
        key: "download_dir",
        flag: "--download-dir",
        default: "downloads",
        help: "where downloads are saved",
    },
    KeySpec {
        key: "state_dir",
        flag: "--state-dir",
        default: ".swarmline",
        help: "where the peer keeps its manifest cache and the state of unfinished downloads",
    },
    KeySpec {
        key: "pool_size",
        flag: "--pool-size",
        default: "8",
        help: "threads fetching pieces in parallel",
    },
    KeySpec {
        key: "queue_depth",
        flag: "--queue-depth",
        default: "4",
        help: "piece requests in flight per neighbour connection",
    },
    KeySpec {
        key: "lanes_per_peer",
        flag: "--lanes-per-peer",
        default: "4",
        help: "connections a download opens to each peer, each with a batch of queue_depth pieces in flight (more: pieces checked on more cores at once)",
    },
    KeySpec {
        key: "bitmap_interval_secs",
        flag: "--bitmap-interval-secs",
        default: "1",
        help: "seconds between BufferMap exchanges with neighbours, progress reports and peer list refreshes (at most 60)",
    },
                KeySpec {
        key: "max_connections",
        flag: "--max-connections",
        default: "256",
        help: "connections the mini-server serves at once; the next one gets ERRR 500",
    },
    KeySpec {
        key: "max_connections_per_ip",
        flag: "--max-connections-per-ip",
        default: "128",
        help: "connections the mini-server serves at once from one IP address (a class on one machine is one address: each download opens lanes_per_peer to each peer)",
    },
    KeySpec {
        key: "idle_timeout_secs",
        flag: "--idle-timeout-secs",
        default: "120",
        help: "a connection to the mini-server without a complete line for this long is closed",
    },
    KeySpec {
        key: "max_bad_pieces",
        flag: "--max-bad-pieces",
        default: "3",
        help: "bad pieces or protocol violations after which a neighbour is banned for the rest of a download",
    },
    KeySpec {
        key: "tracker_ping_secs",
        flag: "--tracker-ping-secs",
        default: "30",
        help: "seconds between keep-alive pings to the tracker (keep it well under the tracker's keep_alive_secs; a session the tracker drops as idle between pings is warned about)",
    },
    KeySpec {
        key: "stall_timeout_secs",
        flag: "--stall-timeout-secs",
        default: "60",
        help: "a download that stores no piece for this long, with none asked of a peer that may give it, gives up (a peer given up after 4 failures in a row and tried once more counts only once it gives a piece); so does one that stores none for this long plus 60 s and one piece's time at 8 KiB/s, whatever is asked (152 s with the defaults)",
    },
    KeySpec {
        key: "upload_limit",
        flag: "--upload-limit",
        default: "0",
        help: "most bytes per second sent to other peers, all connections together (units allowed: 25MB; 0: no limit)",
    },
    KeySpec {
        key: "download_limit",
        flag: "--download-limit",
        default: "0",
        help: "most bytes per second received from other peers, all downloads together (units allowed: 25MB; 0: no limit)",
    },
    KeySpec {
        key: "profile",
        flag: "--profile",
        default: "all",
        help: "which files the web page lists and offers to download: audio, video or all (pieces of anything held are still served)",
    },
    KeySpec {
        key: "gui",
        flag: "--gui",
        default: "true",
        help: "serve the web page (files, downloads, player) while the peer runs",
    },
    KeySpec {
        key: "gui_address",
        flag: "--gui-address",
        default: "127.0.0.1",
        help: "IP address the web page listens on (127.0.0.1: this machine only; the page can start downloads)",
    },
    KeySpec {
        key: "gui_port",
        flag: "--gui-port",
        default: "0",
        help: "TCP port of the web page (0 picks a free one; the address is printed as `gui on http://...`)",
    },
    KeySpec {
        key: "ring",
        flag: "--ring",
        default: "false",
        help: "join the Chord ring, so that files are found and downloaded with no tracker at all",
    },
    KeySpec {
        key: "ring_size",
        flag: "--ring-size",
        default: "65536",
        help: "how many ring ids there are, from 2 to 4294967296 (every peer of a ring and its welcome service must agree; the course used 100)",
    },
    KeySpec {
        key: "ring_id",
        flag: "--ring-id",
        default: "",
        help: "this peer's ring id: a number, `service` (ask the hash service at ring_welcome), or empty (the hash of ip:port, the next free one if taken)",
    },
    KeySpec {
        key: "ring_welcome",
        flag: "--ring-welcome",
        default: "",
        help: "HOST:PORT of the welcome service used to join the ring (empty: the tracker, which serves it)",
    },
    KeySpec {
        key: "ring_join",
        flag: "--ring-join",
        default: "",
        help: "HOST:PORT of any live ring member to join through instead of the welcome service (its mini-server)",
    },
    KeySpec {
        key: "ring_successors",
        flag: "--ring-successors",
        default: "4",
        help: "length of the successor list: the ring survives that many neighbours failing at once, less one",
    },
    KeySpec {
        key: "ring_replicas",
        flag: "--ring-replicas",
        default: "3",
        help: "on how many peers each record is kept: its owner and the next ones (at most ring_successors)",
    },
    KeySpec {
        key: "ring_stabilize_ms",
        flag: "--ring-stabilize-ms",
        default: "1000",
        help: "milliseconds between stabilisation rounds (ask the successor for its predecessor, notify it)",
    },
    KeySpec {
        key: "ring_fix_fingers_ms",
        flag: "--ring-fix-fingers-ms",
        default: "2000",
        help: "milliseconds between rounds that look up every routing table line again",
    },
    KeySpec {
        key: "ring_check_predecessor_ms",
        flag: "--ring-check-predecessor-ms",
        default: "2000",
        help: "milliseconds between checks that the predecessor still answers",
    },
    KeySpec {
        key: "ring_refresh_secs",
        flag: "--ring-refresh-secs",
        default: "30",
        help: "seconds between announcements of this peer's files in the ring; a record not announced again for three times this long expires",
    },
    KeySpec {
        key: "sync_on_finish",
        flag: "--sync-on-finish",
        default: "true",
        help: "flush a finished download to disk before giving it its final name, so a power cut cannot leave a damaged file under that name; on Linux the write-out to disk starts while the pieces arrive, so little is left to flush at the end (false: done sooner on a slow disk)",
    },
    KeySpec {
        key: "user_map_file",
        flag: "--user-map-file",
        default: "users.txt",
        help: "file of `<user> - <ip:port>` lines, refreshed from the tracker (a file there that is not one is left alone)",
    },
    KeySpec {
        key: "user_map_refresh_secs",
        flag: "--user-map-refresh-secs",
        default: "30",
        help: "seconds between refreshes of the user map",
    },
    KeySpec {
        key: "log_file",
        flag: "--log-file",
        default: "peer.log",
        help: "log file, appended to (empty: terminal only); search, ring and route write one only when this flag is given",
    },
    KeySpec {
        key: "log_level",
        flag: "--log-level",
        default: "info",
        help: "off, error, warn, info, debug or trace; with a log file, the terminal of the shell, share and get shows warnings and errors only, the file this level (unless the flag is given)",
    },
];

/// The peer's validated configuration.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub tracker: SocketAddr,
    pub listen: SocketAddr,
    pub user: Option<UserName>,
    pub piece_size: u32,
    pub download_dir: PathBuf,
    pub state_dir: PathBuf,
    pub pool_size: usize,
    pub queue_depth: usize,
    pub lanes_per_peer: usize,
    pub bitmap_interval: Duration,
    pub stall_timeout: Duration,
    pub tracker_ping: Duration,
    pub max_bad_pieces: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub idle_timeout: Duration,
    pub upload_limit: u64,
    pub download_limit: u64,
    pub sync_on_finish: bool,
    pub profile: Profile,
    /// Where the web page listens (`None`: no page).
    pub gui: Option<SocketAddr>,
    /// How it takes part in the ring (`None`: it does not).
    pub ring: Option<RingSettings>,
    /// How often its files are announced in the ring.
    pub ring_refresh: Duration,
    pub user_map_file: PathBuf,
    pub user_map_refresh: Duration,
    pub log_file: Option<PathBuf>,
    pub log_level: LevelFilter,
}

impl PeerConfig {
    /// The files and folders a running peer writes itself (its state
    /// folder, user map and log): a folder shared leaves them out.
    pub fn own_files(&self) -> Vec<&Path> {
        let mut own = vec![self.state_dir.as_path(), self.user_map_file.as_path()];
        own.extend(self.log_file.as_deref());
        own
    }

    /// Validates the peer's settings.
    pub fn from_settings(s: &Settings) -> Result<PeerConfig, ConfigError> {
        let user = |text: &str| {
            if text.is_empty() {
                Ok(None)
            } else {
                UserName::parse(text).map(Some).map_err(|e| match e {
                    crate::protocol::ProtocolError::BadField { reason, .. } => reason,
                    other => other.to_string(),
                })
            }
        };
        // (A unit with a small b is taken as bytes here: no such size is
        // a power of two, so the hint below says what was meant.)
        let piece_size = |text: &str| {
            let size = parse_byte_size(text)?;
            let size = u32::try_from(size).map_err(|_| "too large".to_string())?;
            check_piece_size(size)
                .map(|()| size)
                .map_err(|reason| match binary_meant(text) {
                    Some(meant) => {
                        format!("{reason}; {text} is {size} bytes: did you mean {meant}?")
                    }
                    None => reason,
                })
        };
        Ok(PeerConfig {
            tracker: s.get("tracker", host_port)?,
            listen: SocketAddr::new(s.get("address", ip_address)?, s.get("port", port)?),
            user: s.get("user", user)?,
            piece_size: s.get("piece_size", piece_size)?,
            download_dir: s.get("download_dir", path)?,
            state_dir: s.get("state_dir", path)?,
            pool_size: s.get("pool_size", number_in(1, 256))? as usize,
            queue_depth: s.get("queue_depth", number_in(1, 64))? as usize,
            lanes_per_peer: s.get("lanes_per_peer", number_in(1, 16))? as usize,
            // At most 60 s, so links are used well within a mini-server's
            // 120 s idle deadline.
            bitmap_interval: s.get("bitmap_interval_secs", seconds_in(1, 60))?,
            stall_timeout: s.get("stall_timeout_secs", seconds_in(1, 86_400))?,
            tracker_ping: s.get("tracker_ping_secs", seconds_in(1, 3600))?,
            max_bad_pieces: s.get("max_bad_pieces", number_in(1, 1000))? as u32,
            max_connections: s.get("max_connections", number_in(1, 100_000))? as usize,
            max_connections_per_ip: s.get("max_connections_per_ip", number_in(1, 100_000))?
                as usize,
            idle_timeout: s.get("idle_timeout_secs", seconds_in(1, 86_400))?,
            upload_limit: s.get("upload_limit", size_in(0, u64::MAX))?,
            download_limit: s.get("download_limit", size_in(0, u64::MAX))?,
            sync_on_finish: s.get("sync_on_finish", boolean)?,
            profile: s.get("profile", Profile::parse)?,
            // Checked whether or not they are used: a typo is an error
            // even in a setting turned off for now.
            gui: s.get("gui", boolean)?.then_some(SocketAddr::new(
                s.get("gui_address", ip_address)?,
                s.get("gui_port", port)?,
            )),
            ring: if s.get("ring", boolean)? {
                Some(ring_settings(s, host_port)?)
            } else {
                // Checked all the same, but no name is looked up: a peer
                // off the ring must start offline, or with a member down.
                ring_settings(s, host_port_unresolved)?;
                refuse_ring_flags_without_ring(s)?;
                None
            },
            ring_refresh: s.get("ring_refresh_secs", seconds_in(1, 3600))?,
            user_map_file: s.get("user_map_file", path)?,
            user_map_refresh: s.get("user_map_refresh_secs", seconds_in(1, 86_400))?,
            log_file: s.get("log_file", optional_path)?,
            log_level: s.get("log_level", log_level)?,
        })
    }
}

/// A flag that says how to be in the ring, given to a peer not in one
/// (`--ring-join h:p` without `--ring true`): surely a mistake, which
/// would otherwise leave the peer quietly on the tracker alone. (In a
/// file the same keys may stay while the ring is turned off.)
fn refuse_ring_flags_without_ring(s: &Settings) -> Result<(), ConfigError> {
    for key in ["ring_join", "ring_welcome", "ring_id"] {
        let (value, source) = s.raw(key);
        if let Source::Flag(_) = source {
            if !value.is_empty() {
                return Err(ConfigError {
                    source: source.clone(),
                    section: s.section,
                    key: key.to_string(),
                    message: format!("{value:?}: this peer is not in a ring; add --ring true"),
                });
            }
        }
    }
    Ok(())
}

/// The ring settings of a peer (see the `ring_*` keys), with host names
/// turned into addresses by `resolve`.
fn ring_settings(
    s: &Settings,
    resolve: fn(&str) -> Result<SocketAddr, String>,
) -> Result<RingSettings, ConfigError> {
    let space = s.get("ring_size", |text| {
        number_in(2, MAX_RING_SIZE)(text).and_then(RingSpace::new)
    })?;
    let tracker = s.get("tracker", resolve)?;
    let welcome = s.get("ring_welcome", |text| {
        if text.is_empty() {
            Ok(tracker)
        } else {
            resolve(text)
        }
    })?;
    let entry = s.get("ring_join", |text| {
        if text.is_empty() {
            Ok(Entry::Welcome(welcome))
        } else {
            resolve(text).map(Entry::Member)
        }
    })?;
    let id = s.get("ring_id", |text| match text {
        "" => Ok(IdChoice::FromAddress),
        "service" => Ok(IdChoice::HashService(welcome)),
        number => space
            .parse_id(number)
            .map(IdChoice::Fixed)
            .map_err(|e| format!("{e}; or `service`, or empty")),
    })?;
    let successors = s.get("ring_successors", number_in(1, 32))? as usize;
    // A record's homes are its owner and the peers on the owner's
    // successor list: there cannot be more of them.
    let replicas = s.get("ring_replicas", number_in(1, successors as u64))? as usize;
    Ok(RingSettings {
        space,
        id,
        entry,
        successors,
        replicas,
        stabilize: s.get("ring_stabilize_ms", millis_in(50, 600_000))?,
        fix_fingers: s.get("ring_fix_fingers_ms", millis_in(50, 600_000))?,
        check_predecessor: s.get("ring_check_predecessor_ms", millis_in(50, 600_000))?,
    })
}

// ---------------------------------------------------------------------------
// Command-line glue: one flag per key, generated from the same table.

/// A clap argument for each key (`--port <PORT>`), its help text showing the
/// meaning and default.
pub fn flag_args(specs: &'static [KeySpec]) -> Vec<clap::Arg> {
    specs
        .iter()
        .map(|spec| {
            let shown_default = if spec.default.is_empty() {
                "empty"
            } else {
                spec.default
            };
            let arg = clap::Arg::new(spec.key)
                .long(spec.flag.trim_start_matches("--"))
                .value_name(spec.key.to_uppercase())
                .help(format!(
                    "{} [config: {}, default: {shown_default}]",
                    spec.help, spec.key
                ))
                .action(clap::ArgAction::Set);
            // A switch takes a word (`--gui false`): given none, the next
            // word (`--gui share a.txt`) is refused as no switch's value,
            // rather than a command read too late (`unrecognized
            // subcommand 'a.txt'`).
            let arg = if spec.is_switch() {
                arg.value_parser(clap::builder::PossibleValuesParser::new(
                    TRUE_WORDS.iter().chain(&FALSE_WORDS),
                ))
                .ignore_case(true)
            } else {
                arg
            };
            arg
                // Apart from a command's own options in its help.
                .help_heading("Settings (each one also a config key)")
                // Also after a subcommand (`peer get x --tracker h:p`).
                .global(true)
                // `--upload-limit -5` is a value to refuse with a reason,
                // not an unknown flag `-5`.
                .allow_hyphen_values(true)
        })
        .collect()
}

/// A hint for a command line where a switch (a key whose default is
/// `true` or `false`) is followed by a command instead of its word
/// (`peer --gui share a.txt`): the command is then read as the switch's
/// value, and the parser complains about the word after it.
pub fn switch_missing_its_word(
    specs: &[KeySpec],
    args: &[String],
    commands: &[&str],
) -> Option<String> {
    args.windows(2).find_map(|pair| {
        let spec = specs.iter().find(|spec| spec.flag == pair[0])?;
        (spec.is_switch() && commands.contains(&pair[1].as_str())).then(|| {
            format!(
                "{} takes a word, true or false, before the command: {} true {} ...",
                spec.flag, spec.flag, pair[1]
            )
        })
    })
}

/// Builds the settings of one program: defaults, then the ini file at
/// `config` (if given), then the flags present in `matches`.
pub fn load_settings(
    section: &'static str,
    specs: &'static [KeySpec],
    config: Option<&Path>,
    matches: &clap::ArgMatches,
) -> Result<Settings, ConfigError> {
    let mut settings = Settings::defaults(section, specs);
    if let Some(path) = config {
        settings.load_file(path)?;
    }
    for spec in specs {
        if let Some(value) = matches.get_one::<String>(spec.key) {
            settings.set_flag(spec.key, value.clone());
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_leading_tilde_is_the_home_folder_as_a_shell_makes_it() {
        let home = std::env::home_dir().expect("a home folder");
        assert_eq!(expand_home("~"), Ok(home.clone()));
        assert_eq!(expand_home("~/Downloads"), Ok(home.join("Downloads")));
        assert_eq!(expand_home("~//a/b"), Ok(home.join("a/b")));
        assert_eq!(expand_home("dl/~"), Ok(PathBuf::from("dl/~")));
        assert_eq!(expand_home("x~"), Ok(PathBuf::from("x~")));
        assert_eq!(expand_home("~$notes.doc"), Ok(PathBuf::from("~$notes.doc")));
        assert_eq!(optional_path(""), Ok(None));
    }

    fn ini(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn defaults_are_valid() {
        let tracker =
            TrackerConfig::from_settings(&Settings::defaults("tracker", TRACKER_KEYS)).unwrap();
        assert_eq!(tracker.listen.port(), 6969);
        let peer = PeerConfig::from_settings(&Settings::defaults("peer", PEER_KEYS)).unwrap();
        assert_eq!(peer.piece_size, 256 * 1024);
    }

    #[test]
    fn file_then_flag_override_the_default() {
        let file = ini("[tracker]\nport = 7000\nmax_line_bytes = 16KiB\n");
        let mut settings = Settings::defaults("tracker", TRACKER_KEYS);
        settings.load_file(file.path()).unwrap();
        let config = TrackerConfig::from_settings(&settings).unwrap();
        assert_eq!(
            (config.listen.port(), config.options.max_line),
            (7000, 16384)
        );
        settings.set_flag("port", "0".into());
        assert_eq!(
            TrackerConfig::from_settings(&settings)
                .unwrap()
                .listen
                .port(),
            0
        );
    }

    #[test]
    fn errors_name_the_file_the_key_and_what_is_allowed() {
        let file = ini("[tracker]\nport = abc\n");
        let mut settings = Settings::defaults("tracker", TRACKER_KEYS);
        settings.load_file(file.path()).unwrap();
        let message = TrackerConfig::from_settings(&settings)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(&file.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("key `port` in [tracker]"), "{message}");
        assert!(message.contains("from 0 to 65535"), "{message}");

        let mut settings = Settings::defaults("tracker", TRACKER_KEYS);
        settings.set_flag("keep_alive_secs", "0".into());
        let message = TrackerConfig::from_settings(&settings)
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("--keep-alive-secs: \"0\""), "{message}");
    }

    #[test]
    fn a_quoted_value_is_taken_without_its_quotes_and_a_key_set_twice_is_refused() {
        let file = ini("[tracker]\nlog_file = \"my logs/t.log\"\nport = '7000'\n");
        let mut settings = Settings::defaults("tracker", TRACKER_KEYS);
        settings.load_file(file.path()).unwrap();
        let config = TrackerConfig::from_settings(&settings).unwrap();
        assert_eq!(config.log_file.as_deref(), Some(Path::new("my logs/t.log")));
        assert_eq!(config.listen.port(), 7000);
        // One quote, or quotes inside: the value as written.
        assert_eq!(unquoted("\"a"), "\"a");
        assert_eq!(unquoted("a \"b\" c"), "a \"b\" c");
        assert_eq!(unquoted("\"a'"), "\"a'");

        let file = ini("[tracker]\nport = 1\n; a comment\nPORT = 2\n");
        let message = Settings::defaults("tracker", TRACKER_KEYS)
            .load_file(file.path())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("key `port`") && message.contains("is set twice, on lines 2 and 4"),
            "{message}"
        );
    }

    #[test]
    fn a_switch_followed_by_a_command_is_hinted_at() {
        let args = |line: &str| line.split(' ').map(String::from).collect::<Vec<_>>();
        let commands = ["share", "get"];
        assert_eq!(
            switch_missing_its_word(PEER_KEYS, &args("peer --gui share a.txt"), &commands),
            Some(
                "--gui takes a word, true or false, before the command: --gui true share ..."
                    .into()
            )
        );
        for fine in ["peer --gui false share a.txt", "peer --tracker share get x"] {
            assert_eq!(
                switch_missing_its_word(PEER_KEYS, &args(fine), &commands),
                None,
                "{fine}"
            );
        }
    }

    #[test]
    fn values_keep_hashes_and_semicolons_and_a_bom_is_skipped() {
        let file = ini("\u{feff}; a comment\n[tracker]\n# another\nlog_file = logs/a#b;c.log\n");
        let mut settings = Settings::defaults("tracker", TRACKER_KEYS);
        settings.load_file(file.path()).unwrap();
        let config = TrackerConfig::from_settings(&settings).unwrap();
        assert_eq!(
            config.log_file.as_deref(),
            Some(Path::new("logs/a#b;c.log"))
        );
    }

    #[test]
    fn files_that_are_no_configuration_are_refused_before_they_are_read_whole() {
        let mut settings = Settings::defaults("tracker", TRACKER_KEYS);
        let refused = |path: &Path, settings: &mut Settings| {
            settings.load_file(path).unwrap_err().to_string()
        };
        let dir = tempfile::tempdir().unwrap();
        let message = refused(dir.path(), &mut settings);
        assert!(message.contains("not a regular file"), "{message}");
        assert!(
            !message.contains("key `-`"),
            "about the file, not a key: {message}"
        );
        // A FIFO is refused before it is opened (the open would wait for
        // a writer that never comes).
        if cfg!(unix) {
            let fifo = dir.path().join("fifo.ini");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|status| status.success()) {
                let message = refused(&fifo, &mut settings);
                assert!(message.contains("not a regular file"), "{message}");
            }
        }
        let big = ini(&"; padding\n".repeat(200_000));
        let message = refused(big.path(), &mut settings);
        assert!(message.contains("is over 1 MiB"), "{message}");
        let latin1 = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(latin1.path(), b"[tracker]\nlog_file = caf\xe9.log\n").unwrap();
        let message = refused(latin1.path(), &mut settings);
        assert!(message.contains("not UTF-8"), "{message}");
        let message = refused(ini("port = 7000\n[tracker]\n").path(), &mut settings);
        assert!(
            message.contains("key `port`") && message.contains("comes before any section"),
            "{message}"
        );
        let message = refused(ini("[Default]\nport = 7000\n").path(), &mut settings);
        assert!(
            message.contains("key `port`") && message.contains("is under [default]"),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_and_sections_are_refused() {
        let mut settings = Settings::defaults("tracker", TRACKER_KEYS);
        let message = settings
            .load_file(ini("[tracker]\nprot = 1\n").path())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("key `prot`") && message.contains("unknown key"),
            "{message}"
        );
        let message = settings
            .load_file(ini("[peer]\nport = 1\n").path())
            .unwrap_err()
            .to_string();
        assert!(message.contains("unknown section [peer]"), "{message}");
        let message = settings
            .load_file(Path::new("/no/such/file.ini"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("cannot read"), "{message}");
    }

    #[test]
    fn a_host_name_is_resolved_to_its_ipv4_address_first() {
        // Where localhost has an IPv4 address at all (it may be ::1 only).
        let has_ipv4 = "localhost:6969"
            .to_socket_addrs()
            .is_ok_and(|mut addrs| addrs.any(|a| a.is_ipv4()));
        if has_ipv4 {
            assert!(host_port("localhost:6969").unwrap().is_ipv4());
        }
        assert_eq!(
            host_port("[::1]:6969").unwrap(),
            "[::1]:6969".parse().unwrap()
        );
        assert!(host_port("no port").is_err());
        // The wildcard a server prints is this machine, on every system.
        assert_eq!(
            host_port("0.0.0.0:6969").unwrap(),
            "127.0.0.1:6969".parse().unwrap()
        );
        assert_eq!(
            host_port("[::]:6969").unwrap(),
            "[::1]:6969".parse().unwrap()
        );
    }

    #[test]
    fn peer_values_are_checked() {
        let mut settings = Settings::defaults("peer", PEER_KEYS);
        settings.set_flag("piece_size", "100KiB".into());
        let message = PeerConfig::from_settings(&settings)
            .unwrap_err()
            .to_string();
        assert!(message.contains("power of two"), "{message}");
        // A decimal unit where a binary one was most likely meant.
        for (written, meant) in [("256KB", "256KiB"), ("1MB", "1MiB")] {
            let mut settings = Settings::defaults("peer", PEER_KEYS);
            settings.set_flag("piece_size", written.into());
            let message = PeerConfig::from_settings(&settings)
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(&format!("did you mean {meant}?")),
                "{message}"
            );
        }
        let mut settings = Settings::defaults("peer", PEER_KEYS);
        settings.set_flag("user", "bad name".into());
        assert!(PeerConfig::from_settings(&settings).is_err());
        // Settings of a part turned off are checked all the same...
        let refused = |key: &'static str, value: &str| {
            let mut settings = Settings::defaults("peer", PEER_KEYS);
            settings.set_flag(key, value.into());
            PeerConfig::from_settings(&settings)
                .unwrap_err()
                .to_string()
        };
        assert!(refused("gui_port", "99999").contains("from 0 to 65535"));
        assert!(refused("ring_stabilize_ms", "1").contains("--ring-stabilize-ms"));
        // Its host names are not looked up when the ring is off: a peer
        // must start offline too.
        let mut settings = Settings::defaults("peer", PEER_KEYS);
        settings
            .load_file(ini("[peer]\nring_join = no-such-host.invalid:7000\n").path())
            .unwrap();
        assert!(PeerConfig::from_settings(&settings).unwrap().ring.is_none());
        let mut settings = Settings::defaults("peer", PEER_KEYS);
        settings
            .load_file(ini("[peer]\nring_join = no port\n").path())
            .unwrap();
        assert!(PeerConfig::from_settings(&settings).is_err());
        // ... and a flag saying how to be in a ring needs the ring.
        let message = refused("ring_join", "10.0.0.1:7000");
        assert!(
            message.contains("not in a ring; add --ring true"),
            "{message}"
        );
        let mut settings = Settings::defaults("peer", PEER_KEYS);
        settings.set_flag("ring", "true".into());
        settings.set_flag("ring_join", "10.0.0.1:7000".into());
        assert!(PeerConfig::from_settings(&settings).unwrap().ring.is_some());
    }
}
