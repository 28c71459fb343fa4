//! Checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! `checkpoints/step-000040/` holds `policy.bpk` (burnpack: keeps parameter ids, which key the
//! AdamW moments), `optimizer.bpk` (+ `.meta.json`: step counters, schedule), the critic and
//! its optimizer when PPO uses one, `state.json` (RL step, data cursor, skip counter) and
//! `manifest.json` (sha256 of every file). A checkpoint is written into `step-000040.tmp/`
//! and renamed when complete, so a crash mid-write never leaves a directory that looks
//! complete; on load the checksums are verified and a damaged checkpoint is skipped (with a
//! warning) in favour of the previous one. Random streams are not state: every draw is keyed
//! by (seed, step, row), so the step number restores them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use kiln_data::ScheduleState;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};
use crate::fault::FaultPlan;

/// The small part of a checkpoint: counters and cursors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// RL steps completed.
    pub step: usize,
    /// The data mixer's position.
    pub data: ScheduleState,
    /// Consecutive optimizer steps skipped for non-finite gradients.
    pub consecutive_skips: usize,
}

const TMP_SUFFIX: &str = ".tmp";

/// Directory name of the checkpoint after `step` steps.
pub fn dir_name(step: usize) -> String {
    format!("step-{step:06}")
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(TrainError::io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(TrainError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

fn ckpt_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Saves a module as burnpack (parameter ids kept).
pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<()> {
    module
        .clone()
        .save_file(path)
        .map_err(|e| ckpt_err(path, format!("writing module: {e:?}")))
}

/// Saves a module as burnpack into `path.tmp`, flushed to disk, then renamed to `path`: a crash
/// leaves either the old file or the new one, never a torn one.
pub fn save_module_atomically<M: Module>(module: &M, path: &Path) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    save_module(module, &tmp)?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, path).map_err(TrainError::io(path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// Loads a burnpack module record into `module` (parameter ids restored from the file).
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M> {
    let record =
        ModuleRecord::load(path).map_err(|e| ckpt_err(path, format!("reading module: {e:?}")))?;
    module
        .try_load_record(record)
        .map_err(|e| ckpt_err(path, format!("applying module: {e:?}")))
}

/// Writes a checkpoint atomically. `write_files` fills the temporary directory (it is given
/// its path); then `state.json` and the manifest are added, every file is flushed to disk, and
/// the directory is renamed. Older checkpoints beyond `keep_last` are removed afterwards.
/// `faults` may kill the process before the rename or before the pruning (reliability tests).
pub fn write(
    root: &Path,
    state: &TrainState,
    keep_last: usize,
    faults: &FaultPlan,
    write_files: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(TrainError::io(root))?;
    let final_dir = root.join(dir_name(state.step));
    let tmp = root.join(format!("{}{TMP_SUFFIX}", dir_name(state.step)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
    write_files(&tmp)?;
    let state_path = tmp.join("state.json");
    let json =
        serde_json::to_string_pretty(state).map_err(|e| ckpt_err(&state_path, e.to_string()))?;
    std::fs::write(&state_path, json).map_err(TrainError::io(&state_path))?;
    let mut manifest = BTreeMap::new();
    for entry in std::fs::read_dir(&tmp).map_err(TrainError::io(&tmp))? {
        let entry = entry.map_err(TrainError::io(&tmp))?;
        let name = entry.file_name().to_string_lossy().to_string();
        sync_file(&entry.path())?;
        manifest.insert(name, sha256_file(&entry.path())?);
    }
    let man_path = tmp.join("manifest.json");
    let json =
        serde_json::to_string_pretty(&manifest).map_err(|e| ckpt_err(&man_path, e.to_string()))?;
    std::fs::write(&man_path, json).map_err(TrainError::io(&man_path))?;
    sync_file(&man_path)?;
    sync_dir(&tmp);
    faults.point("checkpoint-rename", state.step);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(TrainError::io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(TrainError::io(&final_dir))?;
    sync_dir(root);
    faults.point("checkpoint-prune", state.step);
    prune(root, keep_last)?;
    Ok(final_dir)
}

/// fsync a file: its bytes are on disk, not only in the page cache, before it is renamed into
/// place (a power cut must not leave a renamed checkpoint with missing data).
fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(TrainError::io(path))
}

/// fsync a directory so a rename is durable (best effort: not every platform allows it).
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Complete checkpoints under `root`, oldest first.
pub fn list(root: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<(usize, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse::<usize>().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn prune(root: &Path, keep_last: usize) -> Result<()> {
    let all = list(root);
    let excess = all.len().saturating_sub(keep_last.max(1));
    for (_, dir) in &all[..excess] {
        std::fs::remove_dir_all(dir).map_err(TrainError::io(dir))?;
    }
    Ok(())
}

/// How many checkpoints a run of `steps` RL steps holds at most at one time: it writes one every
/// `every` steps and after the last, keeping `keep_last`, and the newest is written before the
/// oldest is removed.
pub fn checkpoints_at_once(steps: usize, every: usize, keep_last: usize) -> usize {
    let writes = match every {
        0 => usize::from(steps > 0),
        e => steps / e + usize::from(!steps.is_multiple_of(e)),
    };
    writes.min(keep_last.max(1) + 1)
}

/// Bytes a run's saved models take at most: `checkpoints` checkpoints, each the policy and its
/// two AdamW moments in f32 (twice that with a critic), plus `extra_models` single copies (the
/// frozen reference, the SFT result).
pub fn bytes_needed(
    num_params: usize,
    checkpoints: usize,
    critic: bool,
    extra_models: usize,
) -> u64 {
    let model = num_params as u64 * 4;
    let checkpoint = 3 * model * if critic { 2 } else { 1 };
    checkpoints as u64 * checkpoint + extra_models as u64 * model
}

/// Fails when the file system of `dir` has less than `needed` bytes free: a run should not
/// train for hours and then fail to write its first checkpoint.
pub fn ensure_free_space(dir: &Path, needed: u64) -> Result<()> {
    match free_bytes(dir) {
        Some(free) => check_space(dir, needed, free),
        None => Ok(()), // unknown (not unix): the first write will tell
    }
}

fn check_space(dir: &Path, needed: u64, free: u64) -> Result<()> {
    if free >= needed {
        return Ok(());
    }
    let mb = |b: u64| b.div_ceil(1 << 20);
    Err(ckpt_err(
        dir,
        format!(
            "the run needs about {} MB for its checkpoints but only {} MB are free there: free \
             space, lower checkpoint.keep_last, or choose another logging.run_dir",
            mb(needed),
            mb(free)
        ),
    ))
}

/// Free bytes (for an unprivileged user) on the file system holding `dir`.
#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `st` points to writable memory of the right type.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some), hence the casts.
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// Checks a checkpoint's manifest and reads its state.
pub fn verify(dir: &Path) -> Result<TrainState> {
    let man_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&man_path).map_err(TrainError::io(&man_path))?;
    let manifest: BTreeMap<String, String> =
        serde_json::from_str(&text).map_err(|e| ckpt_err(&man_path, e.to_string()))?;
    for (name, want) in &manifest {
        let got = sha256_file(&dir.join(name))?;
        if &got != want {
            return Err(ckpt_err(dir, format!("{name}: checksum mismatch")));
        }
    }
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(TrainError::io(&state_path))?;
    serde_json::from_str(&text).map_err(|e| ckpt_err(&state_path, e.to_string()))
}

/// The newest checkpoint that verifies; damaged ones are reported and skipped.
pub fn latest_valid(root: &Path) -> Option<(PathBuf, TrainState)> {
    for (_, dir) in list(root).into_iter().rev() {
        match verify(&dir) {
            Ok(state) => return Some((dir, state)),
            Err(e) => tracing::warn!("skipping damaged checkpoint: {e}"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: usize) -> TrainState {
        TrainState {
            step,
            data: ScheduleState {
                seed: 1,
                draws: step as u64,
                batches: 0,
                phase: 0,
                phase_examples: 0,
                phase_batches: 0,
                sources: Default::default(),
            },
            consecutive_skips: 0,
        }
    }

    #[test]
    fn space_check_counts_checkpoints_and_names_the_settings() {
        // 40 steps, a checkpoint every 10, 2 kept: 3 at once (the newest before the oldest goes).
        assert_eq!(checkpoints_at_once(40, 10, 2), 3);
        // 1 step: only the final checkpoint; 25 steps every 10: 10, 20 and the final 25.
        assert_eq!(checkpoints_at_once(1, 10, 1), 1);
        assert_eq!(checkpoints_at_once(25, 10, 5), 3);
        assert_eq!(checkpoints_at_once(25, 0, 5), 1);
        assert_eq!(checkpoints_at_once(0, 10, 5), 0);
        // 1M parameters: 4 MB of weights, 12 MB per checkpoint; 4 checkpoints + the reference.
        assert_eq!(
            bytes_needed(1 << 20, 4, false, 1),
            4 * 12 * (1 << 20) + 4 * (1 << 20)
        );
        assert_eq!(bytes_needed(1 << 20, 2, true, 0), 2 * 24 * (1 << 20));
        let dir = Path::new("/runs/x");
        assert!(check_space(dir, 100, 100).is_ok());
        let e = check_space(dir, 52 << 20, 10 << 20)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "checkpoint /runs/x: the run needs about 52 MB for its checkpoints but only 10 MB are \
             free there: free space, lower checkpoint.keep_last, or choose another logging.run_dir"
        );
        // The real query works on a real directory.
        let tmp = tempfile::tempdir().unwrap();
        assert!(ensure_free_space(tmp.path(), 1).is_ok());
        assert!(ensure_free_space(tmp.path(), u64::MAX).is_err());
    }

    #[test]
    fn atomic_write_keep_last_and_corruption_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        for step in [10, 20, 30] {
            write(&root, &state(step), 2, &FaultPlan::default(), |d| {
                std::fs::write(d.join("policy.bin"), format!("weights {step}"))
                    .map_err(TrainError::io(d))
            })
            .unwrap();
        }
        let steps: Vec<usize> = list(&root).iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, vec![20, 30], "keep_last = 2");
        let (d, st) = latest_valid(&root).unwrap();
        assert_eq!(st.step, 30);
        // Corrupt the newest: the previous one is used.
        std::fs::write(d.join("policy.bin"), "garbage").unwrap();
        assert!(
            verify(&d)
                .unwrap_err()
                .to_string()
                .contains("checksum mismatch")
        );
        let (_, st) = latest_valid(&root).unwrap();
        assert_eq!(st.step, 20);
        // A half-written temporary directory is not a checkpoint.
        std::fs::create_dir_all(root.join("step-000040.tmp")).unwrap();
        assert_eq!(latest_valid(&root).unwrap().1.step, 20);
    }
}
