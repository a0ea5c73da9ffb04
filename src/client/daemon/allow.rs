//! The allow-list: which other hosts may connect to the client daemon, as HNClient V2
//! does it. 127.0.0.1 and ::1 are always allowed; any other address (127.0.0.2
//! included) only when the file lists it.
//!
//! The file holds one IPv4 or IPv6 address or CIDR block a line (`10.1.2.3`,
//! `10.1.0.0/16`, `fd00::/8`); `#` starts a comment; blank lines are ignored. It is read
//! again when it changes (checked at each connection, by modification time and size), so
//! hosts are added and removed without a restart. A file that has become unreadable or
//! invalid is reported in the log and the last good list stays in force.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

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

/// The allow-list in force.
pub struct AllowList {
    path: Option<PathBuf>,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    /// Modification time and size of the file the list was read from.
    stamp: Option<(SystemTime, u64)>,
    blocks: Vec<Block>,
}

fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified()?, meta.len()))
}

/// Reads and parses the file at `path`.
fn load(path: &Path) -> Result<((SystemTime, u64), Vec<Block>), String> {
    let before = stamp(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let blocks = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((before, blocks))
}

impl AllowList {
    /// The list in the file at `path`, or only the loopback addresses when `None`. A file
    /// that cannot be read or has a bad line is an error here, at start.
    pub fn open(path: Option<&Path>) -> Result<Self, String> {
        let loaded = match path {
            Some(p) => {
                let (stamp, blocks) = load(p)?;
                Loaded {
                    stamp: Some(stamp),
                    blocks,
                }
            }
            None => Loaded {
                stamp: None,
                blocks: Vec::new(),
            },
        };
        Ok(Self {
            path: path.map(Path::to_path_buf),
            loaded: Mutex::new(loaded),
        })
    }

    /// The file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// True when `ip` may connect: 127.0.0.1, ::1, or on the list (re-read first if the
    /// file changed).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]) {
            return true;
        }
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.path {
            let now = stamp(path).ok();
            if now.is_some() && now != loaded.stamp {
                match load(path) {
                    Ok((stamp, blocks)) => {
                        log::info!(
                            "allow-list {} reloaded: {} entries",
                            path.display(),
                            blocks.len()
                        );
                        *loaded = Loaded {
                            stamp: Some(stamp),
                            blocks,
                        };
                    }
                    Err(e) => {
                        log::warn!("allow-list not reloaded, the previous one stays: {e}");
                        // Do not try again until the file changes once more.
                        loaded.stamp = now;
                    }
                }
            }
        }
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
    fn loopback_only_without_a_file_and_reload_on_change() {
        let none = AllowList::open(None).unwrap();
        assert!(none.allows(ip("127.0.0.1")) && none.allows(ip("::1")));
        assert!(none.allows(ip("::ffff:127.0.0.1")));
        assert!(!none.allows(ip("127.0.0.2")));

        let dir = std::env::temp_dir().join(format!("hnsecure-allow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("allow.txt");
        std::fs::write(&file, "# none yet\n").unwrap();
        let list = AllowList::open(Some(&file)).unwrap();
        assert!(!list.allows(ip("127.0.0.2")));
        std::fs::write(&file, "# the lab\n127.0.0.2\n10.9.0.0/16\n").unwrap();
        assert!(list.allows(ip("127.0.0.2")), "re-read after the change");
        assert!(list.allows(ip("10.9.8.7")));
        // A bad edit keeps the last good list.
        std::fs::write(&file, "127.0.0.2\nnonsense here\n").unwrap();
        assert!(list.allows(ip("127.0.0.2")));
        assert!(list.allows(ip("10.9.8.7")));
        std::fs::write(&file, "10.9.0.0/16\n").unwrap();
        assert!(!list.allows(ip("127.0.0.2")), "removed again");
        std::fs::write(&file, "bad\n").unwrap();
        assert!(AllowList::open(Some(&file)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
