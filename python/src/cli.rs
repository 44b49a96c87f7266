//! `cli_main`: the `polycache` command-line tool (crate `polycache-cli`) for the console
//! script, so `pip install polycache` and the Rust binary run the same code.

use crate::logbridge::detach;
use pyo3::prelude::*;
use std::ffi::OsString;

/// Runs the `polycache` command line on `argv` (the program name first, as `sys.argv`),
/// writing to the process' standard output and error; returns the exit code.
///
/// Python's own `sys.stdout` is not used: flush it before calling.
#[pyfunction]
pub(crate) fn cli_main(py: Python<'_>, argv: Vec<OsString>) -> i32 {
    // Network and disk work: no Python object is touched while the GIL is released.
    detach(py, move || {
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        polycache_cli::run(argv, &mut stdout.lock(), &mut stderr.lock())
    })
}
