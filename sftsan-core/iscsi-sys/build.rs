//! Links libiscsi through pkg-config (Debian: `libiscsi-dev`, which ships `libiscsi.pc`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("1.19")
        .probe("libiscsi")
    {
        panic!(
            "libiscsi (>= 1.19) was not found through pkg-config: {e}\n\
             On Debian install it with: apt-get install libiscsi-dev pkg-config"
        );
    }
}
