//! The monitor as a library: the pipeline stages, so tests and replay use them without the binary.
//!
//! kernel probes -> ring buffer -> [`event::decode`] -> [`process_tree`] -> [`event::Event`] -> output

pub mod agent;
pub mod doctor;
pub mod event;
pub mod kernel_layout;
pub mod probes;
pub mod process_tree;
pub mod redact;
pub mod watch;
