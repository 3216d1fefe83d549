//! Loads the kernel programs with their configuration, sizes their maps,
//! attaches them (the BTF state-change hook, or the classic tracepoint on
//! kernels without the BTF it needs), and reads their counters. Every
//! failure is turned into a [`UserError`] with a hint. By concern:
//! [`plan`] (what this kernel offers, and the configuration), [`attach`]
//! (each program), [`counters`] (what the kernel counts), [`errors`]
//! (refusals as one-line errors). [`Probe::load`] runs the steps: plan,
//! load the object, attach.

mod attach;
mod counters;
mod errors;
mod plan;

use std::os::fd::{AsRawFd, OwnedFd};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, RingBuf},
    programs::{BtfTracePoint, TracePoint},
};
use tcpstate_common::{Config, ListenKey, Owner, names, port_match, stat};

pub use self::counters::KernelStats;
use self::{
    attach::{
        attach_btf_state_change, attach_causes, attach_classic_state_change, attach_synack,
        unload_btf_state_change,
    },
    counters::{StatsView, recursion_misses},
    errors::{check_kernel_version, check_privileges, load_error},
    plan::Plan,
};
use crate::{error::UserError, event::Task, kernel_btf};

/// `BPF_NOEXIST` (include/uapi/linux/bpf.h): create only.
const BPF_NOEXIST: u64 = 1;

/// The compiled kernel program, embedded at build time (see build.rs).
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcpstate"));

/// What the kernel side was asked to do, derived from the CLI.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub netns: Option<String>,
    pub family: u16,
    /// (port, port_match bits)
    pub ports: Vec<(u16, u8)>,
    pub ring_size: u32,
    pub max_sockets: u32,
    pub verbose: bool,
    /// Attach the SYN-ACK retransmit program (half-open connections).
    pub half_open: bool,
    /// Use the classic tracepoint even where the BTF one works.
    pub classic: bool,
    /// Read kernel BTF (false: act as if the kernel had none).
    pub kernel_btf: bool,
    /// `--container` / `--cgroup` is set: drop ruled-out cgroups in the
    /// kernel (see `container::verdicts`).
    pub cgroup_filter: bool,
}

pub struct Probe {
    ebpf: Ebpf,
    stats: StatsView,
    prog_fd: OwnedFd,
    /// The nested-run program's, when it is attached.
    nested_fd: Option<OwnedFd>,
    /// The SYN-ACK program's, when it is attached.
    synack_fd: Option<OwnedFd>,
    /// The `--netns` namespace's inode, 0 = every namespace.
    pub netns: u32,
    pub verbose: bool,
    /// The kernel's names of reset reasons (empty when it gives none).
    pub rst_reasons: crate::reason::RstReasons,
    /// `Config::cgroup_filter` as loaded.
    cgroup_filter: u8,
}

/// Which program carries the state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateHook {
    /// `tp_btf/inet_sock_set_state`: the socket itself, no trace record, and
    /// the kernel skips it only when this very program is already running
    /// on the CPU (not when any other tool's program is).
    Btf,
    /// `sock:inet_sock_set_state`, with the layout from its format file.
    Classic,
}

impl StateHook {
    pub fn name(self) -> &'static str {
        match self {
            StateHook::Btf => "tp_btf/inet_sock_set_state",
            StateHook::Classic => "tracepoint sock:inet_sock_set_state",
        }
    }
}

