//! `default_data_dir()` and `$KILN_DATA_DIR`. Its own test binary: it changes the environment.

use kiln_data::{DATA_DIR_ENV, DataError, default_data_dir};

#[test]
fn data_dir_env_var() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe { std::env::set_var(DATA_DIR_ENV, "/nonexistent/kiln-data-dir") };
    let err = default_data_dir().unwrap_err();
    assert!(matches!(err, DataError::DataDirNotFound { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("KILN_DATA_DIR=/nonexistent/kiln-data-dir (not a directory)"),
        "{msg}"
    );

    unsafe { std::env::set_var(DATA_DIR_ENV, &workspace) };
    assert_eq!(default_data_dir().unwrap(), workspace);

    unsafe { std::env::remove_var(DATA_DIR_ENV) };
    if workspace.is_dir() {
        let d = default_data_dir().unwrap();
        assert!(d.join("math500/test.jsonl").is_file(), "{}", d.display());
    }
}
