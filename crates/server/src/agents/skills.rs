//! Skill bundles: a tar archive of a folder with a `SKILL.md` whose front
//! matter names the skill and describes it. Bundles are content-addressed
//! in the blob store (`DATA/blobs/skills/SHA256.tar`) and copied to a node
//! the first time one of its sandboxes mounts them.

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::error::ApiError;
use crate::state::App;

/// Largest bundle.
pub const MAX_BUNDLE: usize = 64 << 20;

/// What a bundle's `SKILL.md` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillMeta {
    pub name: String,
    pub description: String,
}

/// Reads `SKILL.md` (at the archive's top) from a bundle and checks it.
pub fn inspect(bundle: &[u8]) -> Result<SkillMeta, String> {
    let mut ar = tar::Archive::new(bundle);
    let entries = ar.entries().map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("not a valid tar archive: {e}"))?;
        let path = entry.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
        if path.trim_start_matches("./") == "SKILL.md" && entry.header().entry_type().is_file() {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text)
                .map_err(|_| "SKILL.md is not UTF-8 text".to_owned())?;
            return front_matter(&text);
        }
    }
    Err("the bundle has no SKILL.md at its top".into())
}

/// `name` and `description` from the `---` front matter.
pub fn front_matter(text: &str) -> Result<SkillMeta, String> {
    let body = text.strip_prefix("---").ok_or("SKILL.md must start with `---` front matter")?;
    let end = body.find("\n---").ok_or("SKILL.md's front matter has no closing `---`")?;
    let (mut name, mut description) = (None, None);
    for line in body[..end].lines() {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim().trim_matches('"').trim_matches('\'').to_owned();
            match k.trim() {
                "name" => name = Some(v),
                "description" => description = Some(v),
                _ => {}
            }
        }
    }
    let name = name
        .filter(|n| reins_types::is_plain_name(n))
        .ok_or("the front matter needs a `name` (letters, digits, `.`, `_`, `-`)")?;
    let description = description
        .filter(|d| !d.is_empty() && d.len() <= 1024)
        .ok_or("the front matter needs a `description` of 1 to 1024 characters")?;
    Ok(SkillMeta { name, description })
}

pub fn blob_path(app: &App, sha: &str) -> PathBuf {
    app.blob_dir.join("skills").join(format!("{sha}.tar"))
}

/// Writes a bundle to the blob store (content-addressed: an existing one is kept).
pub async fn store_blob(app: &App, sha: &str, bundle: &[u8]) -> Result<(), ApiError> {
    let path = blob_path(app, sha);
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Ok(());
    }
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    tokio::fs::create_dir_all(&dir).await.map_err(ApiError::internal)?;
    let tmp = dir.join(format!(".{sha}.{}", rand::random::<u64>()));
    tokio::fs::write(&tmp, bundle).await.map_err(ApiError::internal)?;
    tokio::fs::rename(&tmp, &path).await.map_err(ApiError::internal)
}

/// Copies bundle `sha` to `node` unless it has it.
pub async fn ensure_on_node(app: &App, node: &str, sha: &str) -> Result<(), ApiError> {
    let conn = app.nodes.get(node)?;
    match conn.send(Method::GET, &format!("/skills/{sha}"), Body::empty(), false).await {
        Ok(_) => return Ok(()),
        Err(e) if e.status == StatusCode::NOT_FOUND => {}
        Err(e) => return Err(e),
    }
    let bytes = tokio::fs::read(blob_path(app, sha)).await.map_err(ApiError::internal)?;
    conn.send(Method::PUT, &format!("/skills/{sha}"), Body::from(bytes), false).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_names_and_describes_the_skill() {
        let ok = front_matter("---\nname: pdf-tools\ndescription: \"Read PDFs\"\n---\n# Use\n").expect("ok");
        assert_eq!(ok, SkillMeta { name: "pdf-tools".into(), description: "Read PDFs".into() });
        for bad in
            ["no front matter", "---\nname: x\n", "---\ndescription: d\n---\n", "---\nname: a b\ndescription: d\n---\n"]
        {
            assert!(front_matter(bad).is_err(), "{bad}");
        }
    }
}
