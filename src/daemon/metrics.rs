//! The daemon's Prometheus metrics ([`crate::metrics`] for the format and
//! the listener): every counter the `stats:` line has, by Prometheus
//! names, plus the decision latency histogram. Rendered on demand (a
//! scrape, or the `--metrics-file` writer), from plain counters the loop
//! keeps anyway: a scrape costs the loop one pass over the users online
//! and the bans, nothing between scrapes.

use super::core::VERDICTS;
use super::Daemon;
use crate::clock::{localtime_now, Micros, SECOND};
use crate::key::Key;
use crate::metrics::Exposition;
use crate::policy::skip::Skip;

/// How often `--metrics-file` is rewritten while something changed.
pub const FILE_EVERY: Micros = 5 * SECOND;

impl Daemon {
    /// The whole exposition at `now`.
    pub(super) fn render_metrics(&self, now: Micros) -> String {
        let mut e = Exposition::new();
        let s = &self.core.stats;
        let t = self.tail.stats();
        let p = self.core.policy.stats();
        let en = self.core.enforcer.stats();
        let version = env!("CARGO_PKG_VERSION");
        e.gauge(
            "refract_build_info",
            "Always 1; the version in a label.",
            &[(&[("version", version)], 1.0)],
        );
        e.gauge(
            "refract_start_time_seconds",
            "Seconds since the daemon started.",
            &[(&[], (now.saturating_sub(self.started) / SECOND) as f64)],
        );
        let skipped: u64 = s.skipped.iter().sum();
        let mut by_verdict: Vec<(&[(&str, &str)], u64)> = Vec::new();
        let labels: Vec<[(&str, &str); 1]> = VERDICTS.iter().map(|v| [("verdict", *v)]).collect();
        for (i, l) in labels.iter().enumerate() {
            by_verdict.push((l, s.verdicts[i]));
        }
        let skipped_label = [("verdict", "skipped")];
        by_verdict.push((&skipped_label, skipped));
        e.counter(
            "refract_log_lines_total",
            "Complete log lines read, by what the policy did with them.",
            &by_verdict,
        );
        let reasons: Vec<[(&str, &str); 1]> =
            Skip::ALL.iter().map(|k| [("reason", k.name())]).collect();
        let by_reason: Vec<(&[(&str, &str)], u64)> = reasons
            .iter()
            .zip(Skip::ALL)
            .map(|(l, k)| (&l[..], s.skipped[k.index()]))
            .collect();
        e.counter(
            "refract_log_skipped_lines_total",
            "Lines that never count, by reason.",
            &by_reason,
        );
        e.counter(
            "refract_log_read_bytes_total",
            "Bytes of the access log read.",
            &[(&[], t.bytes)],
        );
        e.counter(
            "refract_log_rotations_total",
            "Times the access log was found replaced (rotated, recreated).",
            &[(&[], t.rotations)],
        );
        e.counter(
            "refract_log_truncations_total",
            "Times the access log was found truncated in place.",
            &[(&[], t.truncations)],
        );
        e.counter(
            "refract_log_read_errors_total",
            "Errors reading the access log.",
            &[(&[], t.errors)],
        );
        if let Some(ts) = s.last_ts {
            // Both sides are local civil time: the zone cancels out.
            let lag = localtime_now().as_micros().saturating_sub(ts.as_micros());
            e.gauge(
                "refract_log_lag_seconds",
                "Seconds between the newest line's own timestamp and now.",
                &[(&[], lag as f64 / SECOND as f64)],
            );
        }
        e.counter(
            "refract_bans_total",
            "Bans made, by reason.",
            &[
                (&[("reason", "limit")], s.bans_by[0]),
                (&[("reason", "liveness")], s.bans_by[1]),
                (&[("reason", "manual")], s.bans_by[2]),
                (&[("reason", "fleet")], s.bans_by[3]),
            ],
        );
        e.counter(
            "refract_unbans_total",
            "Bans lifted, by reason.",
            &[
                (&[("reason", "expired")], s.expired),
                (&[("reason", "manual")], s.unbans_manual),
            ],
        );
        let bans = self.core.policy.bans(now);
        let v4 = bans
            .iter()
            .filter(|(k, _, _)| matches!(k, Key::V4(_)))
            .count();
        e.gauge(
            "refract_bans_active",
            "Bans in force, by address family.",
            &[
                (&[("family", "ipv4")], v4 as f64),
                (&[("family", "ipv6")], (bans.len() - v4) as f64),
            ],
        );
        e.counter(
            "refract_connections_killed_total",
            "Open connections of banned addresses ended (TCP: SOCK_DESTROY, UDP: conntrack delete).",
            &[
                (&[("proto", "tcp")], en.tcp_killed),
                (&[("proto", "udp")], en.udp_killed),
            ],
        );
        let online = self.core.policy.online(now);
        let devices: usize = online.iter().map(|(_, k)| k.len()).sum();
        e.gauge(
            "refract_users_online",
            "Users with at least one device online.",
            &[(&[], online.len() as f64)],
        );
        e.gauge(
            "refract_devices_online",
            "Devices (addresses, IPv6 prefixes) online over all users.",
            &[(&[], devices as f64)],
        );
        let (users, keys) = self.core.policy.tracked();
        e.gauge(
            "refract_tracked_users",
            "Users the policy keeps state for (bounded by --max-users).",
            &[(&[], users as f64)],
        );
        e.gauge(
            "refract_tracked_keys",
            "Addresses the policy keeps state for, bans included (bounded by --max-keys).",
            &[(&[], keys as f64)],
        );
        let live = self.core.live.as_ref();
        let live_errors = live.map_or(0, |l| l.stats.errors);
        e.counter(
            "refract_kernel_errors_total",
            "Kernel requests that failed, by subsystem.",
            &[
                (&[("subsystem", "enforcer")], en.errors),
                (&[("subsystem", "liveness")], live_errors),
            ],
        );
        e.counter(
            "refract_kernel_repairs_total",
            "Sets or DROP rules found missing and made again.",
            &[(&[], en.repairs)],
        );
        e.counter(
            "refract_set_full_total",
            "Bans the kernel refused because the set was full (--set-size).",
            &[(&[], en.set_full)],
        );
        e.counter(
            "refract_audit_errors_total",
            "Audit log writes that failed.",
            &[(&[], s.audit_errors)],
        );
        e.histogram(
            "refract_decision_latency_seconds",
            "Log line read to its ban's set entry in the kernel.",
            &self.core.latency,
        );
        let mut rtt = crate::metrics::Histogram::new(crate::metrics::LATENCY_BOUNDS);
        self.core.enforcer.rtt(&mut rtt);
        if let Some(l) = self.core.live.as_ref() {
            l.rtt(&mut rtt);
        }
        e.histogram(
            "refract_netlink_rtt_seconds",
            "Netlink requests, sent to answered (ipset, kills, liveness lookups; a dump: its walk).",
            &rtt,
        );
        let l = live.map(|l| l.tracker.stats.clone()).unwrap_or_default();
        e.counter(
            "refract_liveness_checks_total",
            "Kernel checks of users' connections, by kind.",
            &[
                (&[("kind", "newcomer")], l.checks.saturating_sub(l.rechecks)),
                (&[("kind", "recheck")], l.rechecks),
            ],
        );
        e.counter(
            "refract_liveness_evicted_connections_total",
            "Tracked connections forgotten to make room in a full table.",
            &[(&[], l.evicted)],
        );
        e.counter(
            "refract_liveness_lookups_total",
            "Exact kernel lookups of connections.",
            &[(&[], l.lookups)],
        );
        e.counter(
            "refract_liveness_facts_total",
            "Connections found in use by a lookup.",
            &[(&[], l.facts)],
        );
        e.counter(
            "refract_attributed_lines_total",
            "Lines attributed to a connection, and lines that name none refract can look up.",
            &[
                (&[("attributed", "yes")], l.attributed),
                (&[("attributed", "no")], l.unattributed),
            ],
        );
        e.counter(
            "refract_deferred_lines_total",
            "Lines whose verdict waited for a kernel check, and how many ran out of time.",
            &[
                (
                    &[("outcome", "decided")],
                    l.deferred.saturating_sub(s.deferred_timeouts),
                ),
                (&[("outcome", "timeout")], s.deferred_timeouts),
            ],
        );
        let control = self.control.as_ref();
        e.counter(
            "refract_dropped_events_total",
            "Work refused at a bound, by queue.",
            &[
                (&[("queue", "deferred_lines")], l.deferred_full),
                (&[("queue", "tracked_connections")], l.refused),
                (
                    &[("queue", "policy_state")],
                    p.users_refused + p.keys_refused,
                ),
                (
                    &[("queue", "control_clients")],
                    control.map_or(0, |c| c.refused + c.dropped),
                ),
                (
                    &[("queue", "metrics_clients")],
                    self.metrics.as_ref().map_or(0, |m| m.refused),
                ),
            ],
        );
        let h = self
            .hooks
            .as_ref()
            .map(|h| h.stats.clone())
            .unwrap_or_default();
        e.counter(
            "refract_hook_runs_total",
            "Hook runs (--on-ban, --on-unban) by result; dropped: not run, the queue was full.",
            &[
                (&[("result", "ok")], h.ok),
                (&[("result", "failed")], h.failed),
                (&[("result", "timeout")], h.timeout),
                (&[("result", "spawn_error")], h.spawn_errors),
                (&[("result", "dropped")], h.dropped),
            ],
        );
        if let Some(f) = self.core.fleet.as_ref() {
            let fs = &f.stats;
            e.gauge(
                "refract_fleet_up",
                "1 while the fleet's Redis/Valkey answers, 0 while this node decides alone.",
                &[(&[], f64::from(u8::from(fs.up)))],
            );
            e.counter(
                "refract_fleet_requests_total",
                "Fleet admissions and refreshes sent, and how admissions ended.",
                &[
                    (&[("result", "sent")], fs.requests),
                    (&[("result", "admitted")], fs.admitted),
                    (&[("result", "over")], fs.over),
                    (&[("result", "timeout")], fs.timeouts),
                    (&[("result", "error")], fs.errors),
                ],
            );
        }
        if let Some(sh) = self.core.shape.as_ref() {
            let x = &sh.stats;
            e.gauge(
                "refract_shaped_users",
                "Users with a bandwidth mark now (a class and/or an upload limit).",
                &[(&[], sh.marks.len() as f64)],
            );
            e.counter(
                "refract_shape_connections_marked_total",
                "Connections handed their user's mark (peer elements sent).",
                &[(&[], x.marked)],
            );
            e.counter(
                "refract_shape_user_changes_total",
                "Capped users given a mark, changed in place (reload), released.",
                &[
                    (&[("change", "added")], x.added),
                    (&[("change", "changed")], x.changed),
                    (&[("change", "released")], x.released),
                ],
            );
            e.counter(
                "refract_shape_errors_total",
                "Shaping requests the kernel refused or did not answer, and lines of capped users with every mark taken.",
                &[
                    (&[("kind", "kernel")], x.errors),
                    (&[("kind", "marks_full")], sh.marks.full),
                ],
            );
            e.counter(
                "refract_shape_repairs_total",
                "Shaping objects deleted behind refract's back and rebuilt.",
                &[(&[], x.repairs)],
            );
        }
        e.counter(
            "refract_control_requests_total",
            "Requests served on the control socket.",
            &[(&[], control.map_or(0, |c| c.served))],
        );
        e.counter(
            "refract_wakeups_total",
            "Loop turns (0 per second when idle).",
            &[(&[], s.wakeups)],
        );
        e.into_text()
    }

