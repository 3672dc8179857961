//! Configuring a sandbox's direct interface from inside its network
//! namespace (run on the [`super::netjoin`] thread): IPv6 off, an IPv4
//! address, the link up, and a default route through the host's end.
//!
//! Plain `ioctl`s on a datagram socket made in the namespace: the classic
//! interface calls do all of this without a netlink library, in a few
//! microseconds, and without any process inside the sandbox taking part.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};

/// The inside end of a direct link.
#[derive(Debug, Clone)]
pub struct Iface {
    /// Its name inside the sandbox (`eth0`).
    pub name: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    /// The host's end: the default route goes through it.
    pub gateway: Ipv4Addr,
}

/// `struct rtentry` of `<net/route.h>` (the `libc` crate has it for musl only).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; any bit pattern is a valid sockaddr.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(format!("invalid interface name `{name}`"));
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ioctl<T>(fd: &OwnedFd, request: libc::c_ulong, arg: &mut T, what: &str) -> Result<(), String> {
    // SAFETY: `arg` is the structure `request` expects and lives for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) } < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Configures `iface`; the calling thread must be in the sandbox's namespace.
pub fn configure(iface: &Iface) -> Result<(), String> {
    if iface.prefix > 30 {
        return Err(format!("prefix /{} leaves no room for two ends", iface.prefix));
    }
    // No IPv6 at all, so no link-local address appears when the link comes
    // up. /proc/sys/net is that of the opener's namespace: the sandbox's.
    std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", iface.name), "1")
        .map_err(|e| format!("turning IPv6 off on {}: {e}", iface.name))?;
    let fd = socket::socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| format!("socket: {e}"))?;
    let mut req = ifreq(&iface.name)?;
    req.ifr_ifru.ifru_addr = sockaddr(iface.addr);
    ioctl(&fd, libc::SIOCSIFADDR, &mut req, "setting the address")?;
    let mask = u32::MAX.checked_shl(32 - u32::from(iface.prefix)).unwrap_or(0);
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
    ioctl(&fd, libc::SIOCSIFNETMASK, &mut req, "setting the netmask")?;
    ioctl(&fd, libc::SIOCGIFFLAGS, &mut req, "reading the link flags")?;
    // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(&fd, libc::SIOCSIFFLAGS, &mut req, "bringing the link up")?;
    let any = sockaddr(Ipv4Addr::UNSPECIFIED);
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: any,
        rt_gateway: sockaddr(iface.gateway),
        rt_genmask: any,
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(&fd, libc::SIOCADDRT, &mut route, "adding the default route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-too-long-for-it").is_err());
        assert!(ifreq("et\0h").is_err());
    }

    #[test]
    fn rtentry_has_the_kernel_layout() {
        // 64-bit glibc: 120 bytes, rt_dev at 88 (checked against <net/route.h>).
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_dev), 88);
    }
}
