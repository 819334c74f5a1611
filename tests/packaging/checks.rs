//! The packaging as CI can check it on this machine: the unit passes
//! `systemd-analyze verify`, every shell script passes `sh -n`/`bash -n` and
//! shellcheck, `scripts/install.sh` installs and removes exactly its files
//! in a DESTDIR, the Debian package builds and holds what it should. What
//! cannot run here (docker build, abuild) gets a static check.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::daemon::BIN;
use crate::support::{have_tool as have, root_with, skip, TempDir};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out
}

const SHELL_SCRIPTS: &[&str] = &[
    "scripts/deps.sh",
    "scripts/test.sh",
    "scripts/install.sh",
    "scripts/build-deb.sh",
    ".ci/run",
];
const POSIX_SCRIPTS: &[&str] = &[
    "packaging/openrc/refract",
    "packaging/debian/postinst",
    "packaging/debian/prerm",
    "packaging/debian/postrm",
    "packaging/openwrt/refract.init",
];

fn all_scripts() -> Vec<String> {
    let mut v: Vec<String> = SHELL_SCRIPTS.iter().map(|s| s.to_string()).collect();
    // Every other script under scripts/ too, so a new one cannot slip by.
    for e in std::fs::read_dir(repo().join("scripts")).unwrap() {
        let name = format!("scripts/{}", e.unwrap().file_name().to_string_lossy());
        if name.ends_with(".sh") && !v.contains(&name) {
            v.push(name);
        }
    }
    v
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        skip("systemd-analyze not installed");
        return;
    }
    let tmp = TempDir::new("unit");
    let unit = std::fs::read_to_string(repo().join("refract.service")).unwrap();
    // verify wants ExecStart's binary to exist: point it at the one built.
    let unit = unit.replace("/usr/local/bin/refract", BIN);
    let path = tmp.0.join("refract.service");
    std::fs::write(&path, unit).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "systemd-analyze verify: {err}");
    assert!(
        !err.contains("refract.service"),
        "warnings about the unit: {err}"
    );
}

#[test]
fn unit_keeps_refract_0_2_interface() {
    let unit = std::fs::read_to_string(repo().join("refract.service")).unwrap();
    for want in [
        "EnvironmentFile=-/etc/default/refract",
        "--proto=${REFRACT_PROTO} --dport=${REFRACT_DPORT} --window=${REFRACT_WINDOW} --timeout=${REFRACT_TIMEOUT} --access.log=${REFRACT_ACCESS_LOG} --block.log=${REFRACT_BLOCK_LOG}",
        "Type=notify",
        "ExecReload=/usr/local/bin/refract reload",
        "RuntimeDirectory=refract",
        "RuntimeDirectoryMode=2750",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_DAC_READ_SEARCH",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
    ] {
        assert!(unit.contains(want), "unit lacks {want:?}");
    }
}

