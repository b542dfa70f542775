//! Crash-safe file writing shared by every crate of the workspace: a file is either its old
//! content or its new content, never a mix, and a failed write leaves no litter.
//!
//! Temp files are named `.<name>.tmp.<pid>` in the target's directory; a write that fails removes
//! its temp file, and [`sweep_stale_temp_files`] removes those of processes that no longer run
//! (a `kill -9` between write and rename leaves one behind).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Environment variable of the crash test: when set, [`write_atomic`] aborts the process after
/// the temp file is complete and before the rename (what a `kill -9` at that moment leaves).
pub const FAULT_BEFORE_RENAME: &str = "DYNMASK_FAULT_BEFORE_RENAME";

fn temp_path(path: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    Ok((dir, tmp))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one: a temp
/// file in the same directory is written and fsynced, renamed over `path`, and the directory is
/// fsynced. On any error the temp file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (dir, tmp) = temp_path(path)?;
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if std::env::var_os(FAULT_BEFORE_RENAME).is_some() {
        std::process::abort();
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Persist the rename itself (not supported on every platform; best effort there).
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whether process `pid` is alive. On Linux this reads `/proc`; elsewhere every process is
/// assumed alive (nothing is swept).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// Removes `.<name>.tmp.<pid>` files in `dir` whose process has died (not this process's own).
/// Returns the removed paths. A missing directory sweeps nothing.
pub fn sweep_stale_temp_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut removed = vec![];
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".tmp."))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mask-core-io-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_replace_and_leave_no_temp_file() {
        let d = dir("replace");
        let p = d.join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn a_failed_write_removes_its_temp_file() {
        let d = dir("fail");
        // Renaming a file over a non-empty directory fails after the temp file is written.
        let target = d.join("busy");
        fs::create_dir_all(target.join("inside")).unwrap();
        assert!(write_atomic(&target, b"x").is_err());
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("busy")]);
    }

    #[test]
    fn sweep_removes_temp_files_of_dead_processes_only() {
        let d = dir("sweep");
        // pid 0 never names a user process (no /proc/0); our own pid is alive.
        let dead = d.join(".ckpt.tmp.0");
        let own = d.join(format!(".ckpt.tmp.{}", std::process::id()));
        let unrelated = d.join("ckpt-00000001.dynmask");
        for p in [&dead, &own, &unrelated] {
            fs::write(p, b"x").unwrap();
        }
        // Another live process's temp file (pid 1, init, always alive) is kept.
        let live = d.join(".ckpt.tmp.1");
        fs::write(&live, b"x").unwrap();
        let removed = sweep_stale_temp_files(&d).unwrap();
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists() && own.exists() && unrelated.exists() && live.exists());
        assert!(sweep_stale_temp_files(&d.join("missing"))
            .unwrap()
            .is_empty());
    }
}
