//! The HTTP side of the proxy: `CONNECT` tunnels (with the SNI check),
//! absolute-form plain-HTTP requests (with the Host check), and requests to
//! `HOST.reins.internal`, forwarded over TLS with a credential added.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use reins_types::net::normalize_domain;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::count::{Counted, Traffic};
use crate::dial::{event, finish, Host, Opened, Refusal};
use crate::sni::{inspect, Hello};
use crate::{SandboxCtx, CREDENTIAL_SUFFIX};

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

pub(crate) async fn serve(sb: Arc<SandboxCtx>, stream: TcpStream) {
    let svc = hyper::service::service_fn(move |req| {
        let sb = Arc::clone(&sb);
        async move { Ok::<_, Infallible>(handle(sb, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .writev(true)
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
}

pub(crate) fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("reins egress proxy: {msg}\n"))).map_err(|never| match never {}).boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub(crate) fn refusal(r: &Refusal) -> Response<Body> {
    match r {
        Refusal::Denied(d) => text(StatusCode::FORBIDDEN, &format!("refused: {d}")),
        Refusal::Failed(m) => text(StatusCode::BAD_GATEWAY, m),
    }
}

async fn handle(sb: Arc<SandboxCtx>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect(sb, req).await;
    }
    forward(sb, req).await
}

/// The destination of a request: host and port, from the URI's authority.
/// A malformed one is a 400 with the message.
fn target(auth: &Authority, default_port: Option<u16>) -> Result<(Host, u16), String> {
    let port = auth.port_u16().or(default_port).ok_or("a port is required")?;
    let host = Host::parse(auth.host()).ok_or_else(|| format!("`{}` is not a host name or address", auth.host()))?;
    Ok((host, port))
}

async fn connect(sb: Arc<SandboxCtx>, req: Request<Incoming>) -> Response<Body> {
    let Some(auth) = req.uri().authority().cloned() else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let (host, port) = match target(&auth, None) {
        Ok(t) => t,
        Err(m) => return text(StatusCode::BAD_REQUEST, &m),
    };
    if matches!(&host, Host::Name(n) if n.ends_with(CREDENTIAL_SUFFIX)) {
        return text(StatusCode::BAD_REQUEST, "credential hosts take plain requests: http://HOST.reins.internal/…");
    }
    let up = match sb.open("connect", &host, port).await {
        Ok(up) => up,
        Err(r) => return refusal(&r),
    };
    tokio::spawn(async move {
        // The proxy serves plain TCP, so the upgraded connection is that socket again.
        match hyper::upgrade::on(req).await.map(|u| u.downcast::<TokioIo<TcpStream>>()) {
            Ok(Ok(parts)) => {
                let first = parts.read_buf.to_vec();
                tunnel(&sb, &host, parts.io.into_inner(), first, up).await;
            }
            Ok(Err(_)) => sb.record(finish(fail(up.event, "upgrade: not a TCP connection"), up.started, 0, 0)),
            Err(e) => sb.record(finish(fail(up.event, &format!("upgrade: {e}")), up.started, 0, 0)),
        }
    });
    Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed())
}

pub(crate) fn fail(mut ev: reins_types::net::NetEvent, reason: &str) -> reins_types::net::NetEvent {
    ev.allowed = false;
    ev.reason = Some(reason.to_owned());
    ev
}

/// Relays an allowed tunnel, after checking what the client says first:
/// a TLS ClientHello must name the host the tunnel was asked for.
/// `first` holds what the client already sent.
pub(crate) async fn tunnel(sb: &SandboxCtx, host: &Host, mut client: TcpStream, mut first: Vec<u8>, up: Opened) {
    let Opened { stream: mut up, event: ev, started } = up;
    let mut hello = inspect(&first);
    while hello == Hello::Incomplete {
        let mut chunk = [0u8; 4096];
        tokio::select! {
            r = client.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return sb.record(finish(ev, started, 0, 0)),
                Ok(n) => first.extend_from_slice(&chunk[..n]),
            },
            // The server speaks first (SSH banner, SMTP, databases): not TLS.
            _ = up.readable(), if first.is_empty() => { hello = Hello::NotTls; break }
            _ = tokio::time::sleep(Duration::from_secs(10)) => { hello = Hello::Malformed; break }
        }
        hello = inspect(&first);
    }
    if let Err(why) = check_hello(sb, &hello, host, ev.port) {
        return sb.record(finish(fail(ev, &why), started, 0, 0));
    }
    if up.write_all(&first).await.is_err() {
        return sb.record(finish(ev, started, 0, 0));
    }
    let (c2u, u2c) = crate::relay::relay(&client, &up).await;
    sb.record(finish(ev, started, first.len() as u64 + c2u, u2c));
}

