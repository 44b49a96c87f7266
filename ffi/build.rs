//! Gives libpolycache.so its soname on Linux, so that programs linked against it record the
//! ABI they were built for: `libpolycache.so.0.<minor>` while the version is 0.x (every 0.x
//! minor release may change the ABI), `libpolycache.so.<major>` from 1.0 on.
//! `make install` installs the file under that name with the usual symlinks.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        return;
    }
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_default();
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").unwrap_or_default();
    let abi = if major == "0" {
        format!("0.{minor}")
    } else {
        major
    };
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libpolycache.so.{abi}");
}
