//! envd's files: the `filesystem.Filesystem` service (Stat, ListDir,
//! MakeDir, Move, Remove) and `GET/POST /files`, over the node's file routes.
//! Relative paths start at the user's home, as envd's do.

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use reins_api::node::FileQuery;
use reins_api::v1::{FileEntry, FileKind};
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{self, Code, ConnectError};
use super::envd::{from_api, Ctx};

fn home(root: bool) -> &'static str {
    if root {
        "/root"
    } else {
        "/home/user"
    }
}

/// An absolute path: relative ones start at the user's home.
pub(super) fn absolute(path: &str, root: bool) -> Result<String, ConnectError> {
    if path.contains('\0') || path.len() > 4096 {
        return Err(ConnectError::new(Code::InvalidArgument, "a path has at most 4096 bytes and no NUL"));
    }
    Ok(match path {
        "" | "~" => home(root).to_owned(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("{}/{}", home(root), p.trim_start_matches("~/")),
    })
}

fn permissions(kind: FileKind, mode: u32) -> String {
    let t = match kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        _ => '-',
    };
    let bits: String = (0..9).map(|i| if mode & (1 << (8 - i)) != 0 { ['r', 'w', 'x'][i % 3] } else { '-' }).collect();
    format!("{t}{bits}")
}

/// envd's `EntryInfo` in JSON.
pub fn entry_info(e: &FileEntry, owner: &str) -> Value {
    let kind = match e.kind {
        FileKind::Dir => "FILE_TYPE_DIRECTORY",
        FileKind::File | FileKind::Symlink => "FILE_TYPE_FILE",
        FileKind::Other => "FILE_TYPE_UNSPECIFIED",
    };
    let mut v = json!({
        "name": e.name, "type": kind, "path": e.path, "size": e.size.to_string(), "mode": e.mode,
        "permissions": permissions(e.kind, e.mode), "owner": owner, "group": owner,
        "modifiedTime": super::rest::rfc3339(e.mtime_ms), "isSymlink": e.kind == FileKind::Symlink,
    });
    if let Some(t) = &e.symlink_target {
        v["symlinkTarget"] = json!(t);
    }
    v
}

#[derive(Debug, Deserialize)]
struct PathRequest {
    path: String,
    #[serde(default)]
    depth: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct MoveRequest {
    source: String,
    destination: String,
}

impl Ctx {
    fn owner(&self) -> &'static str {
        if self.user_root {
            "root"
        } else {
            "user"
        }
    }

    fn query(&self, path: &str) -> FileQuery {
        FileQuery { path: path.to_owned(), root: self.user_root, ..Default::default() }
    }

    /// The node's path of file route `route` of this sandbox, with `q`.
    pub(super) fn files_path(&self, route: &str, q: &FileQuery) -> Result<String, ConnectError> {
        let qs = serde_urlencoded::to_string(q).map_err(|e| ConnectError::new(Code::Internal, e.to_string()))?;
        Ok(format!("/sandboxes/{}/{route}?{qs}", self.id))
    }

    async fn node_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        route: &str,
        q: &FileQuery,
    ) -> Result<T, ConnectError> {
        self.conn()?.call(method, &self.files_path(route, q)?, None::<&()>).await.map_err(from_api)
    }

    async fn node_do(&self, route: &str, q: &FileQuery) -> Result<(), ConnectError> {
        self.conn()?.call_empty(Method::POST, &self.files_path(route, q)?, None::<&()>).await.map_err(from_api)
    }

    async fn stat_entry(&self, path: &str) -> Result<FileEntry, ConnectError> {
        self.node_json(Method::GET, "files/stat", &self.query(path)).await
    }

    pub async fn filesystem(&self, method: &str, body: &[u8]) -> Result<Value, ConnectError> {
        match method {
            "Stat" => {
                let r: PathRequest = connect::parse(body)?;
                let e = self.stat_entry(&absolute(&r.path, self.user_root)?).await?;
                Ok(json!({"entry": entry_info(&e, self.owner())}))
            }
            "ListDir" => {
                let r: PathRequest = connect::parse(body)?;
                let q = FileQuery {
                    depth: Some(r.depth.unwrap_or(1).clamp(1, 16)),
                    ..self.query(&absolute(&r.path, self.user_root)?)
                };
                let entries: Vec<FileEntry> = self.node_json(Method::GET, "files/list", &q).await?;
                Ok(json!({"entries": entries.iter().map(|e| entry_info(e, self.owner())).collect::<Vec<_>>()}))
            }
            "MakeDir" => {
                let r: PathRequest = connect::parse(body)?;
                let path = absolute(&r.path, self.user_root)?;
                if self.stat_entry(&path).await.is_ok() {
                    return Err(ConnectError::new(Code::AlreadyExists, format!("{path} already exists")));
                }
                self.node_do("files/mkdir", &FileQuery { parents: Some(true), ..self.query(&path) }).await?;
                Ok(json!({"entry": entry_info(&self.stat_entry(&path).await?, self.owner())}))
            }
            "Move" => {
                let r: MoveRequest = connect::parse(body)?;
                let (from, to) = (absolute(&r.source, self.user_root)?, absolute(&r.destination, self.user_root)?);
                self.node_do("files/move", &FileQuery { to: Some(to.clone()), ..self.query(&from) }).await?;
                Ok(json!({"entry": entry_info(&self.stat_entry(&to).await?, self.owner())}))
            }
            "Remove" => {
                let r: PathRequest = connect::parse(body)?;
                let path = absolute(&r.path, self.user_root)?;
                self.node_do("files/remove", &FileQuery { recursive: Some(true), ..self.query(&path) }).await?;
                Ok(json!({}))
            }
            "CreateWatcher" | "GetWatcherEvents" | "RemoveWatcher" => self.watchers(method, body).await,
            other => Err(ConnectError::new(
                Code::Unimplemented,
                format!("filesystem.Filesystem/{other} is not served by Reins yet"),
            )),
        }
    }
}

