//! The requests against what iproute2 sends, the parsers against what the
//! kernel answered it (`tests/fixtures/rtnl/`, captured by its
//! `capture.sh` with strace hex dumps inside a throwaway namespace; the
//! veth `v0` there has ifindex 3, its peer `v1` 2).

use super::*;
use crate::nl::consts::{NLM_F_CREATE, NLM_F_EXCL};
use crate::nl::msg::{Messages, Reply};

/// The buffers of a capture: `(sent, bytes)` in order. strace dumps each
/// iovec of a `sendmsg` on its own (offsets restart at 0), so the bytes of
/// one "> send" are the concatenation of its dumps.
fn capture(text: &str) -> Vec<(bool, Vec<u8>)> {
    let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
    for line in text.lines() {
        match line {
            "> send" => out.push((true, Vec::new())),
            "< recv" => out.push((false, Vec::new())),
            _ => {
                // " | 00000  48 00 …  ascii |": 16 hex bytes in columns 10..59.
                let hex = line.get(10..59).expect("a hex dump line");
                let cur = &mut out.last_mut().expect("a buffer first").1;
                cur.extend(
                    hex.split_whitespace()
                        .map(|h| u8::from_str_radix(h, 16).unwrap()),
                );
            }
        }
    }
    out.retain(|(_, b)| !b.is_empty());
    out
}

/// The request of a capture (its one "> send").
fn request(text: &str) -> Vec<u8> {
    let mut sent = capture(text).into_iter().filter(|(s, _)| *s);
    let req = sent.next().expect("a request").1;
    assert!(sent.next().is_none(), "one request per fixture");
    req
}

fn seq_of(req: &[u8]) -> u32 {
    u32::from_ne_bytes(req[8..12].try_into().unwrap())
}

/// The data messages the kernel answered, as (type, payload).
fn answers(text: &str) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    for (sent, bytes) in capture(text) {
        if sent {
            continue;
        }
        for r in Messages::new(&bytes) {
            if let Ok(Reply::Data(m)) = r {
                out.push((m.ty, m.payload.to_vec()));
            }
        }
    }
    out
}

fn msg(m: &(u16, Vec<u8>)) -> Msg<'_> {
    Msg {
        ty: m.0,
        flags: 0,
        seq: 0,
        pid: 0,
        payload: &m.1,
    }
}

const V0: u32 = 3;
const TAG: u32 = 0x5246_0000;

#[test]
fn htb_root_is_what_tc_qdisc_add_sends() {
    let tc = request(include_str!("../../../tests/fixtures/rtnl/qdisc-add.txt"));
    let mut b = NlBuf::new();
    new_htb_root(&mut b, seq_of(&tc), V0, 0x5246, NLM_F_CREATE | NLM_F_EXCL);
    assert_eq!(b.as_bytes(), &tc[..]);
}

#[test]
fn root_delete_is_what_tc_qdisc_del_sends() {
    let tc = request(include_str!("../../../tests/fixtures/rtnl/qdisc-del.txt"));
    let mut b = NlBuf::new();
    del_root_qdisc(&mut b, seq_of(&tc), V0, tc_handle(0x5246, 0));
    assert_eq!(b.as_bytes(), &tc[..]);
}

/// tc's class message without what only a rate table needs: the
/// `TCA_HTB_RTAB`/`TCA_HTB_CTAB` attributes (2 × 1 KiB) and the ratespecs'
/// `cell_log`/`cell_align` (the kernel reads none of them with
/// `TC_LINKLAYER_ETHERNET`, see `htb_change_class()`).
fn without_rate_tables(tc: &[u8]) -> Vec<u8> {
    let ty = u16::from_ne_bytes([tc[4], tc[5]]);
    let flags = u16::from_ne_bytes([tc[6], tc[7]]);
    let body = &tc[16..];
    let mut b = NlBuf::new();
    b.message(ty, flags, seq_of(tc), |b| {
        b.put(&body[..TCMSG_LEN]);
        for a in Attrs::new(&body[TCMSG_LEN..]) {
            if a.ty != TCA_OPTIONS {
                b.attr(a.ty, a.payload);
                continue;
            }
            b.nested_noflag(TCA_OPTIONS, |b| {
                for o in a.attrs() {
                    match o.ty {
                        TCA_HTB_RTAB | TCA_HTB_CTAB => {}
                        TCA_HTB_PARMS => {
                            let mut p = o.payload.to_vec();
                            for spec in [0, TC_RATESPEC_LEN] {
                                p[spec] = 0; // cell_log
                                p[spec + 4..spec + 6].fill(0); // cell_align
                            }
                            b.attr(o.ty, &p);
                        }
                        _ => b.attr(o.ty, o.payload),
                    }
                }
            });
        }
    });
    b.as_bytes().to_vec()
}

