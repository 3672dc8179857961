//! The audit of direct interfaces: the node's nftables rules log the first
//! packet of every connection a sandbox opens through its direct interface
//! (allowed or refused) to an NFLOG group, and this reads the group.
//!
//! A raw `NETLINK_NETFILTER` socket: bind the group (`NFULNL_CFG_CMD_BIND`),
//! ask for the first 64 bytes of each packet (the IP and transport
//! headers), then read `NFULNL_MSG_PACKET` messages. The rule's log prefix
//! says which link and what was decided (`a{n}` allowed, `d{n}` refused).
//! The kernel drops messages when the reader falls behind (`ENOBUFS`); the
//! reader goes on, so a flood of refused connects costs events, never the
//! node. Parsing is defensive: messages are bounds-checked, never trusted.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
/// Bytes of each packet copied: enough for IPv4/IPv6 and TCP/UDP ports.
const SNAPLEN: u32 = 64;

/// One logged connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The direct link's number.
    pub link: u32,
    pub allowed: bool,
    pub protocol: &'static str,
    pub dst: IpAddr,
    /// 0 for protocols without ports.
    pub port: u16,
}

fn nlmsg(kind: u16, flags: u16, group: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    // struct nfgenmsg: family, version, res_id (the group, big endian).
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    m.extend_from_slice(&group.to_be_bytes());
    for (t, v) in attrs {
        let len = 4 + v.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(v);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m
}

/// A socket bound to NFLOG group `group`, non-blocking.
pub fn open(group: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain socket call; the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, NETLINK_NETFILTER)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; zero is "the kernel picks our port id".
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_nl of `len` bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let mut mode = SNAPLEN.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    for attr in [(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND]), (NFULA_CFG_MODE, mode)] {
        let msg = nlmsg(kind, flags, group, &[(attr.0, &attr.1)]);
        send_and_ack(&fd, &msg)?;
    }
    Ok(fd)
}

/// Sends a request and waits (briefly, the socket being non-blocking) for its ack.
fn send_and_ack(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: msg is a valid buffer for the call.
    if unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 256];
    for _ in 0..200 {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            return Err(e);
        }
        // NLMSG_ERROR (2) carries the error number after the header; 0 is the ack.
        let n = n as usize;
        if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == libc::NLMSG_ERROR as u16 {
            let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            return if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-errno)) };
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no answer from nfnetlink_log"))
}

/// Reads the group's messages from `fd` (from [`open`]) and hands each
/// attempt to `on`, until `on` answers false or the socket fails.
pub async fn read(fd: OwnedFd, on: impl Fn(Logged) -> bool) {
    // SAFETY: the AsyncFd takes ownership of the socket, which no one else closes.
    let fd = match unsafe { tokio::io::unix::AsyncFd::register(fd) } {
        Ok(fd) => fd,
        Err(e) => return tracing::error!(error = %e, "watching the direct interfaces' log"),
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let Ok(mut ready) = fd.readable().await else { return };
        // SAFETY: recv into a buffer we own, for its length.
        let n = unsafe { libc::recv(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
                // The kernel dropped messages while we were behind: go on.
                e if e.raw_os_error() == Some(libc::ENOBUFS) => tracing::warn!("direct interfaces' log overran"),
                e => return tracing::error!(error = %e, "reading the direct interfaces' log"),
            }
            continue;
        }
        for logged in parse(&buf[..n as usize]) {
            if !on(logged) {
                return;
            }
        }
    }
}

/// Attributes of one netlink message body: (type, value) pairs.
fn attrs(mut body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if body.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([body[0], body[1]]));
        let kind = u16::from_ne_bytes([body[2], body[3]]) & 0x3fff;
        if len < 4 || len > body.len() {
            return None;
        }
        let value = &body[4..len];
        body = &body[len.next_multiple_of(4).min(body.len())..];
        Some((kind, value))
    })
}

/// The logged attempts in one buffer read from the socket.
pub fn parse(mut buf: &[u8]) -> Vec<Logged> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < 16 || len > buf.len() {
            break;
        }
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET && len >= 20 {
            out.extend(packet(&buf[20..len]));
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

fn packet(body: &[u8]) -> Option<Logged> {
    let (mut prefix, mut payload) = (None, None);
    for (kind, value) in attrs(body) {
        match kind {
            NFULA_PREFIX => prefix = Some(value),
            NFULA_PAYLOAD => payload = Some(value),
            _ => {}
        }
    }
    let prefix = std::str::from_utf8(prefix?).ok()?.trim_end_matches('\0');
    let allowed = match prefix.as_bytes().first()? {
        b'a' => true,
        b'd' => false,
        _ => return None,
    };
    let link = prefix[1..].parse().ok()?;
    let (protocol, dst, port) = headers(payload?)?;
    Some(Logged { link, allowed, protocol, dst, port })
}

/// Protocol, destination address and port of an IP packet's first bytes.
fn headers(p: &[u8]) -> Option<(&'static str, IpAddr, u16)> {
    let (proto, dst, rest) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            (*p.get(9)?, IpAddr::V4(Ipv4Addr::from(dst)), p.get(ihl..)?)
        }
        6 => {
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            (*p.get(6)?, IpAddr::V6(Ipv6Addr::from(dst)), p.get(40..)?)
        }
        _ => return None,
    };
    let port = || rest.get(2..4).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    Some(match proto {
        6 => ("tcp", dst, port()),
        17 => ("udp", dst, port()),
        1 | 58 => ("icmp", dst, 0),
        _ => ("ip", dst, 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn logged_message(prefix: &str, payload: &[u8]) -> Vec<u8> {
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        let kind = NFNL_SUBSYS_ULOG << 8;
        nlmsg(kind, 0, 7, &[(1, &[0u8; 4][..]), (NFULA_PREFIX, &p), (NFULA_PAYLOAD, payload)])
    }

    fn tcp_syn_v4(dst: [u8; 4], port: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 231, 0, 2];
        p.extend_from_slice(&dst);
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    #[test]
    fn packets_are_read_with_their_link_and_decision() {
        let mut buf = logged_message("a7", &tcp_syn_v4([10, 233, 77, 2], 8080));
        buf.extend(logged_message("d12", &tcp_syn_v4([10, 233, 77, 3], 8081)));
        let got = parse(&buf);
        assert_eq!(
            got,
            [
                Logged { link: 7, allowed: true, protocol: "tcp", dst: "10.233.77.2".parse().expect("ip"), port: 8080 },
                Logged {
                    link: 12,
                    allowed: false,
                    protocol: "tcp",
                    dst: "10.233.77.3".parse().expect("ip"),
                    port: 8081
                },
            ]
        );
        assert!(parse(&logged_message("x1", &tcp_syn_v4([1, 2, 3, 4], 1))).is_empty(), "not our prefix");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes);
            let _ = packet(&bytes);
            let _ = headers(&bytes);
        }

        #[test]
        fn truncated_messages_never_panic(cut in 0usize..120) {
            let m = logged_message("a1", &tcp_syn_v4([1, 2, 3, 4], 443));
            let _ = parse(&m[..cut.min(m.len())]);
        }
    }
}