/// `--verbose` narration of the setup steps, with the time since start so
/// slow steps show.
fn say(verbose: bool) -> impl FnMut(&str) {
    let start = std::time::Instant::now();
    move |msg: &str| {
        if verbose {
            eprintln!(
                "tcpstate: [{:6.1} ms] {msg}",
                start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}

/// Whether a socket's first event must be held back until it matches: only
/// when a local-port filter names a port connect() could pick as its
/// ephemeral port, which is chosen after CLOSE->SYN_SENT (a port bound
/// explicitly is already there). Otherwise the kernel side drops every
/// unmatched change before any map work.
fn needs_hold_back(ports: &[(u16, u8)], say: &mut dyn FnMut(&str)) -> bool {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| ephemeral_range(&s));
    let (lo, hi) = range.unwrap_or((1, u16::MAX));
    let hold = ports
        .iter()
        .any(|&(p, bits)| bits & port_match::LOCAL != 0 && (lo..=hi).contains(&p));
    if hold {
        say(&format!(
            "a filtered port is in the ephemeral range {lo}-{hi}: first events are held back until they match"
        ));
    }
    hold
}

/// `ip_local_port_range` ("32768\t60999").
fn ephemeral_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(|w| w.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

impl Probe {
    pub fn load(opts: &ProbeOptions) -> Result<Probe, UserError> {
        let mut say = say(opts.verbose);
        check_kernel_version()?;
        check_privileges()?;
        let plan = Plan::read(opts, &mut say)?;
        raise_memlock(&mut say);
        // Possible CPUs (not online ones): the kernel program indexes the
        // counters by CPU id, which can be any possible CPU.
        let ncpus = aya::util::nr_cpus()
            .map_err(|(what, e)| UserError::runtime(format!("counting CPUs ({what}): {e}")))?
            as u32;
        let mut ebpf = load_object(opts, &plan.config, ncpus, &mut say)?;
        say(&format!(
            "maps created; loading the {} program",
            plan.hook.name()
        ));
        let (hook, prog_fd, nested_fd) = attach_state_change(&mut ebpf, &plan, &mut say)?;
        say(&format!("attached to {}", hook.name()));
        let synack_fd = if opts.half_open {
            // The BTF program reads the socket the way the BTF state-change
            // program does, so it goes with that hook.
            let btf_id = plan.kbtf.synack_btf_id.filter(|_| hook == StateHook::Btf);
            attach_synack(&mut ebpf, btf_id, plan.config.synack.present != 0, &mut say)
        } else {
            say("--no-half-open: the SYN-ACK tracepoint is not attached");
            None
        };
        attach_causes(&mut ebpf, &plan.kbtf, &mut say);
        let rst_reasons = reset_reasons(&plan.tracing, &mut say);
        let stats = StatsView::map(&ebpf, ncpus)
            .map_err(|e| UserError::runtime(format!("mapping the STATS counters: {e}")))?;
        Ok(Probe {
            ebpf,
            stats,
            prog_fd,
            nested_fd,
            synack_fd,
            verbose: opts.verbose,
            rst_reasons,
            netns: plan.config.netns,
            cgroup_filter: plan.config.cgroup_filter,
        })
    }

    /// Detaches and unloads the programs, so nothing more enters the ring
    /// buffer: draining it afterwards delivers every event produced while
    /// tracing (events made between a last drain and detaching would
    /// otherwise vanish uncounted). Counters stay readable.
    pub fn detach(&mut self) {
        for name in [names::CLASSIC_PROGRAM, names::SYNACK_CLASSIC_PROGRAM] {
            if let Some(p) = self.ebpf.program_mut(name)
                && let Ok(tp) = <&mut TracePoint>::try_from(p)
            {
                let _ = tp.unload();
            }
        }
        let causes = kernel_btf::CAUSE_HOOKS.map(|(p, _)| p);
        for name in [
            names::BTF_PROGRAM,
            names::NESTED_PROGRAM,
            names::SYNACK_BTF_PROGRAM,
        ]
        .into_iter()
        .chain(causes)
        {
            if let Some(p) = self.ebpf.program_mut(name)
                && let Ok(tp) = <&mut BtfTracePoint>::try_from(p)
            {
                let _ = tp.unload();
            }
        }
    }

    /// Tells the kernel side who owns listeners it never saw created (they
    /// predate tracing), so their accepted connections name their owner.
    /// Listeners it learned itself (from listen()) are kept.
    pub fn seed_listeners(&mut self, owners: &std::collections::HashMap<ListenKey, Task>) {
        let Some(map) = self.ebpf.map_mut(names::LISTENERS) else {
            return;
        };
        let Ok(mut map) = HashMap::<_, ListenKey, Owner>::try_from(map) else {
            return;
        };
        for (key, task) in owners {
            let owner = Owner {
                pid: task.pid,
                _pad: 0,
                comm: task.comm,
            };
            // BPF_NOEXIST: a listen() seen since attaching is fresher.
            let _ = map.insert(*key, owner, BPF_NOEXIST);
        }
    }

    /// The kernel's container-filter verdicts, when the filter runs there.
    pub fn take_cgroup_verdicts(&mut self) -> Option<crate::verdicts::Verdicts> {
        if self.cgroup_filter == 0 {
            return None;
        }
        let map = self.ebpf.take_map(names::CGROUPS)?;
        HashMap::try_from(map)
            .ok()
            .map(crate::verdicts::Verdicts::new)
    }

    /// Takes the ring buffer for the reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, UserError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or_else(|| UserError::runtime("EVENTS ring buffer already taken"))?;
        RingBuf::try_from(map).map_err(|e| UserError::runtime(format!("EVENTS map: {e}")))
    }

    pub fn stats(&self) -> KernelStats {
        let sum = |slot: u32| self.stats.sum(slot);
        KernelStats {
            ringbuf_full: sum(stat::RINGBUF_FULL),
            sock_map_fail: sum(stat::SOCK_MAP_FAIL),
            listen_map_fail: sum(stat::LISTEN_MAP_FAIL),
            submitted: sum(stat::SUBMITTED),
            untracked: sum(stat::UNTRACKED),
            // Through our own descriptors: still readable once detached.
            // The runs the nested-run program handled instead are not lost;
            // a skipped SYN-ACK program run is a half-open event lost.
            recursion_misses: recursion_misses(self.prog_fd.as_raw_fd())
                .unwrap_or(0)
                .saturating_sub(sum(stat::RESCUED))
                + self
                    .synack_fd
                    .as_ref()
                    .and_then(|fd| recursion_misses(fd.as_raw_fd()))
                    .unwrap_or(0),
            rescued: sum(stat::RESCUED),
            cgroup_dropped: sum(stat::CGROUP_DROPPED),
            nested_misses: self
                .nested_fd
                .as_ref()
                .and_then(|fd| recursion_misses(fd.as_raw_fd()))
                .unwrap_or(0),
        }
    }
}

/// Kernels >= 5.11 account BPF memory to the cgroup; on older ones the
/// memlock limit matters. Raising it may be refused (no CAP_SYS_RESOURCE):
/// not fatal, the map creation error will tell.
fn raise_memlock(say: &mut dyn FnMut(&str)) {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        say("could not raise RLIMIT_MEMLOCK (fine on kernels >= 5.11)");
    }
}

/// Creates the maps sized from the flags and loads the object with its
/// configuration (no program is attached yet); the kernel-side logger with
/// `-v`, the port filter's table.
fn load_object(
    opts: &ProbeOptions,
    config: &Config,
    ncpus: u32,
    say: &mut dyn FnMut(&str),
) -> Result<Ebpf, UserError> {
    let listeners = (opts.max_sockets / 16).max(256);
    say("loading the eBPF object");
    #[allow(deprecated)] // override_global is the newer name; same call.
    let mut ebpf = EbpfLoader::new()
        // No CO-RE relocations in a Rust program: no kernel BTF needed
        // (our patched aya no longer parses it in `new()`, see
        // third_party/aya/PATCHED.md; this keeps it so if unpatched).
        .btf(None)
        .override_global(names::CONFIG, config, true)
        .map_max_entries(names::EVENTS, opts.ring_size)
        .map_max_entries(names::SOCKS, opts.max_sockets)
        // Held-back first events live only until their socket's second
        // event (microseconds): a quarter of the socket map is plenty.
        .map_max_entries(names::PENDING, (opts.max_sockets / 4).max(64))
        .map_max_entries(names::LISTENERS, listeners)
        .map_max_entries(names::STATS, ncpus * stat::ROWS * stat::COUNT)
        .load(PROGRAM)
        .map_err(load_error)?;

    if opts.verbose {
        // The logger must be installed before EbpfLogger captures it.
        let _ = env_logger::Builder::new()
            .filter_level(log::LevelFilter::Debug)
            .format_timestamp(None)
            .try_init();
        match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => spawn_logger(logger),
            Err(e) => say(&format!("kernel-side log unavailable: {e}")),
        }
    }

    if !opts.ports.is_empty() {
        let mut map: aya::maps::Array<_, u8> =
            aya::maps::Array::try_from(ebpf.map_mut(names::PORTS).expect("PORTS map"))
                .map_err(|e| UserError::runtime(format!("PORTS map: {e}")))?;
        for &(port, bits) in &opts.ports {
            map.set(u32::from(port), bits, 0)
                .map_err(|e| UserError::runtime(format!("setting port filter: {e}")))?;
        }
    }

    Ok(ebpf)
}

