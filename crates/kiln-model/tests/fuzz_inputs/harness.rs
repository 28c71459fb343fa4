//! The fuzz harness: the allocation cap, time bounds, case counts, scratch files, the corpus.

use super::*;

/// No single allocation made while parsing a small file may exceed this.
pub const ALLOC_CAP: usize = 1 << 30;

/// The system allocator, refusing requests over [`ALLOC_CAP`] (Rust then aborts the process).
pub struct CappedAlloc;

// SAFETY: every call is forwarded unchanged to `System`, or answered with null (allowed: it
// means "out of memory").
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CAP {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
pub static ALLOCATOR: CappedAlloc = CappedAlloc;

/// Wall-clock bound of one case on a loaded 2-core machine (cases take milliseconds).
pub const SLOW: Duration = Duration::from_secs(5);
/// A case running this long is a hang: the watchdog reports it and ends the process.
pub const HANG: Duration = Duration::from_secs(60);

pub fn case_count(default: u32) -> u32 {
    std::env::var("KILN_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A per-target temporary directory for the files a case writes; removed on drop (kept after a
/// crash, so the input that crashed can be inspected).
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(target: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kiln-fuzz-{target}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Keeps a description of the current input (for inputs that are not files), so a case that
    /// hangs or aborts the process can be found.
    pub fn note(&self, input: &dyn std::fmt::Debug) {
        let _ = std::fs::write(self.path("input.txt"), format!("{input:#?}\n"));
    }

    /// A fresh subdirectory `name` (emptied if it exists).
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.0.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create a scratch subdirectory");
        d
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The random seed of the fuzz run: fixed, so CI explores the same inputs on every run and a
/// failure there is reproducible; `KILN_FUZZ_SEED=<u64>` explores others (what a long local
/// session should do).
pub fn rng_seed() -> RngSeed {
    let seed = std::env::var("KILN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b69_6c6e);
    RngSeed::Fixed(seed)
}

/// Runs `case` on `cases` inputs drawn from `strategy` (proptest, with failure persistence and
/// shrinking), each within [`SLOW`], and prints the number of executions.
pub fn fuzz<S>(
    target: &'static str,
    default_cases: u32,
    strategy: S,
    case: impl Fn(&Scratch, S::Value),
) where
    S: Strategy,
{
    let scratch = Scratch::new(target);
    let mut runner = TestRunner::new(Config {
        cases: case_count(default_cases),
        source_file: Some(crate::SOURCE),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        max_shrink_iters: 1000,
        rng_seed: rng_seed(),
        ..Config::default()
    });
    // The watchdog: a case that runs for HANG ends the process (a hang never returns).
    let started = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (started, done) = (started.clone(), done.clone());
        let dir = scratch.0.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let s = started.load(Ordering::Relaxed);
                if s != 0 && now_ms().saturating_sub(s) > HANG.as_millis() as u64 {
                    eprintln!(
                        "fuzz {target}: a case has run for over {HANG:?} (a hang); its files are in {}",
                        dir.display()
                    );
                    std::process::exit(3);
                }
            }
        })
    };
    let executions = Cell::new(0u64);
    let t0 = Instant::now();
    let result = runner.run(&strategy, |value| {
        executions.set(executions.get() + 1);
        started.store(now_ms(), Ordering::Relaxed);
        let t = Instant::now();
        case(&scratch, value);
        let took = t.elapsed();
        started.store(0, Ordering::Relaxed);
        prop_assert!(took < SLOW, "one case took {took:?}");
        Ok(())
    });
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    eprintln!(
        "fuzz {target}: {} executions in {:.1?}",
        executions.get(),
        t0.elapsed()
    );
    if let Err(e) = result {
        panic!("fuzz {target}: {e}");
    }
}

/// Asserts an error message is not empty and names `what` (the file or directory).
pub fn assert_names(err: &dyn std::fmt::Display, what: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(what),
        "the error does not name {what:?}: {msg}"
    );
}

pub fn device() -> Device {
    Device::flex()
}

// ---------------------------------------------------------------------------------------------
// The seed corpus.

pub fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target)
}

/// Files as (name, bytes).
pub type Files = Vec<(String, Vec<u8>)>;

/// The files of `corpus/target` (sorted), read.
pub fn corpus_files(target: &str) -> Files {
    let mut files: Files = std::fs::read_dir(corpus(target))
        .unwrap_or_else(|e| panic!("{}: {e}", corpus(target).display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no seeds in {}",
        corpus(target).display()
    );
    files
}

/// The subdirectories of `corpus/target`, each as its files.
pub fn corpus_dirs(target: &str) -> Vec<(String, Files)> {
    let mut dirs: Vec<String> = std::fs::read_dir(corpus(target))
        .unwrap_or_else(|e| panic!("{}: {e}", corpus(target).display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no seeds in {}", corpus(target).display());
    dirs.into_iter()
        .map(|d| {
            let files = corpus_files(&format!("{target}/{d}"));
            (d, files)
        })
        .collect()
}

pub fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("write a scratch file");
    }
}
