//! `TagStamp`: the versions of some tags read before a value is computed, handed back to
//! the write that stores the value (the `async` paths of `get_or_set`, `get_or_set_with`
//! and `@cached`, which run the computation in Python between the two native calls).

use pyo3::prelude::*;

/// The versions some tags had when it was read; opaque. A value stored with it reads as a
/// miss once any of the tags is invalidated after the read.
#[pyclass(frozen, module = "polycache._polycache", name = "TagStamp")]
pub(crate) struct PyTagStamp(pub(crate) polycache::TagStamp);

#[pymethods]
impl PyTagStamp {
    /// The tags of the stamp.
    #[getter]
    fn tags(&self) -> Vec<String> {
        self.0.tags().map(str::to_owned).collect()
    }

    fn __repr__(&self) -> String {
        format!("<TagStamp of {:?}>", self.tags())
    }
}
