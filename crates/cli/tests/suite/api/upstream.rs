//! The tests' "internet": HTTP and HTTPS servers on the host's loopback that
//! record every request head they get and answer `upstream-ok PATH`.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A running upstream.
pub struct Upstream {
    pub port: u16,
    /// Request heads received, in order.
    pub heads: Arc<Mutex<Vec<String>>>,
    /// The CA PEM clients must trust (HTTPS only).
    pub ca_pem: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Plain HTTP on 127.0.0.1.
    pub async fn http() -> Self {
        Self::start(None).await
    }

    /// HTTPS on 127.0.0.1 with a certificate for `names`, signed by a fresh test CA.
    pub async fn https(names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let (id, ca) = reins_tls::self_signed_ca(&names).expect("test CA");
        let mut cfg = reins_tls::api_server(&id).expect("server config");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start(Some((tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), ca))).await
    }

    async fn start(tls: Option<(tokio_rustls::TlsAcceptor, String)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let ca_pem = tls.as_ref().map(|(_, ca)| ca.clone());
        let acceptor = tls.map(|(a, _)| a);
        let recorded = Arc::clone(&heads);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, recorded) = (acceptor.clone(), Arc::clone(&recorded));
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                answer(tls, &recorded).await;
                            }
                        }
                        None => answer(tcp, &recorded).await,
                    }
                });
            }
        });
        Self { port, heads, ca_pem, task }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads").clone()
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, recorded: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
    recorded.lock().expect("heads").push(head);
    let body = format!("upstream-ok {path}\n");
    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}
