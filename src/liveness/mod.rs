//! Liveness facts: whether a connection that a user's lines were
//! attributed to is *in use*, judged from what the kernel reports of its
//! socket (`struct tcp_info`, [`crate::nl::diag::TcpInfo`]). Pure: no
//! clock, no I/O; the caller passes the look's time and the window.
//!
//! The rule is the policy's (see "Liveness" and "Count use, not
//! keepalives" in [`crate::policy`]): a connection is in use within the
//! window W when, as of the look,
//!
//! 1. the client sent data within W (`tcpi_last_data_recv <= W`), or
//! 2. it acknowledged new data within W: `tcpi_bytes_acked` advanced since
//!    a previous look that is itself within W (so the ACK that moved it
//!    came after that look), or
//! 3. data is in flight (`tcpi_unacked > 0`) and the last ACK came within
//!    W: a download-only client sends nothing but ACKs; or
//! 4. we sent data within W (`tcpi_last_data_sent <= W`) and an ACK came
//!    after it (`tcpi_last_ack_recv <= tcpi_last_data_sent`): that ACK
//!    acknowledges data, since no probe was sent while data flowed. This is
//!    what a first look at a download sees between two of its bursts (on a
//!    fast path everything is acknowledged and nothing is in flight most of
//!    the time), before rule 2 has a previous look to compare with.
//!
//! Not in use: an ESTABLISHED socket whose peer vanished (data in flight,
//! retransmitted, no ACK for longer than W), and an idle connection whose
//! only traffic is TCP keepalive: V2Ray's and Xray's Go sockets probe every
//! 15 s, and the answer moves `tcpi_last_ack_recv` but acknowledges no new
//! data (the probe repeats an old sequence number, `tcp_xmit_probe_skb()`)
//! and leaves nothing in flight, and the probe carries no data, so the last
//! data we sent is as old as the idleness; so none of rules 2 to 4 holds,
//! and the verdict does not depend on where in its 15 s the keepalive is.
//! A vanished peer is retransmitted to (our last data is recent) but sends
//! no ACK after it: rule 4 does not hold either.
//!
//! The rule is here; [`track`] attributes lines to connections and plans
//! the checks, [`kernel`] asks the kernel, and the daemon applies the
//! facts to the policy (`crate::daemon`).

pub mod kernel;
pub mod track;

use crate::clock::Micros;
use crate::nl::diag::TcpInfo;

/// What one look at a connection saw, kept for the next look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    /// When (the caller's clock, the policy's scale).
    pub at: Micros,
    /// `tcpi_bytes_acked` then (`None`: the kernel does not report it).
    pub bytes_acked: Option<u64>,
}

/// When the client last used the connection, if that is within `window`
/// of `now` (module docs: `None` = not in use), from its `tcp_info` and
/// the previous look; with the look to keep. The time is the latest the
/// kernel's figures prove: the last data segment, the last ACK while data
/// was in flight, or, for new data acknowledged since the previous look,
/// that look's time (the ACK came after it; when exactly is not known, so
/// the earliest possible moment: a key believed in use for less long, never
/// longer than the kernel shows).
pub fn last_use(
    prev: Option<Look>,
    now: Micros,
    info: &TcpInfo,
    window: Micros,
) -> (Option<Micros>, Look) {
    let ago = |ms: u32| {
        let us = u64::from(ms) * 1_000;
        (us <= window).then(|| now.saturating_sub(us))
    };
    let data = ago(info.last_data_recv_ms);
    let in_flight = if info.unacked > 0 {
        ago(info.last_ack_recv_ms)
    } else {
        None
    };
    let acked_ours = if ago(info.last_data_sent_ms).is_some()
        && info.last_ack_recv_ms <= info.last_data_sent_ms
    {
        ago(info.last_ack_recv_ms)
    } else {
        None
    };
    let acked_new = match (prev, info.bytes_acked) {
        (Some(p), Some(now_acked))
            if p.bytes_acked.is_some_and(|was| now_acked > was)
                && now.saturating_sub(p.at) <= window =>
        {
            Some(p.at)
        }
        _ => None,
    };
    let look = Look {
        at: now,
        bytes_acked: info.bytes_acked,
    };
    (data.max(in_flight).max(acked_ours).max(acked_new), look)
}