#[test]
fn shell_scripts_parse_and_pass_shellcheck() {
    for s in all_scripts() {
        let o = Command::new("bash")
            .arg("-n")
            .arg(repo().join(&s))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "bash -n {s}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    for s in POSIX_SCRIPTS {
        let o = Command::new("sh")
            .arg("-n")
            .arg(repo().join(s))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "sh -n {s}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    if !have("shellcheck") {
        skip("shellcheck not installed (syntax was checked)");
        return;
    }
    for s in all_scripts() {
        let o = Command::new("shellcheck")
            .args(["-x", &s])
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "shellcheck {s}:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    for s in POSIX_SCRIPTS
        .iter()
        .chain(["packaging/alpine/APKBUILD"].iter())
    {
        let mut c = Command::new("shellcheck");
        c.args(["-s", "sh"]);
        if s.ends_with("APKBUILD") {
            // abuild reads these variables after sourcing the file.
            c.args(["-e", "SC2034,SC2154"]);
        }
        let o = c.arg(repo().join(s)).output().unwrap();
        assert!(
            o.status.success(),
            "shellcheck {s}:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

#[test]
fn install_and_uninstall_touch_exactly_their_files() {
    for (init, unit, settings) in [
        (
            "systemd",
            "etc/systemd/system/refract.service",
            "etc/default/refract",
        ),
        ("openrc", "etc/init.d/refract", "etc/conf.d/refract"),
    ] {
        let root = TempDir::new(&format!("install-{init}"));
        let run = |extra: &[&str]| {
            let o = Command::new("bash")
                .arg(repo().join("scripts/install.sh"))
                .args(["--init", init, "--bin", BIN])
                .args(extra)
                .env("DESTDIR", &root.0)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{init} {extra:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let out = run(&[]);
        assert!(out.contains("Next:"), "{out}");
        let want: BTreeSet<String> = [
            "usr/local/bin/refract",
            "opt/refract/refract",
            unit,
            settings,
            "usr/share/man/man8/refract.8.gz",
            "usr/share/bash-completion/completions/refract",
            "etc/logrotate.d/refract",
            "usr/share/refract/hooks/webhook",
            "usr/share/refract/hooks/telegram",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(files_under(&root.0), want);
        let link = std::fs::read_link(root.0.join("opt/refract/refract")).unwrap();
        assert_eq!(link, PathBuf::from("/usr/local/bin/refract"));
        // The operator edits the settings; a second run keeps them.
        let s = root.0.join(settings);
        std::fs::write(&s, "REFRACT_LIMIT=2\n").unwrap();
        let out = run(&[]);
        assert!(out.contains(&format!("kept your /{settings}")), "{out}");
        assert_eq!(std::fs::read_to_string(&s).unwrap(), "REFRACT_LIMIT=2\n");
        assert_eq!(files_under(&root.0), want);
        // Uninstall removes everything but the edited settings.
        let out = run(&["--uninstall"]);
        assert!(out.contains("kept"), "{out}");
        assert_eq!(
            files_under(&root.0),
            [settings.to_string()].into_iter().collect()
        );
        // With pristine settings, nothing at all is left.
        run(&[]);
        std::fs::remove_file(&s).unwrap();
        run(&[]);
        run(&["--uninstall"]);
        assert!(
            files_under(&root.0).is_empty(),
            "{:?}",
            files_under(&root.0)
        );
    }
}

#[test]
fn debian_package_builds_with_its_files_and_scripts() {
    if !have("dpkg-deb") {
        skip("dpkg-deb not installed");
        return;
    }
    let out = TempDir::new("deb");
    let o = Command::new("bash")
        .arg(repo().join("scripts/build-deb.sh"))
        .args(["--bin", BIN, "--out"])
        .arg(&out.0)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deb = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let list = Command::new("dpkg-deb")
        .args(["-c", &deb])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for f in [
        "./usr/bin/refract",
        "./lib/systemd/system/refract.service",
        "./etc/default/refract",
        "./usr/share/doc/refract/copyright",
        "./usr/share/man/man8/refract.8.gz",
        "./usr/share/bash-completion/completions/refract",
        "./etc/logrotate.d/refract",
        "./usr/share/refract/hooks/webhook",
        "./usr/share/refract/hooks/telegram",
    ] {
        assert!(list.contains(f), "{f} missing from {list}");
    }
    let conffiles = std::fs::read_to_string(repo().join("packaging/debian/conffiles")).unwrap();
    for f in ["/etc/default/refract", "/etc/logrotate.d/refract"] {
        assert!(conffiles.lines().any(|l| l == f), "{f} not a conffile");
    }
    let info = Command::new("dpkg-deb")
        .args(["-I", &deb])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    for f in [
        "Package: refract",
        "Depends: ipset, iptables",
        "postinst",
        "prerm",
        "postrm",
        "conffiles",
    ] {
        assert!(info.contains(f), "{f} missing from {info}");
    }
    let tree = TempDir::new("deb-tree");
    let o = Command::new("dpkg-deb")
        .args(["-x", &deb])
        .arg(&tree.0)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |f: &str| std::fs::read_to_string(tree.0.join(f)).unwrap();
    let unit = read("lib/systemd/system/refract.service");
    assert!(unit.contains("ExecStart=/usr/bin/refract "));
    assert!(unit.contains("ExecReload=/usr/bin/refract reload"));
    // The logrotate file calls the package's binary, not /usr/local's.
    let logrotate = read("etc/logrotate.d/refract");
    assert!(logrotate.contains("/usr/bin/refract reload"), "{logrotate}");
    assert!(!logrotate.contains("/usr/local/bin"), "{logrotate}");
    let completion = read("usr/share/bash-completion/completions/refract");
    assert!(completion.contains("complete -F _refract refract"));
    // postinst enables but never starts.
    let postinst = std::fs::read_to_string(repo().join("packaging/debian/postinst")).unwrap();
    assert!(
        postinst.contains("systemctl enable")
            && !postinst.contains("systemctl start refract.service")
    );
}

#[test]
fn container_and_alpine_files_are_consistent() {
    // No Docker engine or abuild here: check what can be checked statically.
    let docker = std::fs::read_to_string(repo().join("packaging/docker/Dockerfile")).unwrap();
    let stages = docker.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "multi-stage build");
    for line in docker
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(repo().join(src).exists(), "Dockerfile copies missing {src}");
        }
    }
    assert!(docker.contains("ENTRYPOINT [\"/usr/local/bin/refract\"]"));
    let compose = std::fs::read_to_string(repo().join("packaging/docker/compose.yml")).unwrap();
    assert!(compose.contains("network_mode: host") && compose.contains("NET_ADMIN"));
    let apk = std::fs::read_to_string(repo().join("packaging/alpine/APKBUILD")).unwrap();
    let version = format!("pkgver={}", env!("CARGO_PKG_VERSION"));
    assert!(apk.contains(&version), "APKBUILD {version}");
    // OpenRC has no RuntimeDirectory=: the script makes the control
    // socket's directory, and reloads through the control socket too.
    let openrc = std::fs::read_to_string(repo().join("packaging/openrc/refract")).unwrap();
    assert!(openrc.contains("checkpath --directory --mode 2750 --owner root:refract /run/refract"));
    assert!(openrc.contains("checkpath --directory --mode 0750 /run/refract"));
    assert!(openrc.contains("\"${command}\" reload"));
    for f in ["packaging/openrc/refract", "packaging/openrc/refract.confd"] {
        assert!(apk.contains(f) && repo().join(f).exists(), "{f}");
    }
    let o = Command::new("sh")
        .arg("-n")
        .arg(repo().join("packaging/alpine/APKBUILD"))
        .output()
        .unwrap();
    assert!(o.status.success());
}

/// The README's first command, as a newcomer runs it (with the binary this
/// test suite built): a real ban, a real reset, exit 0, and nothing left
/// behind: no namespace, process, set or rule. With each backend
/// (`REFRACT_DEMO_FIREWALL`), nftables where `nft` is installed.
#[test]
fn demo_shows_a_ban_and_cleans_up() {
    if root_with(&["ip", "ipset", "iptables", "python3"]).is_none() {
        return;
    }
    demo_with("iptables");
    if have("nft") {
        demo_with("nftables");
    } else {
        skip("nft not installed: the demo ran with iptables only");
    }
}

fn demo_with(firewall: &str) {
    let child = Command::new("bash")
        .arg(repo().join("scripts/demo.sh"))
        .env("REFRACT_BIN", BIN)
        .env("REFRACT_DEMO_FIREWALL", firewall)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The demo names its namespaces `rfdemo<its pid>-…` and its files
    // /tmp/refract-demo.XXXXXX (it prints that path): what is left is
    // checked for this run's own, so a demo an operator runs meanwhile does
    // not count.
    let tag = format!("rfdemo{}-", child.id());
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        "disallowed concurrent connection from 198.51.100.12 w/ origin 192.0.2.11 [vless-in >> direct] email: alice@example.com",
        "198.51.100.12 timeout",
        "ended 1 tcp connection(s)",
        "phone: connection alive",
        "laptop: connection RESET",
        "laptop: blocked by the DROP rule",
    ] {
        assert!(out.contains(want), "demo output lacks {want:?}:\n{out}");
    }
    let work = out
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .find_map(|w| w.strip_prefix("/tmp/refract-demo."))
        .map(|rest| format!("/tmp/refract-demo.{}", rest.split('/').next().unwrap()))
        .unwrap_or_else(|| panic!("the demo names no work dir:\n{out}"));
    assert!(!std::path::Path::new(&work).exists(), "{work} is left");
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains(&tag),
        "a namespace {tag}… is left"
    );
    let ps = Command::new("pgrep").args(["-f", &work]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "a process of {work} is left"
    );
    let sets = Command::new("ipset").args(["list", "-n"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&sets.stdout).contains("refract_banned_users"),
        "a set is left on the host"
    );
    let rules = Command::new("iptables")
        .args(["-S", "INPUT"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains("refract"),
        "a rule is left on the host"
    );
    if firewall == "nftables" {
        // Read-only: the host's tables are listed, never changed.
        let tables = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&tables.stdout).contains("inet refract"),
            "a table inet refract is left on the host"
        );
    }
}

/// `install.sh --uninstall` cleans up with the installed settings (their
/// set names; other ports, both protocols, and a dry-run service still
/// get a real cleanup), and when something remains it says so, exits 1
/// and removes no file. Runs the DESTDIR install's own cleanup
/// (`--with-cleanup`) inside a network namespace of its own.
#[test]
fn uninstall_cleans_up_with_the_installed_settings_and_says_what_remains() {
    use crate::support::daemon::{access_line, append, Daemon};
    use crate::support::netns::{Netns, FIREWALL};
    let Some(ns) = Netns::with_tools("uninstall", FIREWALL) else {
        return;
    };
    let root = TempDir::new("uninstall-root");
    let script = repo().join("scripts/install.sh");
    let destdir = root.0.display().to_string();
    let install = || {
        let o = Command::new("bash")
            .arg(&script)
            .args(["--init", "systemd", "--bin", BIN])
            .env("DESTDIR", &root.0)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let uninstall = || {
        let s = script.display().to_string();
        ns.exec(&[
            "env",
            &format!("DESTDIR={destdir}"),
            "bash",
            &s,
            "--init",
            "systemd",
            "--uninstall",
            "--with-cleanup",
        ])
    };
    let settings = root.0.join("etc/default/refract");
    let witness = || {
        (
            ns.ok(&["iptables", "-S"]),
            ns.ok(&["ip6tables", "-S"]),
            ns.ok(&["ipset", "list", "-n"]),
        )
    };

    install();
    std::fs::write(
        &settings,
        "REFRACT_SET_NAME=rf_un4\nREFRACT_SET_NAME6=rf_un6\nREFRACT_DPORT=8443,2053\n\
         REFRACT_PROTO=tcp,udp\nREFRACT_DRY_RUN=true\n",
    )
    .unwrap();
    // An earlier run (not a dry run) made the sets and rules.
    let dir = TempDir::new("uninstall-run");
    let mut d = Daemon::start_in(
        &ns,
        &dir,
        &[
            "--set-name=rf_un4",
            "--set-name6=rf_un6",
            "--dport=8443,2053",
            "--proto=tcp,udp",
            "--window=1h",
        ],
    );
    append(&d.access, &access_line("erin@example.com", "198.51.100.41"));
    append(&d.access, &access_line("erin@example.com", "203.0.113.41"));
    d.wait_log("ban 203.0.113.41");
    assert_eq!(d.terminate().0.code(), Some(0), "{}", d.log());
    let (v4, _, sets) = witness();
    assert!(
        v4.contains("rf_un4") && sets.contains("rf_un6"),
        "{v4}{sets}"
    );

    let o = uninstall();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("install: cleanup: removed 4 DROP rule(s), destroyed rf_un4, rf_un6"),
        "{out}"
    );
    assert!(out.contains("refract removed"), "{out}");
    let (v4, v6, sets) = witness();
    assert!(
        !v4.contains("--match-set") && !v6.contains("--match-set"),
        "{v4}{v6}"
    );
    assert_eq!(sets.trim(), "");
    // Only the edited settings are left.
    assert_eq!(
        files_under(&root.0),
        ["etc/default/refract".to_string()].into_iter().collect()
    );

    // Something cleanup must not remove: --firewall none, and the
    // operator's own rule on the set. Uninstall says so and keeps every file.
    std::fs::remove_file(&settings).unwrap();
    install();
    let installed = files_under(&root.0);
    std::fs::write(
        &settings,
        "REFRACT_SET_NAME=rf_un4\nREFRACT_SET_NAME6=rf_un6\nREFRACT_FIREWALL=none\n",
    )
    .unwrap();
    ns.ok(&["ipset", "create", "rf_un4", "hash:ip", "timeout", "60"]);
    ns.ok(&[
        "iptables",
        "-A",
        "INPUT",
        "-m",
        "set",
        "--match-set",
        "rf_un4",
        "src",
        "-j",
        "DROP",
    ]);
    let o = uninstall();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("refract: cleanup: ipset: destroy rf_un4: set is in use"),
        "{err}"
    );
    assert!(err.contains("nothing was uninstalled"), "{err}");
    assert!(!out.contains("refract removed"), "{out}");
    assert_eq!(files_under(&root.0), installed);
    assert!(ns.ok(&["ipset", "list", "-n"]).contains("rf_un4"));
}

