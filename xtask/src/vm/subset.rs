//! The end-to-end tests the kernel matrix runs in each guest: the one place to change the
//! subset. Each entry is an exact test name of the `integration` test binary
//! (`tests/tests/integration/`) and what passing it proves on that kernel. Chosen to cover
//! every row kind on real traffic while the whole matrix (6.1 + 6.12 under TCG on 2 cores)
//! stays within 15 minutes; the per-test times are in each run's summary.

pub struct Test {
    pub name: &'static str,
    pub proves: &'static str,
    /// Runs tcpstate with the default hooks. When the first test (they load at all) fails on
    /// a kernel, these are reported as skipped instead of each waiting for the same refusal
    /// (on 6.1 the verifier takes over a minute per start under TCG to refuse a program).
    pub default_hooks: bool,
}

pub const SUBSET: &[Test] = &[
    Test {
        name: "cgroups::cgroup_filter_keeps_one_cgroups_sockets_and_the_kernel_drops_the_rest",
        proves: "the socket's cgroup id read in the kernel names every row (after the client \
                 exited), and --cgroup's in-kernel verdicts pass this verifier and drop \
                 exactly the other cgroups' changes",
        default_hooks: true,
    },
    Test {
        name: "kernels::every_program_loads_with_default_flags",
        proves: "default flags: every program passes this verifier, far below its limit, and \
                 -v names the hook in use (its -v output, with verifier instruction counts and \
                 load times, is kept)",
        default_hooks: false,
    },
    Test {
        name: "as_users_run_it::seed_sigint_server_killed_while_a_client_is_connected",
        proves: "the seed SIGINT case: snapshot of sockets that predate the tracer, the \
                 orphan timewait socket, then TIME_WAIT, owners named",
        default_hooks: true,
    },
    Test {
        name: "why::connect_to_a_port_with_no_listener_is_refused",
        proves: "a refused connect: SYN_SENT -> CLOSE refused",
        default_hooks: true,
    },
    Test {
        name: "why::close_with_unread_data_sends_a_reset_abort_on_close",
        proves: "a reset with a reason (TCP_ABORT_ON_CLOSE from tcp:tcp_send_reset's reason)",
        default_hooks: true,
    },
    Test {
        name: "why::so_linger_zero_aborts_with_a_reset",
        proves: "a reset without a kernel reason: reset-sent, no wrong reason",
        default_hooks: true,
    },
    Test {
        name: "half_open::lost_final_ack_shows_half_open_until_completion",
        proves: "half-open with a lost final ACK, from the BTF SYN-ACK retransmit hook",
        default_hooks: true,
    },
    Test {
        name: "timewait::active_close_with_close_orphan_then_time_wait",
        proves: "an active close: the timewait socket's FIN_WAIT2 then TIME_WAIT rows",
        default_hooks: true,
    },
    Test {
        name: "as_users_run_it::owners_of_a_server_started_before_the_tracer_in_its_own_namespace",
        proves: "the start-up snapshot of a server started before the tracer, in its own \
                 network namespace, with its owner",
        default_hooks: true,
    },
    Test {
        name: "kernels::metrics_scrape_counts_the_connections",
        proves: "--metrics: a scrape counts real connections under the port label",
        default_hooks: true,
    },
    Test {
        name: "as_users_load::kernel_rows_equal_libbpf_tools_tcpstates",
        proves: "the kernel rows equal libbpf-tools' tcpstates as a multiset on this kernel",
        default_hooks: true,
    },
    Test {
        name: "half_open::lost_final_ack_through_the_classic_tracepoints",
        proves: "the classic-tracepoint path (--classic-tracepoint): the same half-open rows",
        default_hooks: false,
    },
    Test {
        name: "kernels::without_kernel_btf_the_classic_tracepoint_is_named",
        proves: "--no-kernel-btf (as if the kernel had no BTF): the classic hooks load and -v \
                 names them",
        default_hooks: false,
    },
];
