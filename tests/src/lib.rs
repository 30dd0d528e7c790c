//! Tests across vitrine's crates live in `tests/`; this library is empty.
