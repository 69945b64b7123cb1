//! The Prometheus exposition (text format 0.0.4) of the core's state, for
//! `ctl metrics` and `GET /metrics` (README "Metrics"). Pure: built from
//! what the core knows, the same text for both.

use super::{Core, Job, Role, Status, Svc};
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
    name: &'a str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'a str, kind: Kind, help: &str) -> Family<'a> {
        // HELP escapes backslash and newline; our texts have neither, but
        // the rule is kept in one place in case one ever does.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(self.name);
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

/// A family with one sample per service, where it has a value.
type PerService = (&'static str, Kind, &'static str, fn(&Svc) -> Option<f64>);

const PER_SERVICE: [PerService; 5] = [
    (
        "mc_service_up",
        Kind::Gauge,
        "1 when at least one process of the service is running.",
        |s| Some(one_if(s.procs.iter().any(|p| p.m.is_running()))),
    ),
    (
        "mc_service_ready",
        Kind::Gauge,
        "1 when the service runs every process it should and is ready.",
        |s| Some(one_if(s.is_up())),
    ),
    (
        "mc_service_restarts_total",
        Kind::Counter,
        "Restarts of the service's processes by the launcher.",
        // Every slot, not only those within the scale: a `decr` must not
        // make the counter go down.
        |s| Some(s.procs.iter().map(|p| u64::from(p.m.restarts)).sum::<u64>() as f64),
    ),
    (
        "mc_service_last_exit_code",
        Kind::Gauge,
        "How the service's last process ended: its exit code, or 128+N for signal N.",
        |s| {
            let last = s.procs.iter().filter_map(|p| p.m.last_exit).next_back();
            last.map(|e| f64::from(e.status()))
        },
    ),
    (
        "mc_service_oom_kills_total",
        Kind::Counter,
        "Processes of the service the kernel killed for lack of memory.",
        |s| Some(f64::from(s.facts.oom_kills)),
    ),
];

/// A family with one sample per scheduled job, where it has a value.
type PerJob = (&'static str, &'static str, fn(&Job) -> Option<f64>);

const JOB_TIMES: [PerJob; 2] = [
    (
        "mc_job_last_run_timestamp_seconds",
        "When the last run of a scheduled job started, in seconds since the Unix epoch.",
        |j| j.last_run,
    ),
    (
        "mc_job_next_run_timestamp_seconds",
        "When a scheduled job runs next, in seconds since the Unix epoch.",
        |j| j.next_wall,
    ),
];

fn one_if(b: bool) -> f64 {
    f64::from(u8::from(b))
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
        for (name, kind, help, value) in PER_SERVICE {
            let mut f = Family::new(&mut out, name, kind, help);
            for s in &svcs {
                if let Some(v) = value(s) {
                    f.sample(&[("service", s.name())], v);
                }
            }
        }
        {
            let mut f = Family::new(
                &mut out,
                "mc_probe_failures_total",
                Kind::Counter,
                "Failed readiness (probe=ready) and liveness (probe=live) checks.",
            );
            for s in &svcs {
                if s.spec.ready.is_some() {
                    let n = s.facts.ready_probe_failures;
                    f.sample(&[("service", s.name()), ("probe", "ready")], n as f64);
                }
                if s.spec.live.is_some() {
                    let n = s.facts.live_probe_failures;
                    f.sample(&[("service", s.name()), ("probe", "live")], n as f64);
                }
            }
        }
        {
            let mut f = Family::new(
                &mut out,
                "mc_reconfigure_total",
                Kind::Counter,
                "Live reconfigurations, by result.",
            );
            let c = self.reconf.counts;
            for (result, n) in [("ok", c.ok), ("failed", c.failed), ("invalid", c.invalid)] {
                f.sample(&[("result", result)], n as f64);
            }
        }
        let jobs: Vec<_> = svcs
            .iter()
            .filter_map(|s| Some((s.name(), s.job.as_ref()?)))
            .collect();
        if !jobs.is_empty() {
            let mut f = Family::new(
                &mut out,
                "mc_job_runs_total",
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
                    f.sample(&[("service", svc), ("result", result)], n as f64);
                }
            }
            for (name, help, value) in JOB_TIMES {
                let mut f = Family::new(&mut out, name, Kind::Gauge, help);
                for (svc, j) in &jobs {
                    if let Some(t) = value(j) {
                        f.sample(&[("service", svc)], t);
                    }
                }
            }
        }
        Family::new(
            &mut out,
            "mc_launcher_start_time_seconds",
            Kind::Gauge,
            "When the launcher started, in seconds since the Unix epoch.",
        )
        .sample(&[], self.start_time_unix);
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
