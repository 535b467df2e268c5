//! Loopback ports for the tests and benches of cps-trust.
//!
//! Binding port 0 and dropping the socket is racy: the kernel takes that port from its
//! ephemeral range, and the next outgoing connection of any test running alongside may get the
//! very same port as its source port before the daemon under test binds it ("Address already
//! in use"). The ports handed out here come from outside the ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), so the kernel never picks them on its own; they
//! are free for both TCP and UDP on 127.0.0.1 when handed out, never handed out twice by one
//! process, and reserved across processes by a file per port naming the owner's PID (a file
//! whose process is gone is taken over).

pub mod postgres;

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;

static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port free for TCP and UDP on 127.0.0.1, outside the kernel's ephemeral range.
pub fn port() -> u16 {
    ports(1)
}

/// The first of `n` consecutive such ports (vpcd takes a port and the next one).
pub fn ports(n: u16) -> u16 {
    assert!(n >= 1);
    let (lo, hi) = range();
    let span = u32::from(hi - lo) + 1;
    let start = random() % span;
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for i in 0..span {
        let first = lo as u32 + (start + i) % span;
        if first + u32::from(n) - 1 > u32::from(hi) {
            continue;
        }
        let first = first as u16;
        let all: Vec<u16> = (first..first + n).collect();
        if all.iter().any(|p| given.contains(p)) || !all.iter().all(|&p| free(p)) {
            continue;
        }
        if !reserve(&all) {
            continue;
        }
        given.extend(all);
        return first;
    }
    panic!("no {n} free loopback port(s) in {lo}..={hi}");
}

/// The ports to draw from: below the ephemeral range when there is room, else above it.
fn range() -> (u16, u16) {
    let (eph_lo, eph_hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let below = (10_000u16, eph_lo.saturating_sub(1));
    let above = (eph_hi.saturating_add(1), u16::MAX);
    let size = |(a, b): (u16, u16)| b.saturating_sub(a);
    if size(below) >= 2_000 || size(below) >= size(above) {
        below
    } else {
        above
    }
}

fn free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("cps-trust-test-ports")
}

/// Claim every port by creating its file; on any failure release what was claimed.
fn reserve(ports: &[u16]) -> bool {
    let dir = lock_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        // No shared directory: the in-process record and the bind check still hold.
        return true;
    }
    let me = std::process::id();
    let mut taken = Vec::new();
    for &p in ports {
        if claim(&dir, p, me) {
            taken.push(p);
        } else {
            for t in taken {
                let _ = std::fs::remove_file(dir.join(t.to_string()));
            }
            return false;
        }
    }
    true
}

fn claim(dir: &std::path::Path, port: u16, me: u32) -> bool {
    use std::io::Write;
    let path = dir.join(port.to_string());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let _ = write!(f, "{me}");
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                match owner {
                    Some(pid)
                        if pid != me && std::path::Path::new(&format!("/proc/{pid}")).exists() =>
                    {
                        return false;
                    }
                    // Ours from an earlier call (never twice: `GIVEN` says so), or its owner is
                    // gone: take it over.
                    Some(_) => {
                        let _ = std::fs::remove_file(&path);
                    }
                    // Being written right now by its creator, or unreadable: leave it.
                    None => return false,
                }
            }
            Err(_) => return true,
        }
    }
    false
}

fn random() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_distinct_and_bindable() {
        let (lo, hi) = range();
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let p = port();
            assert!((lo..=hi).contains(&p), "{p} not in {lo}..={hi}");
            assert!(seen.insert(p), "{p} handed out twice");
            TcpListener::bind(("127.0.0.1", p)).unwrap();
            UdpSocket::bind(("127.0.0.1", p)).unwrap();
        }
        let first = ports(2);
        assert!(!seen.contains(&first) && !seen.contains(&(first + 1)));
        TcpListener::bind(("127.0.0.1", first + 1)).unwrap();
    }

    #[test]
    fn a_port_held_by_a_live_process_is_not_handed_out() {
        let dir = lock_dir();
        std::fs::create_dir_all(&dir).unwrap();
        // PID 1 is alive on every Linux system.
        let p = port();
        let path = dir.join(p.to_string());
        std::fs::write(&path, "1").unwrap();
        assert!(!claim(&dir, p, std::process::id()));
        // A file whose process is gone is taken over.
        std::fs::write(&path, u32::MAX.to_string()).unwrap();
        assert!(claim(&dir, p, std::process::id()));
    }
}
