//! `http://HOST.reins.internal/…`: the sandbox speaks plain HTTP to the
//! proxy, which forwards over TLS to `https://HOST/…` (port 443, or the
//! port given when it is not 80) with the sandbox's credential for HOST in
//! its header. TLS is end to end between the proxy and HOST, so nothing is
//! intercepted, and the secret never enters the sandbox.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;

use crate::dial::{event, finish, Host, Opened};
use crate::http::{fail, origin_form, refusal, send, text, Body};
use crate::SandboxCtx;

pub(crate) async fn forward(sb: Arc<SandboxCtx>, req: Request<Incoming>, host: String, port: u16) -> Response<Body> {
    let port = if port == 80 { 443 } else { port };
    let settings = sb.current();
    let Some(cred) = settings.credentials.iter().find(|c| c.applies_to(&host, port)) else {
        let msg = format!("refused: no credential of this sandbox is bound to `{host}:{port}`");
        sb.record(event("credential", &host, port, None, Err(&msg)));
        return text(StatusCode::FORBIDDEN, &msg);
    };
    let Opened { stream: up, event: ev, started } = match sb.open("credential", &Host::Name(host.clone()), port).await {
        Ok(up) => up,
        Err(r) => return refusal(&r),
    };
    let Ok(name) = ServerName::try_from(host.clone()) else {
        return text(StatusCode::BAD_REQUEST, "not a TLS server name");
    };
    let tls = match sb.egress.tls.connect(name, up).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("TLS with {host}: {e}");
            sb.record(finish(fail(ev, &msg), started, 0, 0));
            return text(StatusCode::BAD_GATEWAY, &msg);
        }
    };
    let authority = if port == 443 { host.clone() } else { format!("{host}:{port}") };
    let mut req = match origin_form(req, &authority) {
        Ok(r) => r,
        Err(m) => return text(StatusCode::BAD_REQUEST, &m),
    };
    let (Ok(hname), Ok(mut value)) =
        (HeaderName::from_bytes(cred.header_name.as_bytes()), HeaderValue::from_str(&cred.header_value))
    else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("credential `{}` has an invalid header", cred.name));
    };
    value.set_sensitive(true);
    req.headers_mut().insert(hname, value);
    send(sb, ev, started, tls, req).await
}
