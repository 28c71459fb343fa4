//! Metrics sinks: what a training run leaves behind for the researcher reading it.
//!
//! The trainer creates one [`MetricsSink`] on its run directory and calls [`MetricsSink::log`]
//! once per step with a map of slash-separated keys (`reward/mean`, `actor/kl`,
//! `eval/countdown/accuracy`, ...). The run directory then holds:
//!
//! ```text
//! <run_dir>/
//!   metrics.jsonl            one JSON object per log call, the record of truth:
//!                            {"step":12,"time":1718000000.5,"actor/kl":0.0031,"reward/mean":0.42}
//!                            (non-finite values are written as null)
//!   tb/
//!     events.out.tfevents.<unix_secs>.<host>
//!                            TensorBoard scalars, one file per start or resume of the run:
//!                            `tensorboard --logdir <run_dir>/tb` (or a parent of many runs)
//!   plots/                   PNG charts, redrawn by MetricsSink::refresh_plots
//!     reward.png  accuracy.png  entropy.png  response_length.png  kl.png  grad_norm.png
//!     logprob_gap.png        (a panel appears once one of its keys has data; see plot::PANELS)
//!     overview.png           all of the above in one grid
//! ```
//!
//! Resuming: `MetricsSink::create(run_dir, Some(step))` with the step of the checkpoint resumed
//! from drops the `metrics.jsonl` lines of later steps (they are about to be redone), reloads
//! the rest so plots cover the whole run, and starts a new TensorBoard file whose first event
//! tells TensorBoard to discard the older files' points after `step`.
//!
//! [`read_metrics_jsonl`] reads a run's metrics back (tests, reports, resume).

pub mod heatmap;
mod jsonl;
pub mod plot;
pub mod tensorboard;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use jsonl::{Record, read_metrics_jsonl};
pub use plot::{PANELS, Panel, PlotOptions, plot_panels, plot_series, plot_series_with};

use tensorboard::TbWriter;

/// File name of the metrics log inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Directory of TensorBoard event files inside a run directory.
pub const TENSORBOARD_DIR: &str = "tb";
/// Directory of PNG plots inside a run directory.
pub const PLOTS_DIR: &str = "plots";

/// What went wrong, and with which file.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: line {line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: drawing the plot failed: {message}", path.display())]
    Plot { path: PathBuf, message: String },
    #[error("metric key {key:?} (step {step}): {reason}")]
    BadKey {
        key: String,
        step: u64,
        reason: &'static str,
    },
    #[error(
        "{}: already holds metrics of an earlier run; resume it (resume_from_step) or use a \
         fresh run directory",
        path.display()
    )]
    ExistingRun { path: PathBuf },
}

