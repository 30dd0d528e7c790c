//! Code shared by the trainer's integration tests.

pub mod efficientnet_inputs;