/// envd's plain-HTTP error: `{"code": <status>, "message": …}`.
fn http_error(e: &ConnectError) -> Response {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({"code": status.as_u16(), "message": e.message}))).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
}

impl Ctx {
    fn with_username(&self, q: &FilesQuery) -> Ctx {
        Ctx { user_root: q.username.as_deref().map_or(self.user_root, |u| u == "root"), ..self.clone() }
    }

    /// `GET /files?path=…`: the file's bytes.
    pub async fn read(&self, q: FilesQuery) -> Response {
        let ctx = self.with_username(&q);
        let path = match absolute(q.path.as_deref().unwrap_or_default(), ctx.user_root) {
            Ok(p) => p,
            Err(e) => return http_error(&e),
        };
        let (conn, route) = match ctx.conn().and_then(|c| Ok((c, ctx.files_path("files", &ctx.query(&path))?))) {
            Ok(x) => x,
            Err(e) => return http_error(&e),
        };
        match conn.send(Method::GET, &route, Body::empty(), false).await {
            Ok(resp) => Response::builder()
                .header("content-type", "application/octet-stream")
                .body(Body::new(resp.into_body()))
                .unwrap_or_default(),
            Err(e) => http_error(&from_api(e)),
        }
    }

    /// `POST /files`: multipart parts named `file` whose filename is the
    /// destination (or `path` for one), or a raw body with `path`.
    pub async fn write(&self, q: FilesQuery, headers: &HeaderMap, body: bytes::Bytes) -> Response {
        let ctx = self.with_username(&q);
        let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let mut files: Vec<(String, bytes::Bytes)> = Vec::new();
        if ct.starts_with("multipart/form-data") {
            let Some(boundary) = multer::parse_boundary(&ct).ok() else {
                return http_error(&ConnectError::new(Code::InvalidArgument, "multipart body without a boundary"));
            };
            let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
            let mut form = multer::Multipart::new(stream, boundary);
            loop {
                match form.next_field().await {
                    Ok(Some(field)) => {
                        let name = field.file_name().map(str::to_owned).unwrap_or_default();
                        match field.bytes().await {
                            Ok(data) => files.push((name, data)),
                            Err(e) => {
                                return http_error(&ConnectError::new(Code::InvalidArgument, format!("multipart: {e}")))
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return http_error(&ConnectError::new(Code::InvalidArgument, format!("multipart: {e}"))),
                }
            }
            if let (Some(p), 1) = (&q.path, files.len()) {
                files[0].0 = p.clone();
            }
        } else {
            let Some(p) = &q.path else {
                return http_error(&ConnectError::new(Code::InvalidArgument, "a raw upload needs ?path="));
            };
            files.push((p.clone(), body));
        }
        if files.is_empty() {
            return http_error(&ConnectError::new(Code::InvalidArgument, "no file in the request"));
        }
        let mut out = Vec::new();
        for (name, data) in files {
            match ctx.put_file(&name, data).await {
                Ok(e) => out.push(json!({"path": e.path, "name": e.name, "type": "file"})),
                Err(e) => return http_error(&e),
            }
        }
        axum::Json(Value::Array(out)).into_response()
    }

    async fn put_file(&self, name: &str, data: bytes::Bytes) -> Result<FileEntry, ConnectError> {
        let path = absolute(name, self.user_root)?;
        if let Some((dir, _)) = path.rsplit_once('/').filter(|(d, _)| !d.is_empty()) {
            if self.stat_entry(dir).await.is_err() {
                self.node_do("files/mkdir", &FileQuery { parents: Some(true), ..self.query(dir) }).await?;
            }
        }
        let route = self.files_path("files", &self.query(&path))?;
        let resp = self.conn()?.send(Method::PUT, &route, Body::from(data), false).await.map_err(from_api)?;
        let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
        serde_json::from_slice(&bytes).map_err(|e| ConnectError::new(Code::Internal, format!("node answer: {e}")))
    }
}
