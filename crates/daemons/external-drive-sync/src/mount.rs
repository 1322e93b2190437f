//! Is the mirror target usable: present, a directory and (by default) a mount point
//! according to `/proc/self/mountinfo`, so a drive that is not plugged in never gets the
//! mirror written onto the root file system underneath its mount point.

use std::path::{Path, PathBuf};

/// The mount points listed in a `/proc/self/mountinfo` text (field 5 of each line, with
/// the kernel's octal escapes `\040` etc. decoded).
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the mirror can be written, and if not, a message naming `path` and why.
/// Returns the canonical path when it can.
pub fn check(
    path: &Path,
    require_mount: bool,
    mountinfo: impl FnOnce() -> std::io::Result<String>,
) -> Result<PathBuf, String> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "external drive path {shown} does not exist (drive not mounted?); nothing mirrored"
            ));
        }
        Err(e) => {
            return Err(format!(
                "external drive path {shown}: {e}; nothing mirrored"
            ));
        }
    };
    if !meta.is_dir() {
        return Err(format!(
            "external drive path {shown} is not a directory; nothing mirrored"
        ));
    }
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| format!("external drive path {shown}: {e}; nothing mirrored"))?;
    if require_mount {
        let info = mountinfo()
            .map_err(|e| format!("cannot read /proc/self/mountinfo to check that {shown} is mounted: {e}; nothing mirrored"))?;
        if !mount_points(&info).contains(&canonical) {
            return Err(format!(
                "external drive path {shown} is not a mount point (drive not mounted?; set external_drive_sync.require_mount = false to mirror into a plain directory); nothing mirrored"
            ));
        }
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        40 22 8:17 / /media/usb\\040drive rw,nosuid shared:30 - vfat /dev/sdb1 rw\n\
        41 22 0:5 / /mnt/backup rw - ext4 /dev/sdc1 rw\n";

    #[test]
    fn parses_mount_points_with_escapes() {
        assert_eq!(
            mount_points(INFO),
            vec![
                PathBuf::from("/"),
                PathBuf::from("/media/usb drive"),
                PathBuf::from("/mnt/backup")
            ]
        );
    }

    #[test]
    fn missing_file_and_plain_directory_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = check(&missing, true, || Ok(INFO.into())).unwrap_err();
        assert!(
            e.contains(&missing.display().to_string()) && e.contains("does not exist"),
            "{e}"
        );
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = check(&file, false, || Ok(INFO.into())).unwrap_err();
        assert!(e.contains("not a directory"), "{e}");
        let e = check(dir.path(), true, || Ok(INFO.into())).unwrap_err();
        assert!(e.contains("not a mount point"), "{e}");
        let canonical = std::fs::canonicalize(dir.path()).unwrap();
        let info = format!(
            "{INFO}50 22 0:9 / {} rw - tmpfs t rw\n",
            canonical.display()
        );
        assert_eq!(check(dir.path(), true, || Ok(info)).unwrap(), canonical);
        assert_eq!(
            check(dir.path(), false, || Ok(String::new())).unwrap(),
            canonical
        );
    }
}
