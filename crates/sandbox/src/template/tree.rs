//! Copying a directory tree as-is: symlinks stay symlinks, modes and owners
//! are kept, special files are skipped.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::Error;

pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), Error> {
    let meta = fs::symlink_metadata(src).map_err(|e| Error::io(src, e))?;
    copy_entry(src, dst, &meta)
}

fn copy_entry(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), Error> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(|e| Error::io(src, e))?;
        symlink(&target, dst).map_err(|e| Error::io(dst, e))?;
    } else if ft.is_dir() {
        fs::create_dir(dst).map_err(|e| Error::io(dst, e))?;
        for entry in fs::read_dir(src).map_err(|e| Error::io(src, e))? {
            let entry = entry.map_err(|e| Error::io(src, e))?;
            let m = fs::symlink_metadata(entry.path()).map_err(|e| Error::io(&entry.path(), e))?;
            copy_entry(&entry.path(), &dst.join(entry.file_name()), &m)?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(|e| Error::io(dst, e))?;
    } else if ft.is_file() {
        fs::copy(src, dst).map_err(|e| Error::io(src, e))?;
    } else {
        return Ok(());
    }
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(|e| Error::io(dst, e))
}
