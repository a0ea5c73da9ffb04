//! The allow-list: which hosts may connect to the client daemon, as HNClient V2 does it.
//! 127.0.0.1 and ::1 are allowed unless `[listen] allow_loopback = false`; any other
//! address (127.0.0.2 included), and loopback then too, only when the file lists it.
//!
//! The file holds one IPv4 or IPv6 address or CIDR block a line (`10.1.2.3`,
//! `10.1.0.0/16`, `fd00::/8`); `#` starts a comment; blank lines are ignored. It is UTF-8,
//! with or without the byte-order mark Notepad writes (UTF-16 with its byte-order mark is
//! taken too). It is read again when it changes — checked at each connection and every
//! second ([`AllowList::refresh`]) — so hosts are added and removed without a restart,
//! and every change is announced to the open connections ([`AllowList::subscribe`]),
//! which close when their peer is no longer allowed.
//!
//! A file that is missing, unreadable or invalid, at start or later, is logged as an
//! error (naming the file and, for a bad line, its number) and means an empty list: only
//! loopback connects (nobody, with `allow_loopback = false`). It never means the last
//! good list: a host being removed must not stay because the edit had a typo.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::watch;

/// An address or a block of addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    network: IpAddr,
    prefix: u8,
}

impl Block {
    /// Parses `10.1.2.3`, `10.1.0.0/16`, `::1`, `fd00::/8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address"))?;
        let network = canonical(network);
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= bits => n,
                _ => return Err(format!("{p:?} is not a prefix length from 0 to {bits}")),
            },
        };
        Ok(Self { network, prefix })
    }

    /// True when `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_equal(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_equal(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

/// The first `prefix` bits of `a` and `b` are equal.
fn prefix_equal(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let whole = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xFFu8 << (8 - rest);
    a[whole] & mask == b[whole] & mask
}

/// IPv4 addresses that arrive IPv4-mapped on an IPv6 socket (`::ffff:10.1.2.3`) are
/// taken as the IPv4 addresses they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// True for 127.0.0.1 and ::1 (and 127.0.0.1 IPv4-mapped), the addresses
/// `allow_loopback` lets in.
pub fn is_loopback(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
}

/// Parses an allow-list file's text; an error names the line.
pub fn parse(text: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        blocks.push(Block::parse(line).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(blocks)
}

/// The text of an allow-list file: UTF-8, with or without a byte-order mark, or UTF-16
/// with one (Notepad's "Unicode"). Bytes that are neither are an error naming the line.
pub fn decode(bytes: &[u8]) -> Result<String, String> {
    let utf16 = |bytes: &[u8], read: fn([u8; 2]) -> u16| {
        let units = bytes
            .chunks(2)
            .map(|c| read([c[0], *c.get(1).unwrap_or(&0)]));
        let mut text = String::new();
        for unit in char::decode_utf16(units) {
            match unit {
                Ok(c) => text.push(c),
                Err(_) => {
                    let line = text.matches('\n').count() + 1;
                    return Err(format!("line {line}: not UTF-16"));
                }
            }
        }
        Ok(text)
    };
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return utf8(rest);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, u16::from_be_bytes);
    }
    utf8(bytes)
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let line = bytes[..good].iter().filter(|&&b| b == b'\n').count() + 1;
        format!("line {line}: not UTF-8")
    })
}

/// The allow-list in force.
pub struct AllowList {
    path: Option<PathBuf>,
    allow_loopback: bool,
    loaded: Mutex<Loaded>,
    /// Counts the changes of the list in force, for the open connections to recheck
    /// their peer.
    changes: watch::Sender<u64>,
}

/// What the file held when last read, and the list made of it.
struct Loaded {
    /// The file's bytes, or why they could not be read; a change of either is a reload.
    seen: Option<Result<Vec<u8>, std::io::ErrorKind>>,
    blocks: Vec<Block>,
}

impl AllowList {
    /// The list in the file at `path`, or an empty one when `None`. A file that cannot be
    /// read or has a bad line is logged as an error and taken as empty; it is retried
    /// when it changes.
    pub fn open(path: Option<&Path>, allow_loopback: bool) -> Self {
        let list = Self {
            path: path.map(Path::to_path_buf),
            allow_loopback,
            loaded: Mutex::new(Loaded {
                seen: None,
                blocks: Vec::new(),
            }),
            changes: watch::channel(0).0,
        };
        list.refresh();
        list
    }

    /// The file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// True when loopback connects without being listed.
    pub fn allows_loopback(&self) -> bool {
        self.allow_loopback
    }

    /// A receiver that sees a new value each time the list in force changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Reads the file again; when it changed, makes the new list the one in force (an
    /// empty one, logged as an error, when the file is missing, unreadable or invalid)
    /// and tells the subscribers. Returns true when the list in force changed.
    pub fn refresh(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let now = std::fs::read(path).map_err(|e| e.kind());
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.seen.as_ref() == Some(&now) {
            return false;
        }
        let first = loaded.seen.is_none();
        let fallback = if self.allow_loopback {
            "only 127.0.0.1 and ::1 may connect"
        } else {
            "no host may connect (allow_loopback = false)"
        };
        let blocks = match &now {
            Ok(bytes) => match decode(bytes).and_then(|text| parse(&text)) {
                Ok(blocks) => {
                    log::info!(
                        "allow-list {} {}: {} entries",
                        path.display(),
                        if first { "read" } else { "reloaded" },
                        blocks.len()
                    );
                    blocks
                }
                Err(e) => {
                    log::error!("allow-list {}: {e}; {fallback}", path.display());
                    Vec::new()
                }
            },
            Err(kind) => {
                let e = std::io::Error::from(*kind);
                log::error!(
                    "allow-list {} cannot be read ({e}); {fallback}",
                    path.display()
                );
                Vec::new()
            }
        };
        let changed = blocks != loaded.blocks;
        *loaded = Loaded {
            seen: Some(now),
            blocks,
        };
        drop(loaded);
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
        changed
    }