/// OpenWrt: every UCI option of `/etc/config/refract` is mapped by the
/// procd init script, and every flag the script passes is one the daemon
/// takes (its `--help`), so a renamed flag cannot break routers silently.
#[test]
fn openwrt_uci_options_map_to_daemon_flags() {
    let init = std::fs::read_to_string(repo().join("packaging/openwrt/refract.init")).unwrap();
    let uci =
        std::fs::read_to_string(repo().join("packaging/openwrt/files/refract.config")).unwrap();
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut mapped = BTreeSet::new();
    for line in init.lines().map(str::trim) {
        let Some(rest) = ["append_opt ", "append_list ", "append_bool "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
        else {
            continue;
        };
        let (option, flag) = rest.split_once(' ').unwrap();
        assert!(
            help.contains(&format!("--{flag}")),
            "--{flag} is not a daemon flag"
        );
        mapped.insert(option.to_string());
    }
    // `control` is read by control_socket(), `enabled` by start_service().
    mapped.insert("control".into());
    mapped.insert("enabled".into());
    for line in uci.lines().map(|l| l.trim().trim_start_matches('#')) {
        let Some(rest) = line
            .strip_prefix("option ")
            .or_else(|| line.strip_prefix("list "))
        else {
            continue;
        };
        let option = rest.split_whitespace().next().unwrap();
        assert!(mapped.contains(option), "UCI option {option} is not mapped");
    }
}
