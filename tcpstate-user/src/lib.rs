//! tcpstate: trace TCP state changes as the kernel makes them.
//!
//! Data flows one way: tracepoint -> kernel filter/enrich (tcpstate-ebpf) ->
//! ring buffer -> [`reader`] -> [`event`] decode -> [`render`] sinks.
//! Setting up that path is [`probe`]'s job, fed by [`layout`] (the tracepoint
//! record's offsets) and [`kernel_btf`] (struct offsets for the netns).

pub mod cli;
pub mod gate;
pub mod kernel_btf;
pub mod layout;
pub mod probe;
pub mod reader;
pub mod settings;
pub mod tracefs;
pub mod verdicts;

// The logic, under the names the binary's modules use.
pub use tcpstate_logic::{
    clock, comm, container, diag, enrich, error, event, exit_report, explain, gaps, interrupt,
    machine, metrics, netns, outfile, output, privileges, reason, render, top,
};