    /// True when `ip` may connect, by the list in force: loopback when
    /// `allow_loopback`, or listed. Does not read the file ([`refresh`](Self::refresh)
    /// does).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allow_loopback && is_loopback(ip) {
            return true;
        }
        let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        loaded.blocks.iter().any(|b| b.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_match_their_prefix() {
        let b = Block::parse("10.1.0.0/16").unwrap();
        assert!(b.contains(ip("10.1.255.3")));
        assert!(!b.contains(ip("10.2.0.1")));
        assert!(b.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        let b = Block::parse("192.168.1.128/25").unwrap();
        assert!(b.contains(ip("192.168.1.200")));
        assert!(!b.contains(ip("192.168.1.127")));
        let b = Block::parse("127.0.0.2").unwrap();
        assert!(b.contains(ip("127.0.0.2")) && !b.contains(ip("127.0.0.3")));
        let b = Block::parse("fd00::/8").unwrap();
        assert!(b.contains(ip("fd12::1")) && !b.contains(ip("fe80::1")));
        assert!(!b.contains(ip("10.0.0.1")));
        assert!(Block::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            parse("# hosts\n10.0.0.1  # lab\n\n10.0.0.0/33\n").unwrap_err(),
            "line 4: \"33\" is not a prefix length from 0 to 32"
        );
        assert!(parse("host.example\n").unwrap_err().starts_with("line 1:"));
        assert_eq!(parse(" 10.0.0.1 # x\n\n#\n").unwrap().len(), 1);
    }

    #[test]
    fn byte_order_marks_and_bad_bytes() {
        assert_eq!(decode(b"\xEF\xBB\xBF10.0.0.1\r\n").unwrap(), "10.0.0.1\r\n");
        assert_eq!(
            parse(&decode(b"\xEF\xBB\xBF10.0.0.1\r\n").unwrap())
                .unwrap()
                .len(),
            1
        );
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(
                "# lab\r\n10.0.0.1\r\n"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes),
            )
            .collect();
        assert_eq!(parse(&decode(&utf16).unwrap()).unwrap().len(), 1);
        assert_eq!(
            decode(b"10.0.0.1\n\xFF\n").unwrap_err(),
            "line 2: not UTF-8"
        );
        // Without the mark, a BOM-less UTF-16 file is not taken for addresses.
        assert!(parse(&decode(b"1\x000\x00").unwrap()).is_err());
    }

    #[test]
    fn a_missing_or_bad_file_means_loopback_only_and_every_change_is_announced() {
        let none = AllowList::open(None, true);
        assert!(none.allows(ip("127.0.0.1")) && none.allows(ip("::1")));
        assert!(none.allows(ip("::ffff:127.0.0.1")));
        assert!(!none.allows(ip("127.0.0.2")));
        assert!(!AllowList::open(None, false).allows(ip("127.0.0.1")));

        let dir = std::env::temp_dir().join(format!("hnsecure-allow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("allow.txt");
        std::fs::write(&file, "# none yet\n").unwrap();
        let list = AllowList::open(Some(&file), true);
        let mut changes = list.subscribe();
        assert!(!list.allows(ip("127.0.0.2")));
        std::fs::write(&file, "# the lab\n127.0.0.2\n10.9.0.0/16\n").unwrap();
        assert!(!list.allows(ip("127.0.0.2")), "not before a refresh");
        assert!(list.refresh());
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert!(list.allows(ip("127.0.0.2")), "re-read after the change");
        assert!(list.allows(ip("10.9.8.7")));
        assert!(!list.refresh(), "nothing new");
        // A bad edit means loopback only, not the last good list.
        std::fs::write(&file, "127.0.0.2\nnonsense here\n").unwrap();
        assert!(list.refresh());
        assert!(!list.allows(ip("127.0.0.2")) && !list.allows(ip("10.9.8.7")));
        assert!(list.allows(ip("127.0.0.1")));
        assert!(changes.has_changed().unwrap());
        std::fs::write(&file, "10.9.0.0/16\n127.0.0.2\n").unwrap();
        list.refresh();
        assert!(list.allows(ip("127.0.0.2")));
        // Deleted: loopback only.
        std::fs::remove_file(&file).unwrap();
        assert!(list.refresh());
        assert!(!list.allows(ip("127.0.0.2")));
        // Bad at start: loopback only, and taken once the file is mended.
        std::fs::write(&file, "bad\n").unwrap();
        let list = AllowList::open(Some(&file), false);
        assert!(!list.allows(ip("127.0.0.1")), "allow_loopback = false");
        std::fs::write(&file, "\u{feff}127.0.0.1\n").unwrap();
        list.refresh();
        assert!(list.allows(ip("127.0.0.1")), "listed, with a BOM");
        assert!(!list.allows(ip("::1")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
