//! The Connect protocol as E2B's envd speaks it: JSON messages, unary
//! (bare JSON) and streaming (5-byte envelopes: a flags byte, a big-endian
//! length, the payload; a final end-of-stream envelope carries `{}` or an
//! error). Pure functions: the envelope decoder faces the network and is
//! property-tested.

use serde_json::{json, Value};

/// Flag of a compressed message (never used by the SDKs; refused).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag of the end-of-stream message.
pub const FLAG_END: u8 = 0x02;
/// Largest message accepted.
pub const MAX_MESSAGE: usize = 16 << 20;

/// A Connect error code and its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::PermissionDenied => "permission_denied",
            Self::ResourceExhausted => "resource_exhausted",
            Self::FailedPrecondition => "failed_precondition",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Unauthenticated => "unauthenticated",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::Internal => 500,
            Self::InvalidArgument | Self::FailedPrecondition => 400,
            Self::NotFound => 404,
            Self::AlreadyExists => 409,
            Self::PermissionDenied => 403,
            Self::ResourceExhausted => 429,
            Self::Unimplemented => 501,
            Self::Unavailable => 503,
            Self::Unauthenticated => 401,
        }
    }
}

/// An error to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The JSON body of a unary error, and of a stream's end error.
    pub fn json(&self) -> Value {
        json!({"code": self.code.as_str(), "message": self.message})
    }
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub payload: Vec<u8>,
}

/// Encodes a message envelope.
pub fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The end-of-stream envelope: `{}`, or the error.
pub fn end_stream(error: Option<&ConnectError>) -> Vec<u8> {
    let body = match error {
        None => json!({}),
        Some(e) => json!({"error": e.json()}),
    };
    envelope(FLAG_END, body.to_string().as_bytes())
}

/// Splits `buf` into whole envelopes; the rest (an incomplete one) stays in `buf`.
pub fn decode(buf: &mut Vec<u8>) -> Result<Vec<Envelope>, ConnectError> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 5 {
        let flags = buf[at];
        let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!("a message of {len} bytes is over the {MAX_MESSAGE}-byte limit"),
            ));
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(ConnectError::new(Code::Unimplemented, "compressed messages are not supported; send identity"));
        }
        if flags & !(FLAG_COMPRESSED | FLAG_END) != 0 {
            return Err(ConnectError::new(Code::InvalidArgument, format!("unknown envelope flags {flags:#04x}")));
        }
        if buf.len() - at - 5 < len {
            break;
        }
        out.push(Envelope { flags, payload: buf[at + 5..at + 5 + len].to_vec() });
        at += 5 + len;
    }
    buf.drain(..at);
    Ok(out)
}

/// The single request message of a server-streaming call, from its whole body.
pub fn single_message(body: &[u8]) -> Result<Vec<u8>, ConnectError> {
    let mut buf = body.to_vec();
    let mut envs = decode(&mut buf)?;
    if !buf.is_empty() {
        return Err(ConnectError::new(Code::InvalidArgument, "the request ends inside an envelope"));
    }
    match envs.len() {
        1 if envs[0].flags & FLAG_END == 0 => Ok(envs.remove(0).payload),
        0 => Err(ConnectError::new(Code::InvalidArgument, "the request has no message")),
        _ => Err(ConnectError::new(Code::InvalidArgument, "a server-streaming request has exactly one message")),
    }
}

/// Parses a JSON message, with a Connect error on failure.
pub fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ConnectError> {
    serde_json::from_slice(payload)
        .map_err(|e| ConnectError::new(Code::InvalidArgument, format!("invalid JSON message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envelopes_round_trip_in_any_split() {
        let mut bytes = envelope(0, br#"{"a":1}"#);
        bytes.extend(end_stream(None));
        for cut in 0..bytes.len() {
            let mut buf = bytes[..cut].to_vec();
            let mut got = decode(&mut buf).expect("decode");
            buf.extend_from_slice(&bytes[cut..]);
            got.extend(decode(&mut buf).expect("decode"));
            assert!(buf.is_empty());
            assert_eq!(
                got,
                vec![
                    Envelope { flags: 0, payload: br#"{"a":1}"#.to_vec() },
                    Envelope { flags: FLAG_END, payload: b"{}".to_vec() }
                ]
            );
        }
    }

    #[test]
    fn bad_frames_are_refused_with_codes() {
        let mut huge = vec![0, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decode(&mut huge).expect_err("huge").code, Code::ResourceExhausted);
        let mut compressed = envelope(FLAG_COMPRESSED, b"x");
        assert_eq!(decode(&mut compressed).expect_err("gzip").code, Code::Unimplemented);
        let mut odd = envelope(0x80, b"x");
        assert_eq!(decode(&mut odd).expect_err("flags").code, Code::InvalidArgument);
        assert!(single_message(&envelope(0, b"{}")[..4]).is_err());
        assert!(single_message(b"").is_err());
        let mut two = envelope(0, b"{}");
        two.extend(envelope(0, b"{}"));
        assert!(single_message(&two).is_err());
        assert_eq!(single_message(&envelope(0, b"{}")).expect("one"), b"{}");
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_envelopes_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = bytes.clone();
            if let Ok(envs) = decode(&mut buf) {
                let mut again: Vec<u8> = envs.iter().flat_map(|e| envelope(e.flags, &e.payload)).collect();
                again.extend_from_slice(&buf);
                prop_assert_eq!(again, bytes);
            }
        }
    }
}
