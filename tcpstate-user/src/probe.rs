//! Loads the eBPF program with its configuration, sizes its maps, attaches it
//! to `sock:inet_sock_set_state`, and reads its counters. Every failure is
//! turned into a [`UserError`] with a hint.

use std::{os::fd::AsRawFd, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, RingBuf},
    programs::{
        CgroupAttachMode, ProgramError, SockOps, TracePoint, trace_point::TracePointLinkId,
    },
};
use tcpstate_common::{AF_INET, AF_INET6, Config, names, port_match, stat};

use crate::{
    cli::Cli,
    error::{UserError, permission_hint},
    kernel_btf, layout, netns, privileges, tracefs,
};

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
    /// Attach the half-open helpers (sock_ops program, SYN-ACK tracepoint).
    pub half_open: bool,
}

impl ProbeOptions {
    pub fn from_cli(cli: &Cli) -> Self {
        let mut ports: Vec<(u16, u8)> = Vec::new();
        let mut add = |p: u16, bits: u8| match ports.iter_mut().find(|(q, _)| *q == p) {
            Some((_, b)) => *b |= bits,
            None => ports.push((p, bits)),
        };
        for &p in &cli.ports {
            add(p, port_match::LOCAL | port_match::REMOTE);
        }
        for &p in &cli.lports {
            add(p, port_match::LOCAL);
        }
        for &p in &cli.rports {
            add(p, port_match::REMOTE);
        }
        ProbeOptions {
            netns: cli.netns.clone(),
            family: if cli.ipv4 {
                AF_INET
            } else if cli.ipv6 {
                AF_INET6
            } else {
                0
            },
            ports,
            ring_size: cli.ring_size,
            max_sockets: cli.max_sockets,
            verbose: cli.verbose,
            half_open: !cli.no_half_open,
        }
    }
}

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Events dropped because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Socket-tracking updates that failed (dwell/owner unknown for those).
    pub sock_map_fail: u64,
    pub listen_map_fail: u64,
    pub submitted: u64,
    /// Events of sockets met mid-life: opened before tracing, or evicted
    /// from the full socket map (then --max-sockets is too small).
    pub untracked: u64,
    /// Runs of our program the kernel skipped because another BPF program was
    /// already running on that CPU (`recursion_misses` in the program info).
    pub recursion_misses: u64,
}

impl KernelStats {
    /// Events that never reached userspace.
    pub fn lost(&self) -> u64 {
        self.ringbuf_full + self.recursion_misses
    }
}

pub struct Probe {
    ebpf: Ebpf,
    _link: TracePointLinkId,
    stats: StatsView,
    prog_fd: std::os::fd::OwnedFd,
    pub ring_size: u32,
    /// Socket-map capacity, for the summary.
    pub max_sockets: u32,
    /// Whether request sockets (half-open connections) are seen: the
    /// sock_ops program is attached to the cgroup-v2 root.
    pub half_open: bool,
}

/// Tells the kernel side the netns cookie -> inode pairs it cannot learn
/// itself (its own learning happens at listen()): ours, and the --netns
/// target's, so request sockets of already-listening servers get their
/// namespace too.
fn seed_netns_cookies(ebpf: &mut Ebpf, target: Option<u32>, say: &mut dyn FnMut(&str)) {
    let Some(map) = ebpf.map_mut(names::NETNS_COOKIES) else {
        return;
    };
    let Ok(mut map) = HashMap::<_, u64, u32>::try_from(map) else {
        return;
    };
    let mut add = |inode: u32, cookie: std::io::Result<u64>| match cookie {
        Ok(c) => {
            let _ = map.insert(c, inode, 0);
        }
        Err(e) => say(&format!("netns {inode}: no cookie ({e})")),
    };
    if let Ok(own) = std::fs::metadata("/proc/self/ns/net") {
        use std::os::unix::fs::MetadataExt;
        add(own.ino() as u32, netns::current_cookie());
    }
    if let Some(inode) = target {
        match netns::find_path(inode) {
            Some(path) => add(inode, netns::run_in(&path, netns::current_cookie)),
            None => say(&format!("netns {inode}: no path to enter it")),
        }
    }
}

