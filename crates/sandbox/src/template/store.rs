//! The content-addressed template store.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use reins_types::validate_template_name;
use serde::{Deserialize, Serialize};

use super::{base, digest::tree_digest, oci, tree::copy_tree, BASE};
use crate::Error;

/// A template ready for use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub digest: String,
    pub rootfs: PathBuf,
    /// Host directories bound read-only at the same path (the base template's `/usr`).
    pub binds: Vec<String>,
}

/// A listed template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateInfo {
    pub name: String,
    pub digest: String,
    pub source: String,
    pub created: u64,
    pub size_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    digest: String,
    binds: Vec<String>,
    source: String,
    created: u64,
    size_bytes: u64,
}

/// The template store of one data directory.
#[derive(Debug, Clone)]
pub struct Templates {
    root: PathBuf,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn du(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path).map_or(0, |rd| rd.flatten().map(|e| du(&e.path())).sum())
}

impl Templates {
    pub fn open(root: PathBuf) -> Result<Self, Error> {
        for d in ["objects", "names", "staging"] {
            fs::create_dir_all(root.join(d)).map_err(|e| Error::io(&root.join(d), e))?;
        }
        Ok(Self { root })
    }

    fn object(&self, digest: &str) -> PathBuf {
        self.root.join("objects").join(digest)
    }

    /// Looks up a template by name, assembling `base` on first use.
    pub fn resolve(&self, name: &str) -> Result<Template, Error> {
        validate_template_name(name).map_err(|_| Error::TemplateNotFound(name.to_owned()))?;
        match self.load(name) {
            Err(Error::TemplateNotFound(_)) if name == BASE => self.build_base(),
            other => other,
        }
    }

