//! SOCKS5 (RFC 1928) for TCP that is not HTTP: no authentication, the
//! `CONNECT` command, IPv4, IPv6 and domain addresses (`socks5h://`: the
//! proxy resolves names). Tunnels get the same checks as HTTP `CONNECT`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dial::{dial, event, Host, Refusal};
use crate::http::tunnel;
use crate::SandboxCtx;

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_METHOD: u8 = 0xff;

/// Reply codes.
const SUCCEEDED: u8 = 0;
const GENERAL_FAILURE: u8 = 1;
const NOT_ALLOWED: u8 = 2;
const HOST_UNREACHABLE: u8 = 4;
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ADDRESS_NOT_SUPPORTED: u8 = 8;

/// A parsed `CONNECT` request, or the reply code that refuses it.
async fn request(s: &mut TcpStream) -> std::io::Result<Result<(Host, u16), u8>> {
    let mut hello = [0u8; 2];
    s.read_exact(&mut hello).await?;
    let mut methods = vec![0u8; hello[1] as usize];
    s.read_exact(&mut methods).await?;
    if hello[0] != VERSION || !methods.contains(&NO_AUTH) {
        s.write_all(&[VERSION, NO_METHOD]).await?;
        return Ok(Err(GENERAL_FAILURE));
    }
    s.write_all(&[VERSION, NO_AUTH]).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Ok(Err(GENERAL_FAILURE));
    }
    let host = match head[3] {
        1 => {
            let mut a = [0u8; 4];
            s.read_exact(&mut a).await?;
            Some(Host::Ip(IpAddr::V4(Ipv4Addr::from(a))))
        }
        4 => {
            let mut a = [0u8; 16];
            s.read_exact(&mut a).await?;
            Some(Host::Ip(IpAddr::V6(Ipv6Addr::from(a))))
        }
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            let mut name = vec![0u8; len[0] as usize];
            s.read_exact(&mut name).await?;
            std::str::from_utf8(&name).ok().and_then(Host::parse)
        }
        _ => None,
    };
    let mut port = [0u8; 2];
    s.read_exact(&mut port).await?;
    if head[1] != 1 {
        return Ok(Err(COMMAND_NOT_SUPPORTED));
    }
    let Some(host) = host else { return Ok(Err(ADDRESS_NOT_SUPPORTED)) };
    Ok(Ok((host, u16::from_be_bytes(port))))
}

async fn reply(s: &mut TcpStream, code: u8) -> std::io::Result<()> {
    s.write_all(&[VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0]).await
}

pub(crate) async fn serve(sb: Arc<SandboxCtx>, mut s: TcpStream) {
    let parsed = match tokio::time::timeout(Duration::from_secs(30), request(&mut s)).await {
        Ok(Ok(p)) => p,
        _ => return,
    };
    let (host, port) = match parsed {
        Ok(t) => t,
        Err(code) => {
            let _ = reply(&mut s, code).await;
            return;
        }
    };
    let settings = sb.current();
    let started = Instant::now();
    match dial(&sb.egress, &settings.policy, &host, port).await {
        Err(r) => {
            sb.record(event("socks5", &host.to_string(), port, None, Err(&r.to_string())));
            let code = if matches!(r, Refusal::Denied(_)) { NOT_ALLOWED } else { HOST_UNREACHABLE };
            let _ = reply(&mut s, code).await;
        }
        Ok((up, addr)) => {
            if reply(&mut s, SUCCEEDED).await.is_ok() {
                let ev = event("socks5", &host.to_string(), port, Some(addr), Ok(()));
                tunnel(&sb, ev, &host, s, Vec::new(), up, started).await;
            }
        }
    }
}