#[test]
fn class_add_is_what_tc_class_add_sends_without_rate_tables() {
    // tc class add … classid 5246:5 htb rate 2mbit ceil 2mbit burst 2500
    // cburst 2500 quantum 25000: 250000 B/s, 10 ms of it, rate / 10.
    let tc = request(include_str!("../../../tests/fixtures/rtnl/class-add.txt"));
    assert!(tc.len() > 2048, "tc sent its rate tables");
    let mut b = NlBuf::new();
    htb_class(
        &mut b,
        seq_of(&tc),
        V0,
        0x5246,
        5,
        250_000,
        NLM_F_CREATE | NLM_F_EXCL,
    );
    assert_eq!(b.as_bytes(), &without_rate_tables(&tc)[..]);
    assert_eq!(b.len(), 96);
}

#[test]
fn class_change_is_what_tc_class_change_sends_without_rate_tables() {
    // … rate 4mbit ceil 4mbit burst 5000 cburst 5000 quantum 50000; no
    // flags: change in place.
    let tc = request(include_str!(
        "../../../tests/fixtures/rtnl/class-change.txt"
    ));
    let mut b = NlBuf::new();
    htb_class(&mut b, seq_of(&tc), V0, 0x5246, 5, 500_000, 0);
    assert_eq!(b.as_bytes(), &without_rate_tables(&tc)[..]);
}

#[test]
fn rates_past_32_bits_go_in_rate64_as_tc_sends_them() {
    // … classid 5246:6 htb rate 40gbit ceil 40gbit burst 50000000 …
    // quantum 200000: 5e9 B/s does not fit the ratespec's u32.
    let tc = request(include_str!("../../../tests/fixtures/rtnl/class-add64.txt"));
    let mut b = NlBuf::new();
    htb_class(
        &mut b,
        seq_of(&tc),
        V0,
        0x5246,
        6,
        5_000_000_000,
        NLM_F_CREATE | NLM_F_EXCL,
    );
    assert_eq!(b.as_bytes(), &without_rate_tables(&tc)[..]);
}

#[test]
fn class_delete_is_what_tc_class_del_sends() {
    let tc = request(include_str!("../../../tests/fixtures/rtnl/class-del.txt"));
    let mut b = NlBuf::new();
    del_class(&mut b, seq_of(&tc), V0, tc_handle(0x5246, 6));
    assert_eq!(b.as_bytes(), &tc[..]);
}

#[test]
fn bpf_filter_is_what_tc_filter_add_sends() {
    // tc filter add dev v0 parent 5246: prio 1 handle 1 protocol all bpf
    // bytecode "9,128 0 0 0,…": our program, spelled out.
    let tc = request(include_str!("../../../tests/fixtures/rtnl/filter-add.txt"));
    let mut b = NlBuf::new();
    BpfClassicFilter {
        ifindex: V0,
        parent_major: 0x5246,
        prio: 1,
        handle: 1,
        program: &mark_classifier(TAG),
    }
    .emit(&mut b, seq_of(&tc), NLM_F_CREATE | NLM_F_EXCL);
    assert_eq!(b.as_bytes(), &tc[..]);
}

#[test]
fn dumps_are_what_tc_show_sends() {
    let mut b = NlBuf::new();
    let tc = request(include_str!("../../../tests/fixtures/rtnl/qdisc-show.txt"));
    dump_qdiscs(&mut b, seq_of(&tc), V0);
    assert_eq!(b.as_bytes(), &tc[..]);
    let tc = request(include_str!("../../../tests/fixtures/rtnl/class-show.txt"));
    b.clear();
    dump_classes(&mut b, seq_of(&tc), V0);
    assert_eq!(b.as_bytes(), &tc[..]);
    let tc = request(include_str!("../../../tests/fixtures/rtnl/filter-show.txt"));
    b.clear();
    dump_filters(&mut b, seq_of(&tc), V0, 0x5246);
    assert_eq!(b.as_bytes(), &tc[..]);
}