/// The OS error under an aya error, for messages (aya's Display omits it).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

/// The cgroup-v2 root, where a sock_ops program sees every socket.
fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| std::path::PathBuf::from(dir))
        })
        .min_by_key(|p| p.as_os_str().len())
}

/// Attaches the half-open helpers: `tcp:tcp_retransmit_synack` and the
/// sock_ops program on the cgroup-v2 root. Both are optional: without them
/// tcpstate still traces every state change, and says what it cannot see.
fn attach_half_open(ebpf: &mut Ebpf, synack_layout: bool, say: &mut dyn FnMut(&str)) -> bool {
    if synack_layout {
        let r = (|| -> Result<(), ProgramError> {
            let p: &mut TracePoint = ebpf
                .program_mut(names::SYNACK_PROGRAM)
                .expect("synack program is in the object")
                .try_into()?;
            p.load()?;
            p.attach("tcp", "tcp_retransmit_synack")?;
            Ok(())
        })();
        match r {
            Ok(()) => say("attached to tcp:tcp_retransmit_synack"),
            Err(e) => say(&format!("no SYN-ACK retransmit events: {e}")),
        }
    }
    let Some(root) = cgroup2_root() else {
        say("no cgroup-v2 mount: half-open connections (request sockets) are not seen");
        return false;
    };
    let r = (|| -> Result<(), String> {
        let cgroup = std::fs::File::open(&root).map_err(|e| e.to_string())?;
        let p: &mut SockOps = ebpf
            .program_mut(names::SOCKOPS_PROGRAM)
            .expect("sock_ops program is in the object")
            .try_into()
            .map_err(|e: ProgramError| e.to_string())?;
        p.load().map_err(|e| e.to_string())?;
        // On kernels >= 5.7 aya attaches through a bpf_link, which coexists
        // with other programs on the cgroup whatever the mode; the kernel
        // refuses BPF_F_ALLOW_MULTI on link creation, so use the default.
        p.attach(cgroup, CgroupAttachMode::Single)
            .map_err(|e| format!("{e}: {}", source_chain(&e)))?;
        Ok(())
    })();
    match r {
        Ok(()) => {
            say(&format!("attached sock_ops to cgroup {}", root.display()));
            true
        }
        Err(e) => {
            say(&format!(
                "half-open connections are not seen: sock_ops: {e}"
            ));
            false
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

fn check_privileges() -> Result<(), UserError> {
    let Some(caps) = privileges::effective() else {
        return Ok(()); // cannot tell: let the kernel decide
    };
    let missing = privileges::missing_for_tracing(caps);
    if missing.is_empty() {
        return Ok(());
    }
    let who = if unsafe { libc::geteuid() } == 0 {
        "running as root but without"
    } else {
        "not root and without"
    };
    Err(
        UserError::runtime(format!("{who} {}", missing.join(" and ")))
            .hint(permission_hint(Some(libc::EPERM)).unwrap_or_default()),
    )
}

fn load_error(e: aya::EbpfError) -> UserError {
    let errno = match &e {
        aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) => {
            io_error.raw_os_error()
        }
        _ => None,
    };
    let mut err = UserError::runtime(format!("loading the eBPF object failed: {e}"));
    if let Some(h) = permission_hint(errno) {
        err = err.hint(h);
    }
    err
}

fn program_error(what: &str, e: ProgramError) -> UserError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let mut err = UserError::runtime(format!(
                "the kernel's verifier rejected the program: {io_error}"
            ))
            .detail(format!("verifier log:\n{verifier_log}"));
            // The verifier answers EACCES for a program it rejects; only EPERM
            // means missing privileges.
            err = match io_error.raw_os_error() {
                Some(libc::EPERM) => {
                    err.hint(permission_hint(Some(libc::EPERM)).unwrap_or_default())
                }
                _ => err.hint("run with --verbose to see the verifier log"),
            };
            err
        }
        ProgramError::SyscallError(s) => {
            let errno = s.io_error.raw_os_error();
            let mut err = UserError::runtime(format!("{what}: {} failed: {}", s.call, s.io_error));
            if let Some(h) = permission_hint(errno) {
                err = err.hint(h);
            }
            err
        }
        other => UserError::runtime(format!("{what}: {other}")),
    }
}

