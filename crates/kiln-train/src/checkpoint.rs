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

/// Loads a burnpack module record into `module` (parameter ids restored from the file).
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M> {
    let record =
        ModuleRecord::load(path).map_err(|e| ckpt_err(path, format!("reading module: {e:?}")))?;
    module
        .try_load_record(record)
        .map_err(|e| ckpt_err(path, format!("applying module: {e:?}")))
}

/// Writes a checkpoint atomically. `write_files` fills the temporary directory (it is given
/// its path); then `state.json` and the manifest are added and the directory is renamed.
/// Older checkpoints beyond `keep_last` are removed afterwards.
pub fn write(
    root: &Path,
    state: &TrainState,
    keep_last: usize,
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
        manifest.insert(name, sha256_file(&entry.path())?);
    }
    let man_path = tmp.join("manifest.json");
    let json =
        serde_json::to_string_pretty(&manifest).map_err(|e| ckpt_err(&man_path, e.to_string()))?;
    std::fs::write(&man_path, json).map_err(TrainError::io(&man_path))?;
    sync_dir(&tmp);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(TrainError::io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(TrainError::io(&final_dir))?;
    sync_dir(root);
    prune(root, keep_last)?;
    Ok(final_dir)
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
    fn atomic_write_keep_last_and_corruption_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        for step in [10, 20, 30] {
            write(&root, &state(step), 2, |d| {
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