#[test]
fn qdisc_dump_reads_back_every_link() {
    // tc asked for v0 (ifindex 3); the kernel sent v1's noqueue too.
    let msgs = answers(include_str!("../../../tests/fixtures/rtnl/qdisc-show.txt"));
    let q: Vec<Qdisc> = msgs.iter().filter_map(|m| parse_qdisc(&msg(m))).collect();
    assert_eq!(
        q,
        vec![
            Qdisc {
                ifindex: 2,
                handle: 0,
                parent: TC_H_ROOT,
                kind: "noqueue".into(),
                direct_packets: None,
            },
            Qdisc {
                ifindex: 3,
                handle: TAG,
                parent: TC_H_ROOT,
                kind: "htb".into(),
                direct_packets: Some(1), // a neighbour solicitation, unclassified
            },
        ]
    );
    assert!(q.iter().all(Qdisc::is_root));
}

#[test]
fn class_dump_reads_rates_32_and_64_bits() {
    // After class-change (5246:5 at 4 Mbit/s) and class-add64 (5246:6).
    let msgs = answers(include_str!("../../../tests/fixtures/rtnl/class-show.txt"));
    let c: Vec<Class> = msgs.iter().filter_map(|m| parse_class(&msg(m))).collect();
    assert_eq!(c.len(), 2);
    assert_eq!(
        (c[0].handle, c[0].parent, c[0].kind.as_str()),
        (tc_handle(0x5246, 5), TC_H_ROOT, "htb")
    );
    assert_eq!(
        (c[0].rate, c[0].ceil, c[0].bytes),
        (Some(500_000), Some(500_000), Some(0))
    );
    assert_eq!(c[1].handle, tc_handle(0x5246, 6));
    assert_eq!(
        (c[1].rate, c[1].ceil),
        (Some(5_000_000_000), Some(5_000_000_000))
    );
}

#[test]
fn filter_dump_has_the_prio_then_our_program() {
    let msgs = answers(include_str!("../../../tests/fixtures/rtnl/filter-show.txt"));
    let f: Vec<Filter> = msgs.iter().filter_map(|m| parse_filter(&msg(m))).collect();
    assert_eq!(f.len(), 2);
    for x in &f {
        assert_eq!(
            (x.ifindex, x.parent, x.prio, x.protocol, x.kind.as_str()),
            (V0, TAG, 1, ETH_P_ALL, "bpf")
        );
        assert_eq!(x.bpf_flags, 0);
    }
    // The tcf_proto's own message: handle 0, no program.
    assert_eq!((f[0].handle, &f[0].program), (0, &None));
    assert_eq!(f[1].handle, 1);
    assert_eq!(f[1].program.as_deref(), Some(&mark_classifier(TAG)[..]));
}

#[test]
fn link_and_route_answers() {
    let msgs = answers(include_str!("../../../tests/fixtures/rtnl/link-get.txt"));
    let links: Vec<Link> = msgs.iter().filter_map(|m| parse_link(&msg(m))).collect();
    assert_eq!(
        links,
        vec![Link {
            index: V0,
            name: "v0".into()
        }]
    );
    // ip route get 1.1.1.1 with a default route via v0.
    let msgs = answers(include_str!("../../../tests/fixtures/rtnl/route-get.txt"));
    assert_eq!(msgs.len(), 1);
    assert_eq!(parse_route_oif(&msg(&msgs[0])), Some(V0));
    assert_eq!(parse_link(&msg(&msgs[0])), None);
}

