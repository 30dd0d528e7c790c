//! Records the commit the binary is built from (`VITRINE_COMMIT`, for the
//! nightly audit record); "unknown" outside a git checkout.

include!("../trainer/build_commit.rs");

fn main() {
    record_commit();
}
