//! Ingress on the node: requests for a port of a sandbox, connected from
//! the host to the sandbox's own loopback through a socket made inside its
//! network namespace. An HTTP request is relayed as one (streamed both
//! ways); a tunnel (for WebSocket and other upgrades) is a duplex byte
//! stream: the request body goes to the port, the port's bytes come back as
//! the response body, and the control plane speaks HTTP on it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, StatusCode, Uri};
use axum::response::Response;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use reins_api::node::{PORT_PATH_HEADER, PORT_TUNNEL_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ApiError;
use crate::state::Node;

const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

async fn connect(node: &Node, id: &str, port: u16) -> Result<TcpStream, ApiError> {
    let sandbox = node.get(id).await?;
    let sock = sandbox.tcp_socket(false).await?;
    drop(sandbox);
    let s = sock.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "port_closed",
            format!("nothing answers on port {port} in the sandbox: {e}"),
        )
    })?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// `ANY /node/v1/sandboxes/{id}/ports/{port}`
pub async fn forward(
    State(node): State<Arc<Node>>,
    Path((id, port)): Path<(String, u16)>,
    req: Request,
) -> Result<Response, ApiError> {
    if port == 0 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "port must be 1 to 65535"));
    }
    let stream = connect(&node, &id, port).await?;
    // Open traffic keeps the sandbox from hibernating.
    let hold = node.hold(&id);
    if req.headers().contains_key(PORT_TUNNEL_HEADER) {
        return Ok(tunnel(stream, req.into_body(), hold));
    }
    relay(stream, req).await
}

fn tunnel(stream: TcpStream, body: Body, hold: Option<crate::state::Hold>) -> Response {
    let (mut rd, mut wr) = stream.into_split();
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        while let Some(Ok(chunk)) = data.next().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let out = async_stream_bytes(move |tx| async move {
        let _hold = hold;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(Ok(axum::body::Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Response::new(out)
}

/// A body fed by `producer` through a small channel.
fn async_stream_bytes<F, Fut>(producer: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(tx));
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn relay(stream: TcpStream, req: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let path = parts.headers.get(PORT_PATH_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("/").to_owned();
    parts.uri = path.parse::<Uri>().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid", "bad path"))?;
    parts.version = axum::http::Version::HTTP_11;
    for h in HOP_BY_HOP.iter().chain(&[PORT_PATH_HEADER, PORT_TUNNEL_HEADER]) {
        parts.headers.remove(HeaderName::from_static(h));
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "port_error", e.to_string()))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(axum::http::Request::from_parts(parts, body))
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "port_error", format!("the sandbox's server: {e}")))?;
    Ok(resp.map(Body::new))
}
