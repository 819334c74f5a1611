//! End-to-end against software nobody here wrote: a real V2Ray node and
//! real V2Ray clients with the real `refract` enforcing in the kernel, all
//! in network namespaces the tests create and always remove. Needs root,
//! V2Ray 4 and the network tools; skips with the reason otherwise.

#[path = "../support/mod.rs"]
mod support;

/// Six scenarios with real clients: a second device banned, cut and let
/// back in; `--limit 2` banning a third (IPv6) device, with ipset and with
/// `--firewall nftables`; `--confirm` sparing
/// a device that switches address; and liveness (refract 0.2's default
/// flags): a second device banned while the first downloads in log
/// silence, a device whose old network vanished spared, an idle connection
/// that resumes banned.
mod v2ray;