impl MetricsError {
    fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

/// Per-key `(step, value)` points, in logging order.
pub type History = BTreeMap<String, Vec<(u64, f64)>>;

/// Writes a run's metrics to `metrics.jsonl`, TensorBoard and PNG plots.
pub struct MetricsSink {
    run_dir: PathBuf,
    jsonl_path: PathBuf,
    jsonl: File,
    tb: TbWriter,
    history: History,
}

impl MetricsSink {
    /// Opens the sinks of `run_dir` (created if missing).
    ///
    /// `resume_from_step`: `None` for a new run — an existing non-empty `metrics.jsonl` is then an
    /// error ([`MetricsError::ExistingRun`]) rather than silently mixed with or overwritten. `Some(s)`
    /// when resuming from the checkpoint of step `s`: lines with step > `s` are dropped (the file
    /// is rewritten atomically), the rest is loaded into the history, and a new TensorBoard event
    /// file is started. `Some(0)` restarts a run from scratch, keeping only step-0 lines (e.g. an
    /// evaluation of the initial model).
    pub fn create(run_dir: &Path, resume_from_step: Option<u64>) -> Result<Self, MetricsError> {
        fs::create_dir_all(run_dir)
            .map_err(|e| MetricsError::io(run_dir, "creating run directory", e))?;
        let jsonl_path = run_dir.join(METRICS_FILE);
        let records = match resume_from_step {
            None => {
                let has_data = fs::metadata(&jsonl_path).is_ok_and(|m| m.len() > 0);
                if has_data {
                    return Err(MetricsError::ExistingRun { path: jsonl_path });
                }
                Vec::new()
            }
            Some(step) if jsonl_path.exists() => jsonl::truncate_after(&jsonl_path, step)?,
            Some(step) => {
                tracing::warn!(
                    "resuming from step {step} but {} does not exist: starting it empty",
                    jsonl_path.display()
                );
                Vec::new()
            }
        };
        let jsonl = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jsonl_path)
            .map_err(|e| MetricsError::io(&jsonl_path, "opening for append", e))?;
        let tb = TbWriter::create(
            &run_dir.join(TENSORBOARD_DIR),
            resume_from_step.map(|s| s.saturating_add(1)),
        )?;
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
            jsonl_path,
            jsonl,
            tb,
            history: history_from_records(records),
        })
    }

    /// Records `metrics` for `step`: one `metrics.jsonl` line, one TensorBoard event, and the
    /// in-memory history. Several calls for the same step (train metrics, then eval metrics) are
    /// fine. Keys must be non-empty and not `step` or `time`; nothing is written otherwise.
    /// Data reaches the OS before this returns (see [`Self::flush`] for the disk).
    pub fn log(&mut self, step: u64, metrics: &BTreeMap<String, f64>) -> Result<(), MetricsError> {
        for key in metrics.keys() {
            let reason = if key.is_empty() {
                "is empty"
            } else if jsonl::RESERVED_KEYS.contains(&key.as_str()) {
                "is reserved for the line's own fields (step, time)"
            } else {
                continue;
            };
            return Err(MetricsError::BadKey {
                key: key.clone(),
                step,
                reason,
            });
        }
        let time = tensorboard::wall_time();
        self.jsonl
            .write_all(jsonl::format_line(step, time, metrics).as_bytes())
            .map_err(|e| MetricsError::io(&self.jsonl_path, "appending", e))?;
        self.tb
            .write_scalars(step, time, metrics.iter().map(|(k, v)| (k.as_str(), *v)))?;
        self.tb.flush_to(false)?;
        for (key, value) in metrics {
            self.history
                .entry(key.clone())
                .or_default()
                .push((step, *value));
        }
        Ok(())
    }

    /// Redraws every plot under `run_dir/plots/` from the whole history.
    pub fn refresh_plots(&self) -> Result<(), MetricsError> {
        let dir = self.run_dir.join(PLOTS_DIR);
        plot_panels(&dir, &self.history)?;
        heatmap::plot_conflict_heatmap(&dir, &self.history)?;
        Ok(())
    }

    /// Makes everything logged so far durable on disk (call at checkpoints and at the end).
    pub fn flush(&mut self) -> Result<(), MetricsError> {
        self.jsonl
            .sync_data()
            .map_err(|e| MetricsError::io(&self.jsonl_path, "syncing", e))?;
        self.tb.flush_to(true)
    }

    /// Every logged point by key, including those reloaded on resume. Non-finite values are kept.
    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The TensorBoard event file this sink writes.
    pub fn tensorboard_file(&self) -> &Path {
        self.tb.path()
    }
}

/// Regroups metrics records (e.g. from [`read_metrics_jsonl`]) by key, for plotting.
pub fn history_from_records(records: impl IntoIterator<Item = Record>) -> History {
    let mut history = History::new();
    for (step, metrics) in records {
        for (key, value) in metrics {
            history.entry(key).or_default().push((step, value));
        }
    }
    history
}

/// Writes `path` through a temp file in the same directory + rename, so that readers (and a
/// crash) see either the old content or the new one, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), MetricsError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        MetricsError::io(path, "writing (temp file + rename)", e)
    })
}

#[cfg(test)]
mod tests {
    use super::tensorboard::tests::read_events;
    use super::*;

