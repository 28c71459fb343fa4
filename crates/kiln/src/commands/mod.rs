pub mod bench;
pub mod eval;
pub mod export;
pub mod generate;
pub mod plot;
pub mod rm_train;
pub mod rollout_bench;
pub mod score;
pub mod score_bench;
pub mod train;
pub mod train_bench;

/// Peak resident memory of this process in MiB (Linux: VmHWM), if known.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
