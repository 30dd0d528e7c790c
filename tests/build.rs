//! Makes the trainer's binaries and tests find libtorch without LD_LIBRARY_PATH.
//!
//! torch-sys (a direct dependency, `links = "tch"`) publishes the folder of the
//! libtorch it linked as `DEP_TCH_LIBTORCH_LIB`; it goes into the run path of
//! everything this package links.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        if os == "linux" || os == "macos" {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
