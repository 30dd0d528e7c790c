//! Task datasets (filled below).
