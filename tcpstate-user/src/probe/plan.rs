//! The first step of loading: what this kernel offers, read before any BPF
//! object exists (tracefs, the tracepoint layouts, kernel BTF, the
//! `--netns` namespace), and the kernel side's configuration built from it.

use tcpstate_common::{Config, SynackLayout, TracepointLayout};

use super::{ProbeOptions, StateHook, needs_hold_back};
use crate::{error::UserError, kernel_btf, layout, netns, tracefs};

/// Everything the load and attach steps need to know.
pub(super) struct Plan {
    pub tracing: std::path::PathBuf,
    pub kbtf: kernel_btf::KernelBtf,
    pub config: Config,
    /// The state-change hook to try first.
    pub hook: StateHook,
}

impl Plan {
    pub fn read(opts: &ProbeOptions, say: &mut dyn FnMut(&str)) -> Result<Plan, UserError> {
        let tracing = tracefs::ensure(say)?;
        let layout = state_change_layout(&tracing, say)?;
        let kbtf = read_kernel_btf(opts, say)?;
        let netns = match &opts.netns {
            Some(spec) => netns::resolve(spec)?,
            None => 0,
        };
        let synack = synack_layout(&tracing, say);
        let config = Config {
            layout,
            synack,
            offsets: kbtf.offsets,
            netns,
            // Wake the reader early only when a quarter of the buffer is used;
            // otherwise it drains on its timer. Per-event wakeups are what
            // make the peer tools slow the traced workload (`cargo xtask
            // bench` measures it side by side).
            wakeup_bytes: opts.ring_size / 4,
            family: opts.family,
            port_filter: opts.ports.iter().fold(0, |bits, (_, b)| bits | b),
            verbose: u8::from(opts.verbose),
            fast_layout: u8::from(layout == TracepointLayout::SINCE_5_6),
            hold_back: u8::from(needs_hold_back(&opts.ports, say)),
            rst_reason_arg: u8::from(kbtf.rst_reason_arg),
            retransmit_err_arg: u8::from(kbtf.retransmit_err_arg),
            cgroup_filter: u8::from(opts.cgroup_filter && kbtf.offsets.sk_cgroup != 0),
            _pad: [0; 3],
        };
        if opts.cgroup_filter {
            say(if config.cgroup_filter != 0 {
                "container filter: in the kernel, by socket cgroup id"
            } else {
                "container filter: in userspace only (no sk_cgrp_data.cgroup in kernel BTF)"
            });
        }
        let hook = state_hook(&kbtf, opts.classic, say);
        Ok(Plan {
            tracing,
            kbtf,
            config,
            hook,
        })
    }
}

/// The `sock:inet_sock_set_state` record layout, from its format file.
fn state_change_layout(
    tracing: &std::path::Path,
    say: &mut dyn FnMut(&str),
) -> Result<TracepointLayout, UserError> {
    let format_path = tracing.join("events/sock/inet_sock_set_state/format");
    let format = std::fs::read_to_string(&format_path).map_err(|e| {
        let err = UserError::runtime(format!(
            "cannot read the layout of tracepoint sock:inet_sock_set_state ({}: {e})",
            format_path.display()
        ));
        match e.kind() {
            std::io::ErrorKind::NotFound => err.hint(
                "the tracepoint exists since Linux 4.16; this kernel may lack CONFIG_NET or tracepoints",
            ),
            std::io::ErrorKind::PermissionDenied => err.hint(
                "tracefs is readable by root only: run as root, or give this user's group \
                 read access (mount -o remount,gid=tracing,mode=0750 /sys/kernel/tracing); \
                 see docs/security.md",
            ),
            _ => err.hint("the format file is not valid text; is this tracefs?"),
        }
    })?;
    let layout = layout::parse(&format).map_err(|e| {
        UserError::runtime(format!(
            "cannot use the layout in {}: {e}",
            format_path.display()
        ))
    })?;
    say(&format!(
        "tracepoint layout from {}: protocol is u{} at offset {}",
        format_path.display(),
        layout.protocol_size * 8,
        layout.protocol
    ));
    Ok(layout)
}

/// Kernel BTF's offsets, or none (then no namespace reads: `--netns`
/// cannot work).
fn read_kernel_btf(
    opts: &ProbeOptions,
    say: &mut dyn FnMut(&str),
) -> Result<kernel_btf::KernelBtf, UserError> {
    let read = if opts.kernel_btf {
        kernel_btf::kernel_btf(kernel_btf::VMLINUX_BTF)
    } else {
        Err(anyhow::anyhow!("not read (--no-kernel-btf)"))
    };
    match read {
        Ok(k) => {
            say(&format!(
                "kernel BTF: skc_net at {}, ns.inum at {}, srtt_us at {}, snt_synack at {}",
                k.offsets.skc_net, k.offsets.ns_inum, k.offsets.srtt_us, k.offsets.snt_synack
            ));
            Ok(k)
        }
        Err(e) => {
            if opts.netns.is_some() {
                return Err(UserError::runtime(format!(
                    "--netns needs kernel BTF to read a socket's namespace: {e:#}"
                )));
            }
            say(&format!("no netns support (kernel BTF: {e:#})"));
            Ok(Default::default())
        }
    }
}

/// The `tcp:tcp_retransmit_synack` record layout; absent (no half-open
/// events from the classic tracepoint) if the kernel lacks it.
fn synack_layout(tracing: &std::path::Path, say: &mut dyn FnMut(&str)) -> SynackLayout {
    let synack_path = tracing.join("events/tcp/tcp_retransmit_synack/format");
    match std::fs::read_to_string(&synack_path)
        .map_err(|e| e.to_string())
        .and_then(|f| layout::parse_synack(&f).map_err(|e| e.to_string()))
    {
        Ok(l) => l,
        Err(e) => {
            say(&format!(
                "no SYN-ACK retransmit events ({}: {e})",
                synack_path.display()
            ));
            Default::default()
        }
    }
}

/// The BTF tracepoint unless it is unusable here or `--classic-tracepoint`.
fn state_hook(kbtf: &kernel_btf::KernelBtf, classic: bool, say: &mut dyn FnMut(&str)) -> StateHook {
    match (kbtf.state_change_btf_id, classic) {
        (Some(_), false) => StateHook::Btf,
        (_, true) => {
            say("--classic-tracepoint: not using the BTF tracepoint");
            StateHook::Classic
        }
        (None, false) => {
            say(&format!(
                "BTF tracepoint unusable ({}): using the classic tracepoint",
                kbtf.btf_program_unusable.unwrap_or("no kernel BTF")
            ));
            StateHook::Classic
        }
    }
}
