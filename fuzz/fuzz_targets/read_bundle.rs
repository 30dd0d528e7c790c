//! The single-file bundle reader on arbitrary bytes: it must return an error
//! or a bundle whose index searches, and never panic, hang or allocate far
//! beyond its input. A changed part fails its sha256 here; `decode_parts`
//! fuzzes the decoders behind that check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitrine_core::bundle::{Bundle, Limits};
use vitrine_core::index::SearchParams;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_total_bytes: 4 << 20, max_manifest_bytes: 256 << 10 };
    if let Ok(bundle) = Bundle::from_single_file(data, &limits) {
        let index = &bundle.contents.index;
        let query = vec![0.5; index.dim()];
        index.search(&query, 5, None, &SearchParams::default()).expect("a read index searches");
        index.search(&query, 5, Some(1), &SearchParams::default()).expect("a read index searches by category");
    }
});
