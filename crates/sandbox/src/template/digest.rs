//! A content digest of a directory tree: paths, types, modes, owners, file
//! contents and link targets, in sorted order.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::Error;

pub fn tree_digest(root: &Path) -> Result<String, Error> {
    let mut h = Sha256::new();
    walk(root, root, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

fn walk(root: &Path, dir: &Path, h: &mut Sha256) -> Result<(), Error> {
    let mut entries: Vec<_> =
        fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.collect::<Result<_, _>>().map_err(|e| Error::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        let rel = path.strip_prefix(root).unwrap_or(&path);
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(format!("\0{:o}:{}:{}\0", meta.mode(), meta.uid(), meta.gid()).as_bytes());
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
            h.update(target.as_os_str().as_encoded_bytes());
        } else if ft.is_dir() {
            walk(root, &path, h)?;
        } else if ft.is_file() {
            let mut f = fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = f.read(&mut buf).map_err(|e| Error::io(&path, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        h.update(b"\n");
    }
    Ok(())
}
