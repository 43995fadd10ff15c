//! The monitor as a library: the pipeline stages, so tests and replay use them without the binary.
//!
//! kernel probes -> ring buffer -> [`decode`] -> [`process_tree`] -> [`event::enrich`] ->
//! [`event::Event`] -> [`judge`] ([`engine`] with [`ci`], [`profile`], [`rules`]; [`report`]) ->
//! [`finding::Finding`] -> outputs ([`output`], [`metrics`], reports); [`agent`] wires it live.

pub mod agent;
pub mod baseline;
pub mod ci;
pub mod config;
pub mod console;
pub mod containers;
pub mod control;
pub mod decode;
pub mod doctor;
pub mod enforce;
pub mod enforcement_pins;
pub mod engine;
pub mod event;
pub mod finding;
pub mod forward;
pub mod helper_probe;
pub mod hook_tier;
pub mod judge;
pub mod kernel_layout;
pub mod metrics;
pub mod output;
pub mod probes;
pub mod process_tree;
pub mod profile;
pub mod redact;
pub mod replay;
pub mod report;
pub mod rules;
pub mod runner_hooks;
pub mod selftest;
pub mod tracefs_layout;
pub mod watch;
