//! Reading the server name (SNI) out of a TLS ClientHello that a program
//! sends through a `CONNECT` tunnel, without terminating TLS. The parsing
//! is rustls' own ([`rustls::server::Acceptor`]), on a copy of the bytes.

use rustls::server::Acceptor;

/// Most bytes read while waiting for a whole ClientHello.
pub(crate) const MAX_HELLO: usize = 16 << 10;

/// What the first bytes of a tunnel are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hello {
    /// Not TLS at all: the tunnel carries another protocol.
    NotTls,
    /// A whole ClientHello, with the name it asks for (if any).
    Tls(Option<String>),
    /// The start of a ClientHello: read more.
    Incomplete,
    /// TLS that does not parse, or a ClientHello larger than [`MAX_HELLO`].
    Malformed,
}

/// Looks at the bytes a client sent first.
pub(crate) fn inspect(buf: &[u8]) -> Hello {
    if buf.is_empty() {
        return Hello::Incomplete;
    }
    // A TLS record of type handshake (22), version 3.x.
    if buf[0] != 0x16 || buf.get(1).is_some_and(|&v| v != 3) {
        return Hello::NotTls;
    }
    let mut acceptor = Acceptor::default();
    let mut rest = buf;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Hello::Tls(accepted.client_hello().server_name().map(str::to_ascii_lowercase)),
        Ok(None) if buf.len() < MAX_HELLO => Hello::Incomplete,
        Ok(None) | Err(_) => Hello::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn client_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), server).expect("client");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write");
        }
        out
    }

    #[test]
    fn reads_the_name_of_a_real_client_hello() {
        let hello = client_hello("API.example.com");
        assert_eq!(inspect(&hello), Hello::Tls(Some("api.example.com".into())));
        // Split anywhere, the first part asks for more.
        for cut in [1, 5, 6, hello.len() / 2, hello.len() - 1] {
            assert_eq!(inspect(&hello[..cut]), Hello::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn reads_the_name_of_an_openssl_client_hello() {
        // Captured from `curl https://web.test:18443/` (OpenSSL 3, Debian 12).
        let hello = include_bytes!("../tests/data/curl-openssl-hello.bin");
        assert_eq!(inspect(hello), Hello::Tls(Some("web.test".into())));
    }

    #[test]
    fn other_protocols_are_not_tls() {
        assert_eq!(inspect(b"SSH-2.0-OpenSSH_9.2\r\n"), Hello::NotTls);
        assert_eq!(inspect(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(inspect(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]), Hello::Malformed);
    }

    proptest! {
        #[test]
        fn never_panics(tail in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut buf = vec![0x16, 0x03];
            buf.extend_from_slice(&tail);
            let _ = inspect(&buf);
            let _ = inspect(&tail);
        }
    }
}
