//! include/polycache.h is generated from ffi/src by the pinned cbindgen and committed; this
//! test fails when the committed file is stale, and rewrites it when asked to.

use std::path::Path;

#[test]
fn header_is_up_to_date() {
    let ffi_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header_path = ffi_dir.join("../include/polycache.h");
    let config =
        cbindgen::Config::from_file(ffi_dir.join("cbindgen.toml")).expect("ffi/cbindgen.toml");
    // with_src parses lib.rs and the modules it declares, without running `cargo metadata`.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(ffi_dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen could not generate the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);

    if std::env::var_os("POLYCACHE_UPDATE_HEADER").is_some_and(|v| v == "1") {
        std::fs::write(&header_path, &generated).expect("could not write include/polycache.h");
        eprintln!("wrote {}", header_path.display());
        return;
    }

    let committed = std::fs::read(&header_path).unwrap_or_default();
    if committed != generated {
        let first_diff = committed
            .split(|&b| b == b'\n')
            .zip(generated.split(|&b| b == b'\n'))
            .position(|(a, b)| a != b)
            .map_or_else(
                || "at the end".to_owned(),
                |i| format!("from line {}", i + 1),
            );
        panic!(
            "include/polycache.h is stale (it differs from what ffi/src generates {first_diff}).\n\
             Regenerate it with:\n\n    make header\n\n\
             (which runs `POLYCACHE_UPDATE_HEADER=1 cargo test -p polycache-ffi --test header`), \
             then commit include/polycache.h."
        );
    }
}
