//! SOCKS5 (RFC 1928) for TCP that is not HTTP: no authentication, the
//! `CONNECT` command, IPv4, IPv6 and domain addresses (`socks5h://`: the
//! proxy resolves names). Tunnels get the same checks as HTTP `CONNECT`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dial::{Host, Refusal};
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

/// A `CONNECT` request's destination, or the reply code that refuses it.
type Parsed = Result<(Host, u16), u8>;

/// Reads a `CONNECT` request.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> std::io::Result<Parsed> {
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
    match sb.open("socks5", &host, port).await {
        Err(r) => {
            let code = if matches!(r, Refusal::Denied(_)) { NOT_ALLOWED } else { HOST_UNREACHABLE };
            let _ = reply(&mut s, code).await;
        }
        Ok(up) => {
            if reply(&mut s, SUCCEEDED).await.is_ok() {
                tunnel(&sb, &host, s, Vec::new(), up).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` to the parser (then end of stream); its answer and what it wrote back.
    fn parse(input: &[u8]) -> (Option<Parsed>, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
            theirs.write_all(input).await.expect("write");
            theirs.shutdown().await.expect("shutdown");
            let got = request(&mut ours).await.ok();
            drop(ours);
            let mut written = Vec::new();
            let _ = theirs.read_to_end(&mut written).await;
            (got, written)
        })
    }

    #[test]
    fn connect_requests_parse() {
        let domain = [&[5, 1, 0, 5, 1, 0, 3, 8][..], b"web.test", &[0x1f, 0x90]].concat();
        assert_eq!(parse(&domain).0, Some(Ok((Host::Name("web.test".into()), 8080))));
        assert_eq!(parse(&domain).1, vec![5, 0], "no authentication chosen");
        let v4 = [5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 1, 0, 80];
        assert_eq!(parse(&v4).0, Some(Ok((Host::Ip("10.0.0.1".parse().expect("ip")), 80))));
        let bind = [5, 1, 0, 5, 2, 0, 1, 10, 0, 0, 1, 0, 80];
        assert_eq!(parse(&bind).0, Some(Err(COMMAND_NOT_SUPPORTED)));
        let bad_name = [&[5, 1, 0, 5, 1, 0, 3, 3][..], b"a b", &[0, 80]].concat();
        assert_eq!(parse(&bad_name).0, Some(Err(ADDRESS_NOT_SUPPORTED)));
        let needs_auth = [5, 1, 2];
        assert_eq!(parse(&needs_auth), (Some(Err(GENERAL_FAILURE)), vec![5, NO_METHOD]));
    }

    proptest! {
        #[test]
        fn any_bytes_are_an_answer_or_an_error(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            let (got, _) = parse(&input);
            if let Some(Ok((host, _))) = got {
                prop_assert!(Host::parse(&host.to_string()).is_some());
            }
        }

        #[test]
        fn hosts_never_panic(s in "\\PC{0,80}") {
            let _ = Host::parse(&s);
        }
    }
}
