//! Generates the C header from this crate's source into OUT_DIR/sftsan.h. The committed
//! copy, include/sftsan.h, is compared with it by tests/header.rs.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let config_path = dir.join("cbindgen.toml");
    println!("cargo:rerun-if-changed={}", config_path.display());
    println!("cargo:rerun-if-changed={}", dir.join("src").display());
    let config = cbindgen::Config::from_file(&config_path)
        .unwrap_or_else(|e| panic!("{}: {e}", config_path.display()));
    // with_src parses src/ alone (following `mod` items), without running `cargo metadata`.
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src").join("lib.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen: {e}"))
        .write_to_file(out.join("sftsan.h"));
}
