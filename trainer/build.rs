//! Makes the trainer's binaries and tests find libtorch without LD_LIBRARY_PATH,
//! and compiles the trainer's small C++ shim over libtorch.
//!
//! torch-sys (a direct dependency, `links = "tch"`) publishes the folder of the
//! libtorch it linked as `DEP_TCH_LIBTORCH_LIB`; it goes into the run path of
//! everything this package links. The `vitrine-tests` package reuses this script
//! for the run path only: the shim comes to it with the trainer library.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    if os == "linux" || os == "macos" {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("vitrine-trainer") {
        compile_autocast_shim(std::path::Path::new(&lib_dir));
        record_commit();
    }
}

include!("build_commit.rs");

/// libtorch's per-device autocast type, which tch does not expose (see csrc/autocast.cpp).
fn compile_autocast_shim(lib_dir: &std::path::Path) {
    let source = "csrc/autocast.cpp";
    println!("cargo:rerun-if-changed={source}");
    let include = lib_dir.parent().expect("libtorch's lib folder has a parent").join("include");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include(include)
        // libtorch 2.x is built with the C++11 ABI.
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .file(source)
        .compile("vitrine_autocast");
}
