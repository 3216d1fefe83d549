//! tcpstate's logic, apart from the kernel: decoding the kernel's records
//! ([`event`]), the trackers that complete them ([`enrich`]), container
//! attribution ([`container`]), every printer ([`render`], [`top`]), the
//! reasons a connection ended ([`reason`], [`explain`]), the exit report
//! ([`exit_report`]) and the metrics ([`metrics`]), with the system reads
//! they need (sock_diag in [`diag`], namespaces in [`netns`]).
//!
//! Builds and tests with the stable toolchain alone: no eBPF object, no
//! build script, no aya. The `tcpstate` binary (crate tcpstate-user) adds
//! the command line, the settings, the probe that loads the kernel programs
//! and the reader loop.

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
pub mod interrupt;
pub mod kernel_stats;
pub mod machine;
pub mod metrics;
pub mod netns;
pub mod outfile;
pub mod output;
pub mod privileges;
pub mod reason;
pub mod render;
pub mod top;
