//! OCI image import: an OCI image layout (directory), an OCI archive
//! (`skopeo copy … oci-archive:`) or a `docker save` archive. Layers are
//! applied in order with whiteouts (`.wh.<name>`) and opaque directories
//! (`.wh..wh..opq`) handled as the image spec says; blob digests are
//! verified; device nodes are dropped; paths that would leave the root
//! (absolute, `..`, or through a symlink) are refused by `tar`'s `unpack_in`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::Error;

/// Import progress, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub layer: usize,
    pub layers: usize,
    pub bytes: u64,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Template(msg.into())
}

/// Where the image's files come from.
enum Source {
    Dir(PathBuf),
    Tar(PathBuf),
}

impl Source {
    fn open(&self, name: &str) -> Result<Box<dyn Read + '_>, Error> {
        match self {
            Source::Dir(root) => {
                let p = root.join(name);
                Ok(Box::new(BufReader::new(File::open(&p).map_err(|e| Error::io(&p, e))?)))
            }
            Source::Tar(path) => {
                let file = File::open(path).map_err(|e| Error::io(path, e))?;
                let mut archive = tar::Archive::new(BufReader::new(file));
                let wanted = Path::new(name.trim_start_matches("./"));
                for entry in archive.entries().map_err(|e| Error::io(path, e))? {
                    let mut entry = entry.map_err(|e| Error::io(path, e))?;
                    let p = entry.path().map_err(|e| Error::io(path, e))?.into_owned();
                    if p.strip_prefix("./").unwrap_or(&p) == wanted {
                        let mut data = Vec::new();
                        entry.read_to_end(&mut data).map_err(|e| Error::io(path, e))?;
                        return Ok(Box::new(io::Cursor::new(data)));
                    }
                }
                Err(bad(format!("{} has no {name}", path.display())))
            }
        }
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Source::Dir(root) => root.join(name).exists(),
            Source::Tar(_) => self.open(name).is_ok(),
        }
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T, Error> {
        let mut body = Vec::new();
        self.open(name)?.read_to_end(&mut body).map_err(|e| bad(format!("{name}: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| bad(format!("{name}: {e}")))
    }
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A layer to apply: its path in the source and the digest to check, if known.
struct Layer {
    path: String,
    digest: Option<String>,
}

fn blob_path(digest: &str) -> Result<String, Error> {
    let (alg, hex) = digest.split_once(':').ok_or_else(|| bad(format!("bad digest {digest}")))?;
    if alg != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("unsupported digest {digest}")));
    }
    Ok(format!("blobs/sha256/{hex}"))
}

fn pick(manifests: Vec<Descriptor>) -> Result<Descriptor, Error> {
    let amd64 = |d: &Descriptor| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64");
    let mut all = manifests;
    let i = all.iter().position(amd64).unwrap_or(0);
    if all.is_empty() {
        return Err(bad("the image index lists no manifest"));
    }
    Ok(all.swap_remove(i))
}

fn oci_layers(src: &Source) -> Result<Vec<Layer>, Error> {
    let index: Index = src.json("index.json")?;
    let mut desc = pick(index.manifests)?;
    for _ in 0..4 {
        let m: Manifest = src.json(&blob_path(&desc.digest)?)?;
        let nested = m.media_type.contains("index") || desc.media_type.contains("index") || !m.manifests.is_empty();
        if !nested {
            return m
                .layers
                .into_iter()
                .map(|l| {
                    if l.media_type.contains("zstd") {
                        return Err(bad(format!("layer {} is zstd-compressed, which is not supported yet", l.digest)));
                    }
                    Ok(Layer { path: blob_path(&l.digest)?, digest: Some(l.digest) })
                })
                .collect();
        }
        desc = pick(m.manifests)?;
    }
    Err(bad("image indexes nested too deeply"))
}

fn docker_layers(src: &Source) -> Result<Vec<Layer>, Error> {
    let manifests: Vec<DockerManifest> = src.json("manifest.json")?;
    let first = manifests.into_iter().next().ok_or_else(|| bad("manifest.json lists no image"))?;
    Ok(first.layers.into_iter().map(|path| Layer { path, digest: None }).collect())
}

/// Unpacks the image at `src` into the empty directory `dst`.
pub fn unpack(src: &Path, dst: &Path, progress: &mut dyn FnMut(Progress)) -> Result<(), Error> {
    let source = if src.is_dir() { Source::Dir(src.to_path_buf()) } else { Source::Tar(src.to_path_buf()) };
    if !src.exists() {
        return Err(bad(format!("{} does not exist", src.display())));
    }
    let layers = if source.has("index.json") {
        oci_layers(&source)?
    } else if source.has("manifest.json") {
        docker_layers(&source)?
    } else {
        return Err(bad(format!(
            "{} is neither an OCI image (index.json) nor a docker save archive (manifest.json)",
            src.display()
        )));
    };
    let total = layers.len();
    for (i, layer) in layers.iter().enumerate() {
        let mut bytes = 0u64;
        let reader = Counting { inner: source.open(&layer.path)?, hash: Sha256::new(), bytes: &mut bytes };
        let mut report = |b| progress(Progress { layer: i + 1, layers: total, bytes: b });
        apply_layer(reader, dst, &layer.path, layer.digest.as_deref(), &mut report)?;
    }
    Ok(())
}