    /// A cheap fingerprint of what the metrics show (lines, bans, …): the
    /// file is rewritten only when it moved.
    pub(super) fn metrics_fingerprint(&self) -> u64 {
        let s = &self.core.stats;
        let t = self.tail.stats();
        let en = self.core.enforcer.stats();
        s.lines
            .wrapping_mul(31)
            .wrapping_add(t.bytes)
            .wrapping_mul(31)
            .wrapping_add(s.bans + s.expired + s.unbans_manual)
            .wrapping_mul(31)
            .wrapping_add(en.errors + en.tcp_killed + en.udp_killed + en.repairs)
            .wrapping_mul(31)
            .wrapping_add(t.rotations + t.truncations)
    }

    /// `--metrics-file`: written at most every [`FILE_EVERY`], and only
    /// while something changed (no wakeup while nothing does).
    pub(super) fn metrics_file_turn(&mut self, now: Micros) {
        let Some(path) = self.cfg.metrics_file.clone() else {
            return;
        };
        let print = self.metrics_fingerprint();
        if self.metrics_written == Some(print) {
            self.metrics_due = None;
            return;
        }
        match self.metrics_due {
            None => self.metrics_due = Some(now.saturating_add(FILE_EVERY)),
            Some(d) if d <= now => {
                let text = self.render_metrics(now);
                match crate::metrics::write_file(&path, &text) {
                    Ok(()) => self.metrics_written = Some(print),
                    Err(e) => crate::logger::warning(format_args!(
                        "metrics: write {}: {e}",
                        path.display()
                    )),
                }
                self.metrics_due = None;
            }
            Some(_) => {}
        }
    }
}
