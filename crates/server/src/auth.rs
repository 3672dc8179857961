//! API keys on requests: `Authorization: Bearer KEY` or `X-API-Key: KEY`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use reins_store::Principal;

use crate::error::ApiError;
use crate::state::App;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl Auth {
    pub fn tenant(&self) -> &str {
        &self.0.tenant_id
    }

    /// Fails with 403 unless the key is an admin key.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.0.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

fn presented(parts: &Parts) -> Option<&str> {
    let h = &parts.headers;
    if let Some(v) = h.get("authorization").and_then(|v| v.to_str().ok()) {
        return v.strip_prefix("Bearer ").map(str::trim);
    }
    h.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

impl FromRequestParts<Arc<App>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let key = presented(parts).ok_or_else(|| {
            unauthorized("missing API key: send `Authorization: Bearer KEY` (see `reins key create`)")
        })?;
        if key.is_empty() || key.len() > 200 {
            return Err(unauthorized("invalid API key"));
        }
        let hash = reins_store::hash_secret(key);
        if let Some(p) = app.keys.get(&hash) {
            return Ok(Self(p));
        }
        match app.store.authenticate_hash(&hash).await? {
            Some(p) => {
                app.keys.put(hash, p.clone());
                Ok(Self(p))
            }
            None => Err(unauthorized("invalid or revoked API key")),
        }
    }
}

/// How long a checked key is trusted without asking the database again. A
/// key revoked through this process stops working at once; through another
/// control-plane replica, within this time.
const KEY_TTL: Duration = Duration::from_secs(2);
const KEY_CACHE_MAX: usize = 10_000;

/// Recently checked keys, by the hash of their secret.
#[derive(Debug, Default)]
pub struct KeyCache {
    map: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<Principal> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(hash).filter(|(_, at)| at.elapsed() < KEY_TTL).map(|(p, _)| p.clone())
    }

    fn put(&self, hash: String, p: Principal) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= KEY_CACHE_MAX {
            map.retain(|_, (_, at)| at.elapsed() < KEY_TTL);
            if map.len() >= KEY_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(hash, (p, Instant::now()));
    }

    /// Forgets key `key_id` (it was just revoked).
    pub fn forget(&self, key_id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, (p, _)| p.key_id != key_id);
    }
}
