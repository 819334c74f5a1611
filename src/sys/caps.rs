//! Capabilities (`capabilities(7)`): reading the process's sets and
//! dropping to the few the daemon keeps after startup.
//!
//! [`drop_to`] does, in this order: drops every other capability from the
//! bounding set (`PR_CAPBSET_DROP`, needs `CAP_SETPCAP`, so it must come
//! before the `capset` that gives that up), sets `no_new_privs`, clears the
//! ambient set, and `capset`s permitted = effective = the kept set,
//! inheritable = none. A child it spawns later (`iptables`, to put the DROP
//! rule back after a repair) runs as uid 0, so it gets the bounding set as
//! its permitted set, capped by `no_new_privs` to our permitted set: the
//! kept capabilities and nothing more.
//!
//! Capability numbers are the kernel's (`/usr/include/linux/capability.h`).

use std::io;

/// `CAP_DAC_READ_SEARCH`: read any file, search any directory.
pub const CAP_DAC_READ_SEARCH: u32 = 2;
/// `CAP_NET_ADMIN`: ipset, `SOCK_DESTROY`, conntrack, iptables-nft.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_NET_RAW`: iptables-legacy's raw socket.
pub const CAP_NET_RAW: u32 = 13;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Highest capability this kernel knows, from
/// `/proc/sys/kernel/cap_last_cap` (40, `CAP_CHECKPOINT_RESTORE`, when
/// unreadable; `PR_CAPBSET_DROP` of an unknown number answers `EINVAL`).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &u32| n < 64)
        .unwrap_or(40)
}

/// The name of capability `cap` for messages (`cap_net_admin`).
pub fn name(cap: u32) -> String {
    const NAMES: [&str; 41] = [
        "chown",
        "dac_override",
        "dac_read_search",
        "fowner",
        "fsetid",
        "kill",
        "setgid",
        "setuid",
        "setpcap",
        "linux_immutable",
        "net_bind_service",
        "net_broadcast",
        "net_admin",
        "net_raw",
        "ipc_lock",
        "ipc_owner",
        "sys_module",
        "sys_rawio",
        "sys_chroot",
        "sys_ptrace",
        "sys_pacct",
        "sys_admin",
        "sys_boot",
        "sys_nice",
        "sys_resource",
        "sys_time",
        "sys_tty_config",
        "mknod",
        "lease",
        "audit_write",
        "audit_control",
        "setfcap",
        "mac_override",
        "mac_admin",
        "syslog",
        "wake_alarm",
        "block_suspend",
        "audit_read",
        "perfmon",
        "bpf",
        "checkpoint_restore",
    ];
    match NAMES.get(cap as usize) {
        Some(n) => format!("cap_{n}"),
        None => format!("cap_{cap}"),
    }
}

/// Names of the capabilities in `mask`, comma-separated (`none` if empty).
pub fn names(mask: u64) -> String {
    let v: Vec<String> = (0..64).filter(|c| mask & (1 << c) != 0).map(name).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// The effective user id (`geteuid(2)`).
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

/// Reads the calling thread's effective, permitted and inheritable sets
/// (`capget(2)`).
pub fn get() -> io::Result<Sets> {
    let mut hdr = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: version 3 takes one header and an array of two data structs,
    // both `repr(C)` with the kernel's layout (`struct
    // __user_cap_header_struct`, `struct __user_cap_data_struct`), alive
    // and writable for the call.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |f: fn(&Data) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    Ok(Sets {
        effective: join(|d| d.effective),
        permitted: join(|d| d.permitted),
        inheritable: join(|d| d.inheritable),
    })
}

fn set(s: Sets) -> io::Result<()> {
    let mut hdr = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |m: u64| [m as u32, (m >> 32) as u32];
    let (e, p, i) = (split(s.effective), split(s.permitted), split(s.inheritable));
    let data = [0, 1].map(|w| Data {
        effective: e[w],
        permitted: p[w],
        inheritable: i[w],
    });
    // SAFETY: as in `get`; the kernel only reads `data`.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn prctl(op: libc::c_int, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the options used here (PR_CAPBSET_READ/DROP,
    // PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT) take integers only; the unused
    // arguments must be zero.
    let r = unsafe {
        libc::prctl(
            op,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// What [`drop_to`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Permitted = effective after the drop.
    pub kept: u64,
    /// Capabilities left in the bounding set that are not kept (could not
    /// be dropped: no `CAP_SETPCAP`, e.g. under a unit that bounds it
    /// away; then they are not in the permitted set either).
    pub bounding_left: u64,
}

/// Keeps only the capabilities in `keep` (bit `n` = capability `n`) that
/// the process has, everywhere: bounding, permitted, effective; clears the
/// inheritable and ambient sets; sets `no_new_privs`. Irreversible.
pub fn drop_to(keep: u64) -> io::Result<Dropped> {
    let before = get()?;
    let keep = keep & before.permitted;
    let mut bounding_left = 0;
    for cap in 0..=last_cap() {
        if keep & (1 << cap) != 0 || prctl(libc::PR_CAPBSET_READ, cap.into())? != 1 {
            continue;
        }
        match prctl(libc::PR_CAPBSET_DROP, cap.into()) {
            Ok(_) => {}
            // Without CAP_SETPCAP the bounding set stays; the capset below
            // still removes the capability from every other set.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => bounding_left |= 1 << cap,
            Err(e) => return Err(e),
        }
    }
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)?;
    match prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    ) {
        // EINVAL: a kernel before 4.3, which has no ambient set.
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    set(Sets {
        effective: keep,
        permitted: keep,
        inheritable: 0,
    })?;
    Ok(Dropped {
        kept: keep,
        bounding_left,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernel_numbers() {
        assert_eq!(name(CAP_NET_ADMIN), "cap_net_admin");
        assert_eq!(name(CAP_NET_RAW), "cap_net_raw");
        assert_eq!(name(CAP_DAC_READ_SEARCH), "cap_dac_read_search");
        assert_eq!(name(40), "cap_checkpoint_restore");
        assert_eq!(
            names((1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)),
            "cap_net_admin,cap_net_raw"
        );
        assert_eq!(names(0), "none");
    }

    #[test]
    fn reads_our_own_sets() {
        let s = get().unwrap();
        // Effective is always a subset of permitted.
        assert_eq!(s.effective & !s.permitted, 0);
    }
}
