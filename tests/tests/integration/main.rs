//! The tests that need the kernel, root and real packets between network namespaces: one
//! binary (one link of the daemon, aya and tokio), a module per area. `cargo xtask test --
//! --test integration AREA::` runs one area.

mod admin_access;
mod allowlistctl_names;
mod allowlistd;
mod api;
mod apply;
mod audit_trail;
mod classification;
mod dashboards;
mod end_to_end;
mod expiring_entries;
mod fail_safe;
mod feeds;
mod fleet;
mod fleet_hostile;
mod fleet_preview;
mod fleet_signed;
mod fleet_waves;
mod generations;
mod host_flows;
mod host_traffic;
mod import;
mod kernel_log;
mod kernel_memory;
mod model_sequences;
mod package;
mod policy_sized_memory;
mod preview;
mod property;
mod random_sequences;
mod replies;
mod safety;
mod scale;
mod service_sandbox;
mod verdicts;
