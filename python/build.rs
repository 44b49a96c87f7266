//! Sets the `Py_3_X` cfgs of the interpreter the module is built for, as PyO3 does, so that
//! code for a newer CPython's C API (the `am_send` slot, 3.10+) is left out on older ones.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
