//! The end-to-end tests of tcpstate, one test binary (one module per scenario family):
//! real TCP peers in private network namespaces, traced by the real binary. The harness,
//! fixtures and helpers live in the `tcpstate-tests` library (`tests/src/`).

mod abortive;
mod as_users_load;
mod as_users_run_it;
mod cgroups;
mod closing;
mod containers;
mod fleet;
mod half_open;
mod ipv6;
mod kernels;
mod netns;
mod open_close;
mod output_formats;
mod output_reports;
mod owner;
mod port_filter;
mod reliability_errors;
mod reliability_faults;
mod reliability_hostile;
mod reliability_input;
mod reliability_instances;
mod reliability_security;
mod reliability_soak;
mod reliability_startup;
mod seed_sigint;
mod snapshot;
mod stuck;
mod time_in_state;
mod timewait;
mod top;
mod top_metrics;
mod why;