impl Probe {
    pub fn load(opts: &ProbeOptions) -> Result<Probe, UserError> {
        let mut say = say(opts.verbose);
        check_privileges()?;

        let tracing = tracefs::ensure(&mut say)?;
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
                    "tracefs is readable by root only: run as root, or let this user read it \
                     (e.g. mount -o remount,mode=755 /sys/kernel/tracing); see docs/security.md",
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

        let netns_offsets = match kernel_btf::netns_offsets(kernel_btf::VMLINUX_BTF) {
            Ok(o) => {
                say(&format!(
                    "kernel BTF: skc_net at {}, ns.inum at {}",
                    o.skc_net, o.ns_inum
                ));
                o
            }
            Err(e) => {
                if opts.netns.is_some() {
                    return Err(UserError::runtime(format!(
                        "--netns needs kernel BTF to read a socket's namespace: {e:#}"
                    )));
                }
                say(&format!("no netns support (kernel BTF: {e:#})"));
                Default::default()
            }
        };
        let netns = match &opts.netns {
            Some(spec) => netns::resolve(spec)?,
            None => 0,
        };
        let synack_path = tracing.join("events/tcp/tcp_retransmit_synack/format");
        let synack = match std::fs::read_to_string(&synack_path)
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
        };

        // Kernels >= 5.11 account BPF memory to the cgroup; on older ones the
        // memlock limit matters. Raising it may be refused (no
        // CAP_SYS_RESOURCE): not fatal, the map creation error will tell.
        let rlim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
            say("could not raise RLIMIT_MEMLOCK (fine on kernels >= 5.11)");
        }

        let config = Config {
            layout,
            synack,
            netns_offsets,
            netns,
            // Wake the reader early only when a quarter of the buffer is used;
            // otherwise it drains on its timer. Per-event wakeups are what
            // make the peer tools slow the traced workload (NOTES.md §4).
            wakeup_bytes: opts.ring_size / 4,
            family: opts.family,
            port_filter: opts.ports.iter().fold(0, |bits, (_, b)| bits | b),
            verbose: u8::from(opts.verbose),
            fast_layout: u8::from(layout == tcpstate_common::TracepointLayout::SINCE_5_6),
            _pad: [0; 3],
        };
        let listeners = (opts.max_sockets / 16).max(256);
        // Possible CPUs (not online ones): the kernel program indexes the
        // counters by CPU id, which can be any possible CPU.
        let ncpus = aya::util::nr_cpus()
            .map_err(|(what, e)| UserError::runtime(format!("counting CPUs ({what}): {e}")))?
            as u32;
        #[allow(deprecated)] // override_global is the newer name; same call.
        say("loading the eBPF object");
        let mut ebpf = EbpfLoader::new()
            // No CO-RE relocations in a Rust program: no kernel BTF needed
            // (our patched aya no longer parses it in `new()`, see
            // third_party/aya/PATCHED.md; this keeps it so if unpatched).
            .btf(None)
            .override_global(names::CONFIG, &config, true)
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

        seed_netns_cookies(&mut ebpf, opts.netns.is_some().then_some(netns), &mut say);

        say("maps created; loading the tracepoint program");
        let program: &mut TracePoint = ebpf
            .program_mut(names::PROGRAM)
            .expect("program is in the object")
            .try_into()
            .map_err(|e| program_error("program type", e))?;
        program
            .load()
            .map_err(|e| program_error("loading the program", e))?;
        let link = program.attach("sock", "inet_sock_set_state").map_err(|e| {
            let missing = matches!(&e, ProgramError::SyscallError(s) if s.io_error.kind() == std::io::ErrorKind::NotFound)
                || !Path::new(&tracing).join("events/sock/inet_sock_set_state/id").exists();
            let err = program_error("attaching to sock:inet_sock_set_state", e);
            if missing {
                err.hint("the tracepoint sock:inet_sock_set_state does not exist on this kernel")
            } else {
                err
            }
        })?;
        // Our own handle on the program: its skip counter stays readable
        // after aya detaches and unloads it at exit (the kernel keeps a
        // program alive while a descriptor refers to it).
        let prog_fd = {
            use std::os::fd::AsFd;
            program
                .fd()
                .map_err(|e| program_error("program fd", e))?
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| UserError::runtime(format!("duplicating the program fd: {e}")))?
        };
        say("attached to sock:inet_sock_set_state");
        let half_open = if opts.half_open {
            attach_half_open(&mut ebpf, synack.present != 0, &mut say)
        } else {
            say("--no-half-open: sock_ops and the SYN-ACK tracepoint not attached");
            false
        };

        let stats = StatsView::map(&ebpf, ncpus)
            .map_err(|e| UserError::runtime(format!("mapping the STATS counters: {e}")))?;
        Ok(Probe {
            ebpf,
            _link: link,
            stats,
            prog_fd,
            ring_size: opts.ring_size,
            max_sockets: opts.max_sockets,
            half_open,
        })
    }

    /// Detaches and unloads the programs, so nothing more enters the ring
    /// buffer: draining it afterwards delivers every event produced while
    /// tracing (events made between a last drain and detaching would
    /// otherwise vanish uncounted). Counters stay readable.
    pub fn detach(&mut self) {
        for name in [names::PROGRAM, names::SYNACK_PROGRAM] {
            if let Some(p) = self.ebpf.program_mut(name)
                && let Ok(tp) = <&mut TracePoint>::try_from(p)
            {
                let _ = tp.unload();
            }
        }
        if let Some(p) = self.ebpf.program_mut(names::SOCKOPS_PROGRAM)
            && let Ok(so) = <&mut SockOps>::try_from(p)
        {
            let _ = so.unload();
        }
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
            // Through our own descriptor: still readable once detached.
            recursion_misses: recursion_misses(self.prog_fd.as_raw_fd()).unwrap_or(0),
        }
    }
}

