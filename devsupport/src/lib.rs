//! What tcpstate's end-to-end tests (`tests/`), its benchmark (`bench/`) and its developer
//! tasks (`xtask/`) share, written once:
//!
//! - [`netns`]: private network namespaces (create, run commands and threads inside, set
//!   sysctls, load nftables rules), deleted when the last handle goes;
//! - [`bpf`]: the BPF programs, maps and links a process holds, read from `/proc/PID/fdinfo`;
//! - [`mounts`]: what is mounted where, from `/proc/self/mounts`;
//! - [`paths`]: the workspace root and `which`;
//! - [`cmd`]: running a command to completion with its output in the error;
//! - [`cargo`]: telling cargo's progress lines from diagnostics (also used by
//!   tcpstate-user's build script).
//!
//! Dependencies stay at std, libc and anyhow: xtask links this crate and is compiled at every
//! `cargo xtask` call.

pub mod bpf;
pub mod cargo;
pub mod cmd;
pub mod mounts;
pub mod netns;
pub mod paths;

pub use netns::Netns;
pub use paths::{is_executable, which, which_or_system, workspace_root};
