//! Run state on disk: one directory per run, holding its resolved config, its checkpoints, its
//! JSONL log and its result, and nothing of any other run.
//!
//! ```text
//! <run dir>/                      e.g. runs/static_vs_dynamic/dynamic/seed-0/
//!   config.json                   the resolved settings (task, train config, data bindings)
//!   checkpoints/ckpt-<step>.dynmask
//!   log.jsonl                     one JSON object per line: step, eval, checkpoint, ...
//!   result.json                   written by the study when the run has finished
//! ```
//!
//! Safety rules: keep-last pruning looks only at this run's `checkpoints/` and orders by step
//! number, never removing the newest; a fresh run refuses a directory that already holds state
//! (resume it, or clear it explicitly); on resume the log is cut back to the checkpoint's step,
//! dropping a torn last line; every log line is one `write` of a complete line, and a write
//! error is an error. Temp files of dead processes are swept when a run directory is opened.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{io_error, Result, TrainError};

/// Environment variable of the fault tests: abort the process right after the log line of the
/// step that makes `done == N` steps is written (a `kill -9` between steps).
pub const FAULT_KILL_AFTER_STEP: &str = "DYNMASK_FAULT_KILL_AFTER_STEP";
/// Environment variable of the fault tests: abort in the middle of writing the log line of the
/// step that makes `done == N` steps (a `kill -9` mid-write, as a full disk or a signal leaves).
pub const FAULT_TORN_LOG_AT_STEP: &str = "DYNMASK_FAULT_TORN_LOG_AT_STEP";

fn fault_at(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

/// A run's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

/// A checkpoint file and its step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CheckpointFile {
    /// Steps done when it was written.
    pub step: u64,
    /// Its path.
    pub path: PathBuf,
}

impl RunDir {
    /// Opens (creating) `root` and sweeps temp files left by dead processes.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let ckpt = root.join("checkpoints");
        fs::create_dir_all(&ckpt).map_err(io_error(&ckpt))?;
        for dir in [&root, &ckpt] {
            mask_core::io::sweep_stale_temp_files(dir).map_err(io_error(dir))?;
        }
        Ok(Self { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `checkpoints/`.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// Where the checkpoint after `step` steps goes.
    pub fn checkpoint_path(&self, step: u64) -> PathBuf {
        self.checkpoint_dir()
            .join(format!("ckpt-{step:010}.dynmask"))
    }

    /// `log.jsonl`.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("log.jsonl")
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `result.json`.
    pub fn result_path(&self) -> PathBuf {
        self.root.join("result.json")
    }

    /// This run's checkpoints, oldest step first (by number, whatever the names' widths).
    pub fn checkpoints(&self) -> Result<Vec<CheckpointFile>> {
        let dir = self.checkpoint_dir();
        let mut out = vec![];
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let path = entry.map_err(io_error(&dir))?.path();
            let step = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("ckpt-"))
                .and_then(|n| n.strip_suffix(".dynmask"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(step) = step {
                out.push(CheckpointFile { step, path });
            }
        }
        out.sort();
        Ok(out)
    }

    /// The newest checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointFile>> {
        Ok(self.checkpoints()?.pop())
    }

    /// Removes all but the newest `keep_last` (at least 1) checkpoints; returns what it removed.
    pub fn prune(&self, keep_last: usize) -> Result<Vec<PathBuf>> {
        let files = self.checkpoints()?;
        let excess = files.len().saturating_sub(keep_last.max(1));
        let mut removed = vec![];
        for f in &files[..excess] {
            fs::remove_file(&f.path).map_err(io_error(&f.path))?;
            removed.push(f.path.clone());
        }
        Ok(removed)
    }

    /// What state the directory holds (checkpoints, a log, a result), or `None` when empty.
    pub fn existing_state(&self) -> Result<Option<String>> {
        let mut what = vec![];
        if let Some(c) = self.latest_checkpoint()? {
            what.push(format!("checkpoints up to step {}", c.step));
        }
        if self.result_path().exists() {
            what.push("a finished result".to_string());
        }
        if self.log_path().exists() && what.is_empty() {
            what.push("a log".to_string());
        }
        Ok((!what.is_empty()).then(|| what.join(" and ")))
    }

    /// Refuses to start a fresh run over existing state (nothing is overwritten silently).
    pub fn ensure_empty(&self) -> Result<()> {
        match self.existing_state()? {
            None => Ok(()),
            Some(what) => Err(TrainError::RunExists {
                path: self.root.display().to_string(),
                what,
                hint: "resume it (--resume), start it over (--fresh), or choose another --out-dir"
                    .into(),
            }),
        }
    }

    /// Deletes this run's checkpoints, log, config and result (for an explicit fresh start).
    pub fn clear(&self) -> Result<()> {
        for f in self.checkpoints()? {
            fs::remove_file(&f.path).map_err(io_error(&f.path))?;
        }
        for p in [self.log_path(), self.result_path(), self.config_path()] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&p)(e)),
            }
        }
        Ok(())
    }

    /// Writes `config.json` atomically.
    pub fn write_config(&self, config: &Value) -> Result<()> {
        write_json(&self.config_path(), config)
    }
}

/// Writes pretty JSON atomically. Non-finite numbers cannot occur: `serde_json` refuses them
/// in `Value`s, and the learner stops before any reaches a record.
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("a JSON value serialises");
    mask_core::io::write_atomic(path, text.as_bytes()).map_err(io_error(path))
}