/// The kernel's counters, read from memory (the map is BPF_F_MMAPABLE): no
/// syscall, so reading them cannot make the kernel skip our program.
struct StatsView {
    ptr: *const u64,
    len_bytes: usize,
    ncpus: u32,
}

impl StatsView {
    fn map(ebpf: &Ebpf, ncpus: u32) -> std::io::Result<StatsView> {
        use std::os::fd::AsFd;
        let map = ebpf
            .map(names::STATS)
            .ok_or_else(|| std::io::Error::other("STATS map missing"))?;
        let fd = match map {
            aya::maps::Map::Array(d) => d.fd().as_fd().as_raw_fd(),
            _ => return Err(std::io::Error::other("STATS is not an array")),
        };
        let len_bytes = (ncpus * stat::ROWS * stat::COUNT) as usize * 8;
        // SAFETY: mapping a BPF array map fd read-only for its byte size.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(StatsView {
            ptr: ptr.cast(),
            len_bytes,
            ncpus,
        })
    }

    fn sum(&self, slot: u32) -> u64 {
        (0..self.ncpus * stat::ROWS)
            .map(|row| {
                let i = (row * stat::COUNT + slot) as usize;
                // SAFETY: i < ncpus * ROWS * COUNT, inside the mapping;
                // aligned u64 words, each written whole by the kernel.
                unsafe { std::ptr::read_volatile(self.ptr.add(i)) }
            })
            .sum()
    }
}

impl Drop for StatsView {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.ptr.cast_mut().cast(), self.len_bytes) };
    }
}

/// `recursion_misses` from BPF_OBJ_GET_INFO_BY_FD: aya's ProgramInfo does not
/// expose it, so ask the kernel directly with its own struct layout.
fn recursion_misses(prog_fd: i32) -> Option<u64> {
    use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = prog_fd as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = &mut info as *mut _ as u64;
    // SAFETY: attr points to a valid bpf_attr for BPF_OBJ_GET_INFO_BY_FD.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as i32,
            &mut attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as u32,
        )
    };
    (rc == 0).then_some(info.recursion_misses)
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