/// Counts and hashes what is read through it.
struct Counting<'a, R> {
    inner: R,
    hash: Sha256,
    bytes: &'a mut u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        *self.bytes += n as u64;
        Ok(n)
    }
}

fn apply_layer<R: Read>(
    mut reader: Counting<'_, R>,
    dst: &Path,
    name: &str,
    digest: Option<&str>,
    progress: &mut dyn FnMut(u64),
) -> Result<(), Error> {
    let mut magic = [0u8; 2];
    let n = read_fully(&mut reader, &mut magic).map_err(|e| bad(format!("{name}: {e}")))?;
    let head = io::Cursor::new(magic[..n].to_vec());
    let gz = n == 2 && magic == [0x1f, 0x8b];
    {
        let chained = head.chain(&mut reader);
        let stream: Box<dyn Read + '_> =
            if gz { Box::new(flate2::read::GzDecoder::new(chained)) } else { Box::new(chained) };
        extract(stream, dst, name)?;
    }
    // Read any trailing bytes so that the digest covers the whole blob.
    io::copy(&mut reader, &mut io::sink()).map_err(|e| bad(format!("{name}: {e}")))?;
    progress(*reader.bytes);
    if let Some(want) = digest {
        let got = format!("sha256:{}", hex::encode(reader.hash.finalize()));
        if got != want {
            return Err(bad(format!("layer {name}: digest {got} does not match {want}")));
        }
    }
    Ok(())
}

fn read_fully(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A relative path without `..`, or `None` for anything unsafe.
fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn extract(stream: impl Read, dst: &Path, name: &str) -> Result<(), Error> {
    let err = |e: io::Error| bad(format!("{name}: {e}"));
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    let mut written: HashSet<PathBuf> = HashSet::new();
    let root = dst.canonicalize().map_err(|e| Error::io(dst, e))?;
    for entry in archive.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let raw = entry.path().map_err(err)?.into_owned();
        let rel = clean(&raw).ok_or_else(|| bad(format!("{name}: unsafe path {}", raw.display())))?;
        let file_name = rel.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        // Whatever we remove must be inside the root, even if a layer planted a symlink.
        let Some(real_parent) = resolve_inside(&root, &parent, name)? else {
            if file_name.starts_with(".wh.") {
                continue;
            }
            // A missing parent: `unpack_in` creates it (inside the root).
            unpack_entry(&mut entry, dst, &raw, name)?;
            written.insert(rel);
            continue;
        };
        if file_name == ".wh..wh..opq" {
            opaque(&real_parent, &parent, &written)?;
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            remove_any(&real_parent.join(hidden))?;
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() {
            continue;
        }
        let target = real_parent.join(&file_name);
        if let Ok(meta) = fs::symlink_metadata(&target) {
            if !(meta.is_dir() && kind.is_dir()) {
                remove_any(&target)?;
            }
        }
        unpack_entry(&mut entry, dst, &raw, name)?;
        written.insert(rel);
    }
    Ok(())
}

fn unpack_entry<R: Read>(entry: &mut tar::Entry<'_, R>, dst: &Path, raw: &Path, name: &str) -> Result<(), Error> {
    match entry.unpack_in(dst) {
        Ok(true) => Ok(()),
        Ok(false) => Err(bad(format!("{name}: {} would leave the image root", raw.display()))),
        Err(e) => Err(bad(format!("{name}: {}: {e}", raw.display()))),
    }
}

/// `root/rel` with symlinks resolved, if it exists; an error if it resolves outside `root`.
fn resolve_inside(root: &Path, rel: &Path, name: &str) -> Result<Option<PathBuf>, Error> {
    match root.join(rel).canonicalize() {
        Ok(real) if real.starts_with(root) => Ok(Some(real)),
        Ok(real) => Err(bad(format!("{name}: {} leads out of the image root to {}", rel.display(), real.display()))),
        Err(_) => Ok(None),
    }
}

/// Empties `dir` of everything earlier layers put there.
fn opaque(dir: &Path, rel: &Path, written: &HashSet<PathBuf>) -> Result<(), Error> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
    for e in entries.flatten() {
        if !written.contains(&rel.join(e.file_name())) {
            remove_any(&e.path())?;
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<(), Error> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
    result.map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean(Path::new("./a/b")), Some(PathBuf::from("a/b")));
        assert_eq!(clean(Path::new("a/../b")), None);
        assert_eq!(clean(Path::new("/etc/passwd")), None);
        assert_eq!(clean(Path::new(".")), None);
    }

    #[test]
    fn digests_must_be_sha256_hex() {
        assert!(blob_path(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(blob_path("sha256:../../etc/passwd").is_err());
        assert!(blob_path("md5:abc").is_err());
        assert!(blob_path("nocolon").is_err());
    }

    proptest! {
        /// Whatever a layer names, a cleaned path stays below the root.
        #[test]
        fn cleaned_paths_stay_inside(parts in proptest::collection::vec("(\\.\\.|\\.|/|[a-z]{1,3})", 0..8)) {
            let raw: String = parts.concat();
            if let Some(p) = clean(Path::new(&raw)) {
                prop_assert!(p.is_relative());
                prop_assert!(p.components().all(|c| matches!(c, Component::Normal(_))));
            }
        }

        #[test]
        fn blob_paths_never_escape(d in "\\PC{0,80}") {
            if let Ok(p) = blob_path(&d) {
                prop_assert!(p.starts_with("blobs/sha256/") && !p.contains(".."));
            }
        }
    }
}
