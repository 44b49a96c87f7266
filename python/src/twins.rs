//! `twins!`: each cache operation's sync method and its awaitable `a`-twin from one entry.
//!
//! A class lists its operations as a table, one entry each: the two Python names, the
//! parameters (after `slf` and `how`, the [`How`](crate::ops::How) of the call), the Python
//! signature and a body that builds the request and hands it to
//! [`Core::answer`](crate::ops::Core::answer), mostly through one of the class's shared
//! helpers. `twins!` declares the class's `#[pymethods]` block, with the two Python methods
//! of every entry (same signature; the `a`-twin raises from its await, never from the call,
//! see [`raising_on_await`](crate::awaitable::raising_on_await)) and the class's other
//! methods as written. A body is compiled into both methods, so a long one belongs in a
//! helper the entry calls.

/// See the module documentation.
macro_rules! twins {
    (
        impl $ty:ident {
            $(
                $(#[doc = $doc:literal])*
                twins $sync:ident / $async:ident <$py:lifetime> ($slf:ident, $how:ident $(, $arg:ident : $argty:ty)*)
                    signature ($($sig:tt)*)
                    { $($body:tt)* }
            )*
            @methods
            $($rest:tt)*
        }
    ) => {
        #[pyo3::pymethods]
        impl $ty {
            $(
                $(#[doc = $doc])*
                #[pyo3(signature = ($($sig)*))]
                // Each Python argument is one parameter (`set` with all its flags has 8).
                #[allow(clippy::too_many_arguments)]
                fn $sync<$py>(
                    $slf: &pyo3::Bound<$py, Self>,
                    $($arg: $argty),*
                ) -> pyo3::PyResult<pyo3::Bound<$py, pyo3::PyAny>> {
                    let $how = $crate::ops::How::Sync;
                    $($body)*
                }

                #[doc = concat!("`", stringify!($sync), "`, awaitable.")]
                #[pyo3(signature = ($($sig)*))]
                #[allow(clippy::too_many_arguments)]
                fn $async<$py>(
                    $slf: &pyo3::Bound<$py, Self>,
                    $($arg: $argty),*
                ) -> pyo3::PyResult<pyo3::Bound<$py, pyo3::PyAny>> {
                    let $how = $crate::ops::How::Async;
                    // A closure, so that an argument's error (`?` in the body) reaches the
                    // awaitable instead of leaving the call.
                    #[allow(clippy::redundant_closure_call)]
                    let answer = (|| -> pyo3::PyResult<pyo3::Bound<$py, pyo3::PyAny>> { $($body)* })();
                    $crate::awaitable::raising_on_await($slf.py(), answer)
                }
            )*

            $($rest)*
        }
    };
}