    fn metrics(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    fn same(a: f64, b: f64) -> bool {
        a == b || (a.is_nan() && b.is_nan())
    }

    fn tb_files(run_dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = fs::read_dir(run_dir.join(TENSORBOARD_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn jsonl_round_trip_with_nan_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let logged = vec![
            (1, metrics(&[("reward/mean", 0.25), ("actor/kl", 1e-4)])),
            (
                2,
                metrics(&[("reward/mean", f64::NAN), ("actor/grad_norm", 1e300)]),
            ),
            (3, metrics(&[("reward/mean", f64::INFINITY)])),
            (3, metrics(&[("eval/math/accuracy", 0.5)])),
        ];
        let mut sink = MetricsSink::create(dir.path(), None).unwrap();
        for (step, m) in &logged {
            sink.log(*step, m).unwrap();
        }
        sink.flush().unwrap();

        let text = fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("\"reward/mean\":null"), "{text}");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["time"].as_f64().unwrap() > 1.0e9);
        }

        let read = read_metrics_jsonl(&dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(read.len(), logged.len());
        for ((s1, m1), (s2, m2)) in read.iter().zip(&logged) {
            assert_eq!(s1, s2);
            assert_eq!(m1.keys().collect::<Vec<_>>(), m2.keys().collect::<Vec<_>>());
            for (k, v) in m2 {
                // Infinity is written as null too, so it comes back as NaN.
                let want = if v.is_finite() { *v } else { f64::NAN };
                assert!(same(m1[k], want), "{k}: {} vs {want}", m1[k]);
            }
        }
        assert_eq!(sink.history()["reward/mean"].len(), 3);

        // TensorBoard got the same scalars.
        let events = read_events(sink.tensorboard_file());
        assert_eq!(events.len(), 5); // file version + 4 logs
        assert_eq!(events[1].step, 1);
        assert_eq!(events[1].scalars[0], ("actor/kl".to_string(), 1e-4_f32));
        assert_eq!(events[4].scalars[0].0, "eval/math/accuracy");
    }

    #[test]
    fn resume_truncates_later_steps_and_reloads_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        {
            let mut sink = MetricsSink::create(dir.path(), None).unwrap();
            for step in 1..=5 {
                sink.log(step, &metrics(&[("reward/mean", step as f64)]))
                    .unwrap();
            }
        }
        // A crash mid-write leaves half a line behind.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"step\":6,\"time\":17")
            .unwrap();

        let mut sink = MetricsSink::create(dir.path(), Some(3)).unwrap();
        let steps: Vec<u64> = sink.history()["reward/mean"].iter().map(|p| p.0).collect();
        assert_eq!(steps, [1, 2, 3]);
        sink.log(4, &metrics(&[("reward/mean", 40.0)])).unwrap();
        let read = read_metrics_jsonl(&path).unwrap();
        let got: Vec<(u64, f64)> = read.iter().map(|(s, m)| (*s, m["reward/mean"])).collect();
        assert_eq!(got, [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]);
        assert!(!dir.path().join("metrics.jsonl.tmp").exists());

        // A second event file, read after the first, that restarts TensorBoard's view at step 4.
        let files = tb_files(dir.path());
        assert_eq!(files.len(), 2);
        assert_eq!(files[1], sink.tensorboard_file());
        let events = read_events(&files[1]);
        assert!(events[1].session_start);
        assert_eq!(events[1].step, 4);
        assert_eq!(events[2].scalars, [("reward/mean".to_string(), 40.0)]);

        // Resuming past the end keeps everything; resuming without a file starts empty.
        drop(sink);
        let sink = MetricsSink::create(dir.path(), Some(100)).unwrap();
        assert_eq!(sink.history()["reward/mean"].len(), 4);
        let fresh = tempfile::tempdir().unwrap();
        assert!(
            MetricsSink::create(fresh.path(), Some(3))
                .unwrap()
                .history()
                .is_empty()
        );
    }

    #[test]
    fn new_run_refuses_an_existing_metrics_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = MetricsSink::create(dir.path(), None).unwrap();
        sink.log(1, &metrics(&[("a", 1.0)])).unwrap();
        drop(sink);
        let err = MetricsSink::create(dir.path(), None).err().unwrap();
        assert!(matches!(err, MetricsError::ExistingRun { .. }));
        assert!(err.to_string().contains(METRICS_FILE), "{err}");
        // Restart from scratch: only step-0 lines would survive.
        let sink = MetricsSink::create(dir.path(), Some(0)).unwrap();
        assert!(sink.history().is_empty());
    }

    #[test]
    fn bad_keys_are_rejected_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = MetricsSink::create(dir.path(), None).unwrap();
        for key in ["step", "time", ""] {
            let err = sink
                .log(1, &metrics(&[("a", 1.0), (key, 2.0)]))
                .unwrap_err();
            assert!(matches!(err, MetricsError::BadKey { .. }), "{err}");
        }
        assert!(sink.history().is_empty());
        assert_eq!(
            fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap(),
            ""
        );
        // An empty map still records the step.
        sink.log(1, &BTreeMap::new()).unwrap();
        assert_eq!(
            read_metrics_jsonl(&dir.path().join(METRICS_FILE))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn refresh_plots_draws_the_panels_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = MetricsSink::create(dir.path(), None).unwrap();
        sink.refresh_plots().unwrap(); // nothing logged: nothing drawn, no error
        for step in 0..30u64 {
            let x = step as f64;
            let mut m = metrics(&[
                ("reward/mean", (x / 10.0).tanh()),
                ("reward/correct", x / 30.0),
                ("actor/entropy", 1.0 / (1.0 + x)),
                ("actor/kl", if step == 7 { f64::NAN } else { 0.01 * x }),
                ("actor/grad_norm", 1.0),
                ("response_length/mean", 200.0 + x),
                ("rollout/logprob_abs_diff", 1e-6),
            ]);
            if step % 10 == 0 {
                m.insert("eval/arithmetic/accuracy".into(), x / 40.0);
                m.insert("eval/countdown/accuracy".into(), x / 60.0);
            }
            sink.log(step, &m).unwrap();
        }
        sink.refresh_plots().unwrap();
        let plots = dir.path().join(PLOTS_DIR);
        for panel in PANELS {
            plot::tests::assert_real_png(&plots.join(panel.file), (900, 540));
        }
        plot::tests::assert_real_png(&plots.join(plot::OVERVIEW_FILE), (1920, 1200));
    }
}
