//! The decoders of the bundle's index and products parts on arbitrary bytes
//! (the parts as they are once their sha256 matched): an error or a value,
//! never a panic; a decoded index must search.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitrine_core::bundle::decode_products;
use vitrine_core::index::{AnnIndex, SearchParams};

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = AnnIndex::from_bytes(data) {
        let query = vec![0.5; index.dim()];
        for category in [None, Some(0), Some(1)] {
            index
                .search(&query, 5, category, &SearchParams { exact_category_below: 0, ..SearchParams::default() })
                .expect("a decoded index searches");
        }
    }
    let _ = decode_products(data);
});