    fn load(&self, name: &str) -> Result<Template, Error> {
        let link = self.root.join("names").join(name);
        let digest = match fs::read_to_string(&link) {
            Ok(d) => d.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::TemplateNotFound(name.to_owned())),
            Err(e) => return Err(Error::io(&link, e)),
        };
        let dir = self.object(&digest);
        let manifest: Manifest = read_manifest(&dir)?;
        Ok(Template { name: name.to_owned(), digest, rootfs: dir.join("rootfs"), binds: manifest.binds })
    }

    fn build_base(&self) -> Result<Template, Error> {
        let staging = self.stage()?;
        let binds = base::assemble(&staging.join("rootfs"))?;
        self.commit(&staging, BASE, binds, "host system directories")
    }

    /// Imports a root file system from a directory (copied, never referenced).
    pub fn import_dir(&self, src: &Path, name: &str) -> Result<Template, Error> {
        validate_template_name(name)?;
        if !src.is_dir() {
            return Err(Error::Template(format!("{} is not a directory", src.display())));
        }
        let staging = self.stage()?;
        fs::remove_dir(staging.join("rootfs")).map_err(|e| Error::io(&staging, e))?;
        if let Err(e) = copy_tree(src, &staging.join("rootfs")) {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        self.commit(&staging, name, Vec::new(), &format!("dir:{}", src.display()))
    }

    /// Imports an OCI image archive or layout, or a `docker save` archive.
    pub fn import_oci(
        &self,
        src: &Path,
        name: &str,
        progress: &mut dyn FnMut(oci::Progress),
    ) -> Result<Template, Error> {
        validate_template_name(name)?;
        let staging = self.stage()?;
        if let Err(e) = oci::unpack(src, &staging.join("rootfs"), progress) {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        self.commit(&staging, name, Vec::new(), &format!("oci:{}", src.display()))
    }

    /// A fresh path in the staging area, on the store's file system, for an
    /// archive received over the network; the caller removes it.
    pub fn scratch_file(&self) -> PathBuf {
        self.root.join("staging").join(format!("upload-{}-{}", std::process::id(), now_nanos()))
    }

    fn stage(&self) -> Result<PathBuf, Error> {
        let dir = self.root.join("staging").join(format!("{}-{}", std::process::id(), now_nanos()));
        fs::create_dir_all(dir.join("rootfs")).map_err(|e| Error::io(&dir, e))?;
        Ok(dir)
    }

    /// Moves a staged root into the object store under its digest and names it.
    fn commit(&self, staging: &Path, name: &str, binds: Vec<String>, source: &str) -> Result<Template, Error> {
        let result = self.commit_inner(staging, name, binds, source);
        if staging.exists() {
            let _ = fs::remove_dir_all(staging);
        }
        result
    }

    fn commit_inner(&self, staging: &Path, name: &str, binds: Vec<String>, source: &str) -> Result<Template, Error> {
        let rootfs = staging.join("rootfs");
        let mut digest = tree_digest(&rootfs)?;
        if !binds.is_empty() {
            digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!("{digest}{binds:?}")));
        }
        let manifest = Manifest {
            digest: digest.clone(),
            binds: binds.clone(),
            source: source.to_owned(),
            created: now(),
            size_bytes: du(&rootfs),
        };
        let body = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Template(e.to_string()))?;
        fs::write(staging.join("manifest.json"), body).map_err(|e| Error::io(staging, e))?;
        let dst = self.object(&digest);
        // Another process may commit the same content at the same time; either copy is the template.
        if let Err(e) = fs::rename(staging, &dst) {
            if !dst.join("manifest.json").exists() {
                return Err(Error::io(&dst, e));
            }
            // The other copy won: this one goes.
            let _ = fs::remove_dir_all(staging);
        }
        let link = self.root.join("names").join(name);
        // A temporary name of this call's own: concurrent commits of one name
        // (two first creates each assembling `base`) must not move each other's.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.root.join("names").join(format!(".{name}.{}-{seq}.tmp", std::process::id()));
        fs::write(&tmp, &digest).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &link).map_err(|e| Error::io(&link, e))?;
        Ok(Template { name: name.to_owned(), digest, rootfs: dst.join("rootfs"), binds })
    }

    pub fn list(&self) -> Result<Vec<TemplateInfo>, Error> {
        let names = self.root.join("names");
        let mut out = Vec::new();
        for entry in fs::read_dir(&names).map_err(|e| Error::io(&names, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let t = self.load(&name)?;
            let m = read_manifest(&self.object(&t.digest))?;
            out.push(TemplateInfo {
                name,
                digest: t.digest,
                source: m.source,
                created: m.created,
                size_bytes: m.size_bytes,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a name, and its object when no other name refers to it.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        validate_template_name(name).map_err(|_| Error::TemplateNotFound(name.to_owned()))?;
        let t = self.load(name)?;
        let link = self.root.join("names").join(name);
        fs::remove_file(&link).map_err(|e| Error::io(&link, e))?;
        let still_used = self.list()?.iter().any(|i| i.digest == t.digest);
        if !still_used {
            let dir = self.object(&t.digest);
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest, Error> {
    let path = dir.join("manifest.json");
    let body = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&body).map_err(|e| Error::Template(format!("{}: {e}", path.display())))
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_commits_of_one_name_all_succeed_and_leave_no_staging() {
        let root = tempfile::tempdir().expect("tempdir");
        let src = tempfile::tempdir().expect("tempdir");
        fs::write(src.path().join("file"), "same content").expect("write");
        let store = Templates::open(root.path().to_owned()).expect("open");
        let imports: Vec<_> = (0..8)
            .map(|_| {
                let (store, src) = (store.clone(), src.path().to_owned());
                std::thread::spawn(move || store.import_dir(&src, "t").map(|t| t.digest))
            })
            .collect();
        let digests: Vec<String> =
            imports.into_iter().map(|h| h.join().expect("thread").expect("import succeeds")).collect();
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "one template: {digests:?}");
        assert_eq!(store.resolve("t").expect("resolves").digest, digests[0]);
        let left = |dir: &str| fs::read_dir(root.path().join(dir)).expect("dir").count();
        assert_eq!(left("staging"), 0, "no staging directory left");
        assert_eq!(left("objects"), 1);
        assert_eq!(left("names"), 1, "no temporary name left");
    }
}