/// Whether the connection is in use within `window` as of `now`
/// ([`last_use`] is `Some`).
pub fn in_use(prev: Option<Look>, now: Micros, info: &TcpInfo, window: Micros) -> (bool, Look) {
    let (at, look) = last_use(prev, now, info, window);
    (at.is_some(), look)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SECOND;

    const W: Micros = 5 * SECOND;

    fn info(unacked: u32, data_ms: u32, ack_ms: u32, acked: u64) -> TcpInfo {
        TcpInfo {
            state: crate::nl::diag::TCP_ESTABLISHED,
            unacked,
            last_data_sent_ms: 60_000,
            last_data_recv_ms: data_ms,
            last_ack_recv_ms: ack_ms,
            bytes_acked: Some(acked),
        }
    }

    #[test]
    fn data_from_the_client_within_the_window() {
        assert!(in_use(None, 100 * SECOND, &info(0, 4_999, 60_000, 0), W).0);
        assert!(!in_use(None, 100 * SECOND, &info(0, 5_001, 60_000, 0), W).0);
    }

    #[test]
    fn the_last_use_is_the_latest_time_the_figures_prove() {
        let now = 100 * SECOND;
        // Data 4 s ago, an ACK of data in flight 1 s ago: 1 s ago.
        let (at, _) = last_use(None, now, &info(3, 4_000, 1_000, 0), W);
        assert_eq!(at, Some(now - SECOND));
        // Nothing in flight: the ACK (a keepalive answer) proves nothing.
        let (at, _) = last_use(None, now, &info(0, 4_000, 1_000, 0), W);
        assert_eq!(at, Some(now - 4 * SECOND));
        // New data acknowledged since a look 2 s ago: that look's time.
        let prev = Look {
            at: now - 2 * SECOND,
            bytes_acked: Some(10),
        };
        let (at, look) = last_use(Some(prev), now, &info(0, 60_000, 500, 99), W);
        assert_eq!(at, Some(now - 2 * SECOND));
        assert_eq!(
            look,
            Look {
                at: now,
                bytes_acked: Some(99)
            }
        );
    }

    #[test]
    fn a_download_only_client_acks_data_in_flight() {
        // Nothing from the client but ACKs; our data in flight.
        assert!(in_use(None, 100 * SECOND, &info(12, 40_000, 30, 1 << 20), W).0);
    }

    #[test]
    fn a_download_that_finished_between_two_looks() {
        let (_, first) = in_use(None, 100 * SECOND, &info(0, 40_000, 9_000, 1000), W);
        // 3 s later: nothing in flight, but 50 KB more were acknowledged.
        let (used, _) = in_use(
            Some(first),
            103 * SECOND,
            &info(0, 43_000, 2_000, 51_000),
            W,
        );
        assert!(used);
        // The same advance seen only 30 s after the previous look: the ACK
        // that moved it may be older than the window.
        let (stale, _) = in_use(
            Some(first),
            130 * SECOND,
            &info(0, 70_000, 2_000, 51_000),
            W,
        );
        assert!(!stale);
    }

    #[test]
    fn a_vanished_peer_is_not_in_use() {
        // ESTABLISHED, retransmitting into a network that is gone: data in
        // flight, no ACK for 20 s, nothing new acknowledged.
        // Our retransmissions are recent data sent; no ACK came after them.
        let mut i = info(8, 20_000, 20_000, 5000);
        i.last_data_sent_ms = 300;
        let (used, first) = in_use(None, 100 * SECOND, &i, W);
        assert!(!used);
        i.last_data_recv_ms = 22_000;
        i.last_ack_recv_ms = 22_000;
        i.last_data_sent_ms = 1_200;
        let (used, _) = in_use(Some(first), 102 * SECOND, &i, W);
        assert!(!used);
    }

    #[test]
    fn a_first_look_between_two_bursts_of_a_download() {
        // 1000 bytes every 100 ms over a fast path: at the look all of it
        // is acknowledged, nothing in flight, no previous look; the last
        // burst went out 60 ms ago and its ACK came 59 ms ago.
        let mut i = info(0, 40_000, 59, 1 << 20);
        i.last_data_sent_ms = 60;
        let (at, _) = last_use(None, 100 * SECOND, &i, W);
        assert_eq!(at, Some(100 * SECOND - 59_000));
        // The ACK before our last data: not proven (it may be a probe's).
        i.last_ack_recv_ms = 61;
        assert_eq!(last_use(None, 100 * SECOND, &i, W).0, None);
    }

    #[test]
    fn keepalive_answers_never_count_whatever_their_phase() {
        // An idle connection: no data for 10 min, Go's keepalive every
        // 15 s; look every second over two keepalive periods, so every
        // phase of the probe relative to the look is seen.
        let mut prev = None;
        for t in 0..30u32 {
            let now = 600 * SECOND + Micros::from(t) * SECOND;
            let since_probe_ms = (t % 15) * 1_000;
            let mut i = info(0, 600_000 + t * 1_000, since_probe_ms, 77_777);
            i.last_data_sent_ms = 600_000 + t * 1_000;
            let (used, look) = in_use(prev, now, &i, W);
            assert!(!used, "idle connection counted at t={t}s");
            prev = Some(look);
        }
    }

    #[test]
    fn no_bytes_acked_from_old_kernels_falls_back_on_the_other_rules() {
        let mut i = info(0, 60_000, 100, 0);
        i.bytes_acked = None;
        let (_, first) = in_use(None, 100 * SECOND, &i, W);
        assert!(!in_use(Some(first), 101 * SECOND, &i, W).0);
        i.unacked = 1;
        assert!(in_use(Some(first), 101 * SECOND, &i, W).0);
    }
}
