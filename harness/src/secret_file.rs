//! Writing files that hold secrets (signing keys, bearer tokens, database URLs): readable by their
//! owner only, and never through a name someone else prepared.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` as a new file of mode 0600, in one step: the text goes into a
/// fresh, randomly named file in the same directory (created exclusively, so a planted file or
/// symlink there is never written through), which is then renamed over `path` (a symlink at
/// `path` is replaced, not followed). A reader never sees half a file, and an existing file's
/// looser mode is not kept.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // tempfile creates with O_EXCL and mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".harbor-secret-")
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::write_secret_file;

    #[cfg(unix)]
    #[test]
    fn a_secret_file_is_private_and_replaces_what_was_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.env");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "untouched").unwrap();
        let link = dir.path().join("linked.env");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();

        write_secret_file(&path, b"SECRET=1").unwrap();
        write_secret_file(&link, b"SECRET=2").unwrap();

        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600, "an existing file's 0644 is not kept");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "SECRET=1");
        assert_eq!(
            std::fs::read_to_string(&elsewhere).unwrap(),
            "untouched",
            "the symlink was not followed"
        );
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(mode(&link), 0o600);
    }
}