fn check_hello(sb: &SandboxCtx, hello: &Hello, host: &Host, port: u16) -> Result<(), String> {
    match (hello, host) {
        (Hello::Malformed, _) => Err("no complete TLS ClientHello or other first message within limits".into()),
        (Hello::Tls(Some(sni)), Host::Name(name)) if sni != name => {
            Err(format!("TLS server name `{sni}` does not match the tunnel's host `{name}`"))
        }
        // A tunnel to an address: the name TLS asks for must be allowed itself.
        (Hello::Tls(Some(sni)), Host::Ip(_)) => sb.current().policy.check_name(sni, port).map_err(|d| d.to_string()),
        _ => Ok(()),
    }
}

/// True when a `Host` header names the same host and port as the URI.
fn same_authority(host_header: &HeaderValue, auth: &Authority, default_port: u16) -> bool {
    let Ok(h) = host_header.to_str() else { return false };
    let Ok(h) = h.parse::<Authority>() else { return false };
    h.host().eq_ignore_ascii_case(auth.host())
        && h.port_u16().unwrap_or(default_port) == auth.port_u16().unwrap_or(default_port)
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// The request as the destination gets it: origin-form, no hop-by-hop
/// headers, `Host` as given (a 400 with the message when it is not a valid header).
pub(crate) fn origin_form(mut req: Request<Incoming>, host_header: &str) -> Result<Request<Incoming>, String> {
    let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(pq);
    let named: Vec<HeaderName> = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let headers = req.headers_mut();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    let host = HeaderValue::from_str(host_header).map_err(|_| format!("`{host_header}` is not a valid Host header"))?;
    headers.insert(header::HOST, host);
    Ok(req)
}

async fn forward(sb: Arc<SandboxCtx>, req: Request<Incoming>) -> Response<Body> {
    let uri = req.uri().clone();
    match uri.scheme_str() {
        Some("http") => {}
        None => {
            return text(
                StatusCode::BAD_REQUEST,
                "this is the sandbox's egress proxy: send http://host/path requests or CONNECT host:port",
            )
        }
        Some(other) => return text(StatusCode::BAD_REQUEST, &format!("`{other}://` goes through CONNECT")),
    }
    let Some(auth) = uri.authority().cloned() else { return text(StatusCode::BAD_REQUEST, "no host in the URI") };
    let (host, port) = match target(&auth, Some(80)) {
        Ok(t) => t,
        Err(m) => return text(StatusCode::BAD_REQUEST, &m),
    };
    if let Some(h) = req.headers().get(header::HOST) {
        if !same_authority(h, &auth, 80) {
            let msg =
                format!("refused: the Host header `{}` does not match `{auth}`", String::from_utf8_lossy(h.as_bytes()));
            sb.record(event("http", &host.to_string(), port, None, Err(&msg)));
            return text(StatusCode::FORBIDDEN, &msg);
        }
    }
    if let Host::Name(name) = &host {
        if let Some(real) = name.strip_suffix(CREDENTIAL_SUFFIX) {
            return match normalize_domain(real) {
                Some(real) => crate::http_cred::forward(sb, req, real, port).await,
                None => text(StatusCode::BAD_REQUEST, "no host before .reins.internal"),
            };
        }
    }
    let up = match sb.open("http", &host, port).await {
        Ok(up) => up,
        Err(r) => return refusal(&r),
    };
    let req = match origin_form(req, auth.as_str()) {
        Ok(r) => r,
        Err(m) => return text(StatusCode::BAD_REQUEST, &m),
    };
    send(sb, up.event, up.started, up.stream, req).await
}

/// Sends `req` on a new HTTP/1.1 connection over `io` and relays the answer;
/// the event is recorded when the connection ends.
pub(crate) async fn send<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    sb: Arc<SandboxCtx>,
    ev: reins_types::net::NetEvent,
    started: Instant,
    io: T,
    req: Request<Incoming>,
) -> Response<Body> {
    let traffic = Arc::new(Traffic::default());
    let io = Counted { inner: io, traffic: Arc::clone(&traffic) };
    // Large fixed reads: a download is relayed in few, big pieces.
    let handshake =
        hyper::client::conn::http1::Builder::new().read_buf_exact_size(Some(256 << 10)).handshake(TokioIo::new(io));
    let (mut sender, conn) = match handshake.await {
        Ok(ok) => ok,
        Err(e) => {
            let msg = format!("talking to {}: {e}", ev.host);
            sb.record(finish(fail(ev, &msg), started, 0, 0));
            return text(StatusCode::BAD_GATEWAY, &msg);
        }
    };
    let host = ev.host.clone();
    let recorder = Arc::clone(&sb);
    tokio::spawn(async move {
        let _ = conn.await;
        let (up, down) = traffic.totals();
        recorder.record(finish(ev, started, up, down));
    });
    match sender.send_request(req).await {
        Ok(resp) => resp.map(BodyExt::boxed),
        Err(e) => text(StatusCode::BAD_GATEWAY, &format!("{host}: {e}")),
    }
}
