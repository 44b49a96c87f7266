//! `twins!`: each cache operation's sync method and its awaitable `a`-twin from one line.
//!
//! A class writes an operation once, as `fn do_x(slf, how, args…)` that builds the request
//! and hands it to [`Core::answer`](crate::ops::Core::answer) with [`How`](crate::ops::How);
//! `twins!` declares the class's `#[pymethods]` block, with the two Python methods of every
//! listed operation (same signature; the `a`-twin raises from its await, never from the call,
//! see [`raising_on_await`](crate::awaitable::raising_on_await)) and the class's other
//! methods as written.

/// See the module documentation.
macro_rules! twins {
    (
        impl $ty:ident {
            $(
                $(#[doc = $doc:literal])*
                twins $sync:ident / $async:ident = $op:ident <$py:lifetime> ($slf:ident $(, $arg:ident : $argty:ty)*)
                    signature ($($sig:tt)*);
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
                    Self::$op($slf, $crate::ops::How::Sync, $($arg),*)
                }

                #[doc = concat!("`", stringify!($sync), "`, awaitable.")]
                #[pyo3(signature = ($($sig)*))]
                #[allow(clippy::too_many_arguments)]
                fn $async<$py>(
                    $slf: &pyo3::Bound<$py, Self>,
                    $($arg: $argty),*
                ) -> pyo3::PyResult<pyo3::Bound<$py, pyo3::PyAny>> {
                    let answer = Self::$op($slf, $crate::ops::How::Async, $($arg),*);
                    $crate::awaitable::raising_on_await($slf.py(), answer)
                }
            )*

            $($rest)*
        }
    };
}
