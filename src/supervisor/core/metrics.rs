//! The Prometheus exposition (text format 0.0.4) of the core's state, for
//! `ctl metrics` and `GET /metrics` (README "Metrics"). Pure: built from
//! what the core knows, the same text for both.

use super::{Core, Role, Status};
use std::fmt::Write;

/// What `Content-Type` the text is (Prometheus reads the version from it).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

enum Kind {
    Gauge,
    Counter,
}

/// One metric family: its HELP and TYPE lines, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: Kind, help: &str) -> Family<'a> {
        // HELP escapes backslash and newline; our texts have neither, but
        // the rule is kept in one place in case one ever does.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(v, self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(value, self.out);
        self.out.push('\n');
    }
}

/// A label value: `\`, `"` and newline escaped, as the format wants.
fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

impl Core {
    /// The whole exposition, one family after the other.
    pub fn metrics_text(&self) -> String {
        let svcs: Vec<_> = self
            .svcs
            .values()
            // A prepare or live reconfigure step is not a service: the
            // reconfigure counters speak for it.
            .filter(|s| s.status != Status::Retired && s.role != Role::Step)
            .collect();
        let mut out = String::with_capacity(512 + svcs.len() * 600);
        {
            let name = "mc_service_up";
            let mut f = Family::new(
                &mut out,
                name,
                Kind::Gauge,
                "1 when at least one process of the service is running.",
            );
            for s in &svcs {
                let up = s.procs.iter().any(|p| p.m.is_running());
                f.sample(name, &[("service", s.name())], f64::from(u8::from(up)));
            }
        }
        {
            let name = "mc_service_ready";
            let mut f = Family::new(
                &mut out,
                name,
                Kind::Gauge,
                "1 when the service runs every process it should and is ready.",
            );
            for s in &svcs {
                f.sample(
                    name,
                    &[("service", s.name())],
                    f64::from(u8::from(s.is_up())),
                );
            }
        }
        {
            let name = "mc_service_restarts_total";
            let mut f = Family::new(
                &mut out,
                name,
                Kind::Counter,
                "Restarts of the service's processes by the launcher.",
            );
            for s in &svcs {
                // Every slot, not only those within the scale: a `decr`
                // must not make the counter go down.
                let n: u64 = s.procs.iter().map(|p| u64::from(p.m.restarts)).sum();
                f.sample(name, &[("service", s.name())], n as f64);
            }
        }
        {
            let name = "mc_service_last_exit_code";
            let mut f = Family::new(
                &mut out,
                name,
                Kind::Gauge,
                "How the service's last process ended: its exit code, or 128+N for signal N.",
            );
            for s in &svcs {
                let last = s.procs.iter().filter_map(|p| p.m.last_exit).next_back();
                if let Some(e) = last {
                    f.sample(name, &[("service", s.name())], f64::from(e.status()));
                }
            }
        }
        {
            let name = "mc_service_oom_kills_total";
            let mut f = Family::new(
                &mut out,
                name,
                Kind::Counter,
                "Processes of the service the kernel killed for lack of memory.",
            );
            for s in &svcs {
                f.sample(name, &[("service", s.name())], f64::from(s.facts.oom_kills));
            }
        }
        {
            let name = "mc_probe_failures_total";
            let mut f = Family::new(
                &mut out,
                name,
                Kind::Counter,
                "Failed readiness (probe=ready) and liveness (probe=live) checks.",
            );
            for s in &svcs {
                if s.spec.ready.is_some() {
                    let n = s.facts.ready_probe_failures;
                    f.sample(name, &[("service", s.name()), ("probe", "ready")], n as f64);
                }
                if s.spec.live.is_some() {
                    let n = s.facts.live_probe_failures;
                    f.sample(name, &[("service", s.name()), ("probe", "live")], n as f64);
                }
            }
        }
        {
            let name = "mc_reconfigure_total";
            let mut f = Family::new(
                &mut out,
                name,
                Kind::Counter,
                "Live reconfigurations, by result.",
            );
            let c = self.reconf.counts;
            for (result, n) in [("ok", c.ok), ("failed", c.failed), ("invalid", c.invalid)] {
                f.sample(name, &[("result", result)], n as f64);
            }
        }
        let jobs: Vec<_> = svcs
            .iter()
            .filter_map(|s| Some((s.name(), s.job.as_ref()?)))
            .collect();
        if !jobs.is_empty() {
            {
                let name = "mc_job_runs_total";
                let mut f = Family::new(
                    &mut out,
                    name,
                    Kind::Counter,
                    "Runs of a scheduled job, by result (ok, failed, timeout; skipped: due while the previous one ran).",
                );
                for (svc, j) in &jobs {
                    let c = j.counts;
                    for (result, n) in [
                        ("ok", c.ok),
                        ("failed", c.failed),
                        ("timeout", c.timeout),
                        ("skipped", c.skipped),
                    ] {
                        f.sample(name, &[("service", svc), ("result", result)], n as f64);
                    }
                }
            }
            {
                let name = "mc_job_last_run_timestamp_seconds";
                let mut f = Family::new(
                    &mut out,
                    name,
                    Kind::Gauge,
                    "When the last run of a scheduled job started, in seconds since the Unix epoch.",
                );
                for (svc, j) in &jobs {
                    if let Some(t) = j.last_run {
                        f.sample(name, &[("service", svc)], t);
                    }
                }
            }
            {
                let name = "mc_job_next_run_timestamp_seconds";
                let mut f = Family::new(
                    &mut out,
                    name,
                    Kind::Gauge,
                    "When a scheduled job runs next, in seconds since the Unix epoch.",
                );
                for (svc, j) in &jobs {
                    if let Some(t) = j.next_wall {
                        f.sample(name, &[("service", svc)], t);
                    }
                }
            }
        }
        {
            let name = "mc_launcher_start_time_seconds";
            let mut f = Family::new(
                &mut out,
                name,
                Kind::Gauge,
                "When the launcher started, in seconds since the Unix epoch.",
            );
            f.sample(name, &[], self.start_time_unix);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_numbers_are_written_as_the_format_wants() {
        let mut s = String::new();
        escape_label("a\\b\"c\nd", &mut s);
        assert_eq!(s, "a\\\\b\\\"c\\nd");
        let rows: &[(f64, &str)] = &[
            (0.0, "0"),
            (3.0, "3"),
            (-1.0, "-1"),
            (1.5, "1.5"),
            (1_790_000_000.25, "1790000000.25"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
        ];
        for (v, want) in rows {
            let mut s = String::new();
            push_value(*v, &mut s);
            assert_eq!(s, *want);
        }
    }
}
