//! A per-sample time budget, kept in a thread-local deadline.
//!
//! Verifiers call [`scope`] around their work; loops in the parsers call [`check`], which fails
//! once the budget is spent. The budget counts the CPU time of the scoring thread (so a sample
//! is not failed because the machine is busy and the thread was descheduled), with a wall-clock
//! safety net at [`WALL_FACTOR`] times the budget. Nested scopes keep the outermost deadline, so
//! a [`crate::Combined`] or [`crate::score_batch`] budget covers all the work done for one sample.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The default time budget of one sample.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(50);
/// The wall-clock limit is this many budgets.
pub const WALL_FACTOR: u32 = 10;

#[derive(Clone, Copy, Debug)]
struct Deadline {
    cpu: Duration,
    wall: Instant,
}

thread_local! {
    static DEADLINE: Cell<Option<Deadline>> = const { Cell::new(None) };
    static TICKS: Cell<u32> = const { Cell::new(0) };
}

/// CPU time consumed by the calling thread.
#[cfg(unix)]
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return fallback_clock();
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time consumed by the calling thread (wall time since first use where unsupported).
#[cfg(not(unix))]
pub fn thread_cpu_time() -> Duration {
    fallback_clock()
}

fn fallback_clock() -> Duration {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// The time budget ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("time budget exceeded")]
pub struct Exceeded;

struct Restore(Option<Deadline>);
impl Drop for Restore {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.0));
    }
}

/// Runs `f` with a budget from now, unless an outer scope already set one.
pub fn scope<R>(budget: Duration, f: impl FnOnce() -> R) -> R {
    if DEADLINE.with(|d| d.get()).is_some() {
        return f();
    }
    scope_from(budget, thread_cpu_time(), Instant::now(), f)
}

/// Like [`scope`], counting from clock readings the caller already took (saves a clock read).
pub fn scope_from<R>(
    budget: Duration,
    cpu_start: Duration,
    wall_start: Instant,
    f: impl FnOnce() -> R,
) -> R {
    let prev = DEADLINE.with(|d| d.get());
    if prev.is_some() {
        return f();
    }
    let _restore = Restore(prev);
    let deadline = Deadline {
        cpu: cpu_start + budget,
        wall: wall_start + budget * WALL_FACTOR,
    };
    DEADLINE.with(|d| d.set(Some(deadline)));
    f()
}

/// Fails when the current budget is spent. Cheap: it reads the clocks every 32 calls.
#[inline]
pub fn check() -> Result<(), Exceeded> {
    let t = TICKS.with(|t| {
        let v = t.get().wrapping_add(1);
        t.set(v);
        v
    });
    if !t.is_multiple_of(32) {
        return Ok(());
    }
    check_now()
}

/// Like [`check`], but always reads the clocks.
pub fn check_now() -> Result<(), Exceeded> {
    match DEADLINE.with(|d| d.get()) {
        Some(d) if thread_cpu_time() >= d.cpu || Instant::now() >= d.wall => Err(Exceeded),
        _ => Ok(()),
    }
}

/// Burns CPU for `d` (tests of the budget).
#[doc(hidden)]
pub fn spin_for(d: Duration) {
    let end = thread_cpu_time() + d;
    while thread_cpu_time() < end {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_fires_and_is_restored() {
        let r = scope(Duration::from_millis(5), || {
            spin_for(Duration::from_millis(10));
            check_now()
        });
        assert_eq!(r, Err(Exceeded));
        // Outside any scope there is no deadline.
        assert_eq!(check_now(), Ok(()));
        // The outer deadline wins over an inner one.
        let r = scope(Duration::from_secs(60), || {
            scope(Duration::from_millis(1), || {
                spin_for(Duration::from_millis(5));
                check_now()
            })
        });
        assert_eq!(r, Ok(()));
        // Sleeping is not CPU time: within the wall-clock net it does not spend the budget.
        let r = scope(Duration::from_millis(20), || {
            std::thread::sleep(Duration::from_millis(40));
            check_now()
        });
        assert_eq!(r, Ok(()));
        // Past the wall-clock net it does.
        let r = scope(Duration::from_millis(2), || {
            std::thread::sleep(Duration::from_millis(2 * WALL_FACTOR as u64 + 10));
            check_now()
        });
        assert_eq!(r, Err(Exceeded));
    }
}