/// The state-change programs on the planned hook; on the BTF hook's
/// refusal, the classic tracepoint instead (said without `-v`: the run goes
/// on, on a hook that misses what another tool's program hides).
fn attach_state_change(
    ebpf: &mut Ebpf,
    plan: &Plan,
    say: &mut dyn FnMut(&str),
) -> Result<(StateHook, OwnedFd, Option<OwnedFd>), UserError> {
    let classic = |ebpf: &mut Ebpf, say: &mut dyn FnMut(&str)| {
        attach_classic_state_change(ebpf, &plan.tracing, say)
            .map(|fd| (StateHook::Classic, fd, None))
    };
    let StateHook::Btf = plan.hook else {
        return classic(ebpf, say);
    };
    let btf_id = plan
        .kbtf
        .state_change_btf_id
        .expect("planned only with an id");
    match attach_btf_state_change(ebpf, btf_id, say) {
        Ok((fd, nested)) => Ok((StateHook::Btf, fd, nested)),
        Err(e) => {
            eprintln!(
                "tcpstate: {} refused by this kernel ({}); using {} instead",
                StateHook::Btf.name(),
                e.message,
                StateHook::Classic.name()
            );
            if let Some(d) = &e.detail {
                say(d);
            }
            unload_btf_state_change(ebpf);
            classic(ebpf, say)
        }
    }
}

/// Reset reason names as this kernel prints them (they change between
/// versions, so no table here).
fn reset_reasons(
    tracing: &std::path::Path,
    say: &mut dyn FnMut(&str),
) -> crate::reason::RstReasons {
    let reasons = std::fs::read_to_string(tracing.join("events/tcp/tcp_send_reset/format"))
        .map(|f| crate::reason::RstReasons::from_format(&f))
        .unwrap_or_default();
    if reasons.is_empty() {
        say("resets are shown without the kernel's reason (no sk_rst_reason in tcp_send_reset)");
    }
    reasons
}

/// Forwards aya-log records from the kernel program to stderr (--verbose).
fn spawn_logger(mut logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    std::thread::spawn(move || {
        loop {
            logger.flush();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ephemeral_range_is_parsed() {
        assert_eq!(ephemeral_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(ephemeral_range("junk"), None);
    }
}
