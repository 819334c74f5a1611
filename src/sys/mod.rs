//! The only place with `unsafe`: thin wrappers over syscalls that std,
//! mio and the crates we use do not cover. Each block says why it is sound.
pub mod caps;
pub mod ifaddrs;
pub mod mem;
pub mod mmap;
pub mod netlink;
pub mod process;
pub mod time;
pub mod timerfd;