#[test]
fn link_and_route_requests() {
    // Not byte for byte with `ip` (it asks as AF_PACKET with other
    // extension bits): the fields the kernel looks at.
    let mut b = NlBuf::new();
    get_link_by_name(&mut b, 9, "eth0");
    let m = match Messages::new(b.as_bytes()).next() {
        Some(Ok(Reply::Data(m))) => m,
        r => panic!("{r:?}"),
    };
    assert_eq!(
        (m.ty, m.flags, m.seq),
        (RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, 9)
    );
    assert_eq!(&m.payload[..IFINFOMSG_LEN], &[0; IFINFOMSG_LEN]);
    let a: Vec<_> = Attrs::new(&m.payload[IFINFOMSG_LEN..]).collect();
    assert_eq!((a[0].ty, a[0].payload), (IFLA_IFNAME, &b"eth0\0"[..]));
    assert_eq!(
        (a[1].ty, a[1].u32()),
        (IFLA_EXT_MASK, Some(RTEXT_FILTER_SKIP_STATS))
    );

    // ip route get 1.1.1.1: this one is what ip sends.
    let ip = request(include_str!("../../../tests/fixtures/rtnl/route-get.txt"));
    b.clear();
    get_route(&mut b, seq_of(&ip), "1.1.1.1".parse().unwrap());
    let mut want = ip.clone();
    want[6] |= NLM_F_ACK as u8; // ours asks for an ack (an error then arrives as one)
    assert_eq!(b.as_bytes(), &want[..]);
    b.clear();
    get_route(&mut b, 1, "2606:4700:4700::1111".parse().unwrap());
    let bytes = b.as_bytes();
    assert_eq!(bytes.len(), 16 + RTMSG_LEN + 20);
    assert_eq!(&bytes[16..18], &[libc::AF_INET6 as u8, 128]);
}

#[test]
fn the_classifier_returns_our_class_ids_only() {
    let p = mark_classifier(TAG);
    for (mark, want) in [
        (0x5246_0005, 0x5246_0005), // a capped user's connection
        (0x5246_0001, 0x5246_0001),
        (0x5246_fffe, 0x5246_fffe),
        (0x5246_0000, 0), // minor 0: the qdisc, not a class
        (0, 0),           // unmarked
        (0x0000_0005, 0), // someone else's mark
        (0x5247_0005, 0),
        (0xffff_ffff, 0),
        (0x1246_0005, 0),
    ] {
        assert_eq!(run_classic(&p, 1514, mark), Some(want), "mark {mark:#x}");
        // Small packets (ACKs) are never classified.
        assert_eq!(run_classic(&p, 66, mark), Some(0), "ack, mark {mark:#x}");
        assert_eq!(run_classic(&p, SMALL_PACKET, mark), Some(0));
        let first = if want == 0 { 0 } else { want };
        assert_eq!(run_classic(&p, SMALL_PACKET + 1, mark), Some(first));
    }
    // Every jump lands inside the program and it ends in returns.
    for (i, op) in p.iter().enumerate() {
        if op.code & 0x07 == BPF_JMP {
            assert!(i + 1 + usize::from(op.jt.max(op.jf)) < p.len());
        }
    }
    assert_eq!(parse_program(&program_bytes(&p)).unwrap(), p);
    assert_eq!(parse_program(&[0; 7]), None);
}

#[test]
fn burst_buffer_and_quantum() {
    // 2 Mbit/s: 10 ms is 2500 B = 156250 ticks of 64 ns.
    assert_eq!(htb_burst(250_000), 2500);
    assert_eq!(psched_ticks(2500, 250_000), 156_250);
    // Slow classes keep a full frame: 1600 B at 8 kB/s is 200 ms.
    assert_eq!(htb_burst(8_000), HTB_MIN_BURST);
    assert_eq!(psched_ticks(1600, 8_000), 3_125_000);
    // 40 Gbit/s: still 10 ms.
    assert_eq!(
        psched_ticks(htb_burst(5_000_000_000), 5_000_000_000),
        156_250
    );
    // Saturates instead of wrapping (1 B/s: 1600 s).
    assert_eq!(psched_ticks(HTB_MIN_BURST, 1), u32::MAX);
    assert_eq!(htb_quantum(250_000), 25_000);
    assert_eq!(htb_quantum(1_000), 1_000);
    assert_eq!(htb_quantum(u64::MAX), 200_000);
    assert_eq!(tc_major(tc_handle(0x5246, 7)), 0x5246);
    assert_eq!(tc_minor(tc_handle(0x5246, 7)), 7);
}