/// An append-only JSONL log whose every line parses, after a crash at any point and a resume.
#[derive(Debug)]
pub struct JsonlLog {
    path: PathBuf,
    file: File,
}

impl JsonlLog {
    /// A new, empty log at `path` (an existing file is truncated).
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(io_error(path))?;
        drop(file);
        Self::append_to(path)
    }

    fn append_to(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_error(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Reopens the log of a run resumed after `done` steps: keeps the complete lines whose
    /// `done` field is at most `done` (a torn last line and everything logged after the
    /// checkpoint are dropped), rewritten atomically. A missing log starts empty.
    pub fn resume(path: &Path, done: u64) -> Result<Self> {
        let text = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::create(path),
            Err(e) => return Err(io_error(path)(e)),
        };
        let mut kept = Vec::with_capacity(text.len());
        for line in text.split_inclusive(|&b| b == b'\n') {
            if line.last() != Some(&b'\n') {
                break; // torn last line
            }
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if v.get("done")
                .and_then(Value::as_u64)
                .is_some_and(|d| d <= done)
            {
                kept.extend_from_slice(line);
            }
        }
        mask_core::io::write_atomic(path, &kept).map_err(io_error(path))?;
        Self::append_to(path)
    }

    /// Appends one line (one `write` of the whole line); an error is returned, never dropped.
    pub fn write(&mut self, value: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(value).expect("a JSON value serialises");
        line.push(b'\n');
        let done = value.get("done").and_then(Value::as_u64);
        if done.is_some() && done == fault_at(FAULT_TORN_LOG_AT_STEP) {
            let _ = self.file.write_all(&line[..line.len() / 2]);
            std::process::abort();
        }
        self.file.write_all(&line).map_err(io_error(&self.path))?;
        if done.is_some()
            && done == fault_at(FAULT_KILL_AFTER_STEP)
            && value.get("event").and_then(Value::as_str) == Some("step")
        {
            std::process::abort();
        }
        Ok(())
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mask-train-run-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// Regression (run-state issue, finding 1): keep-last pruning sorted file names across
    /// runs and deleted each new checkpoint of a shorter rerun as soon as it was written. Now a
    /// run's directory holds only its own checkpoints, and pruning orders by step number.
    #[test]
    fn pruning_keeps_the_newest_by_step_and_only_looks_at_its_own_run() {
        let base = dir("prune");
        let a = RunDir::open(base.join("arm-a/seed-0")).unwrap();
        let b = RunDir::open(base.join("arm-b/seed-0")).unwrap();
        for s in [8u64, 12, 100, 9] {
            fs::write(a.checkpoint_path(s), b"x").unwrap();
        }
        // A legacy-width name sorts before the others as text but is step 1000 by number.
        fs::write(a.checkpoint_dir().join("ckpt-00001000.dynmask"), b"x").unwrap();
        fs::write(b.checkpoint_path(4), b"y").unwrap();
        let removed = a.prune(2).unwrap();
        let steps: Vec<u64> = a.checkpoints().unwrap().iter().map(|c| c.step).collect();
        assert_eq!(steps, vec![100, 1000]);
        assert_eq!(removed.len(), 3);
        assert_eq!(
            b.checkpoints().unwrap().len(),
            1,
            "another run is untouched"
        );
        assert_eq!(a.latest_checkpoint().unwrap().unwrap().step, 1000);
    }

    #[test]
    fn a_fresh_run_refuses_existing_state_until_cleared() {
        let r = RunDir::open(dir("fresh")).unwrap();
        assert!(r.ensure_empty().is_ok());
        fs::write(r.checkpoint_path(12), b"x").unwrap();
        let e = r.ensure_empty().unwrap_err().to_string();
        assert!(
            e.contains("checkpoints up to step 12") && e.contains("--resume"),
            "{e}"
        );
        r.clear().unwrap();
        assert!(r.ensure_empty().is_ok());
    }

    /// Regression (run-state issue, finding 3): on resume the log was appended to without being
    /// cut back, leaving a spliced line and duplicate steps after a late kill.
    #[test]
    fn resume_cuts_the_log_back_and_drops_a_torn_line() {
        let d = dir("log");
        fs::create_dir_all(&d).unwrap();
        let p = d.join("log.jsonl");
        let mut log = JsonlLog::create(&p).unwrap();
        for done in 1..=6u64 {
            log.write(&json!({"event": "step", "done": done})).unwrap();
        }
        log.write(&json!({"event": "eval", "done": 6})).unwrap();
        drop(log);
        // A torn line, as a kill mid-write leaves.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"event\": \"step\", \"do").unwrap();
        drop(f);
        let mut log = JsonlLog::resume(&p, 4).unwrap();
        log.write(&json!({"event": "step", "done": 5})).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        let dones: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["done"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(dones, vec![1, 2, 3, 4, 5]);
    }

    /// Regression (run-state issue, finding 3): log write errors were discarded. `/dev/full`
    /// fails every write with ENOSPC.
    #[test]
    fn a_log_write_error_is_an_error() {
        if !Path::new("/dev/full").exists() {
            return;
        }
        let mut log = JsonlLog::append_to(Path::new("/dev/full")).unwrap();
        let e = log.write(&json!({"done": 1})).unwrap_err().to_string();
        assert!(e.contains("/dev/full"), "{e}");
    }
}
