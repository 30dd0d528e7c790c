//! Generated catalog.
