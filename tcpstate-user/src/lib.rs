//! tcpstate: trace TCP state changes as the kernel makes them.
//!
//! Data flows one way: tracepoint -> kernel filter/enrich (tcpstate-ebpf) ->
//! ring buffer -> [`reader`] -> [`event`] decode -> [`render`] sinks.
//! Setting up that path is [`probe`]'s job, fed by [`layout`] (the tracepoint
//! record's offsets) and [`kernel_btf`] (struct offsets for the netns).

pub mod cli;
pub mod clock;
pub mod comm;
pub mod container;
pub mod diag;
pub mod enrich;
pub mod error;
pub mod event;
pub mod exit_report;
pub mod explain;
pub mod gaps;
pub mod gate;
pub mod interrupt;
pub mod kernel_btf;
pub mod layout;
pub mod machine;
pub mod metrics;
pub mod netns;
pub mod outfile;
pub mod output;
pub mod privileges;
pub mod probe;
pub mod reader;
pub mod reason;
pub mod render;
pub mod settings;
pub mod top;
pub mod tracefs;
