//! `services.NAME.schedule` and `services.NAME.watch` (README "Scheduled
//! jobs", "File watches"): decoded from the spanned tree, every error with
//! its position, and the rules between services (what a job may pause,
//! what may wait for a job).

use super::decoder::Decoder;
use super::model::{OnChange, Schedule, Service, Watch, When};
use crate::yaml::Node;
use std::time::Duration;

pub const SCHEDULE: &[&str] = &["cron", "every", "run_on_start", "pause", "timeout"];
pub const WATCH: &[&str] = &["paths", "on_change", "debounce"];

/// The time zone a job's cron times are in: the `TZ` of its `env`, else
/// (with `copy_env`) the launcher's own, else UTC.
fn job_tz(s: &Service) -> Option<String> {
    s.env
        .get("TZ")
        .cloned()
        .or_else(|| s.copy_env.then(|| std::env::var("TZ").ok()).flatten())
}

/// `schedule: "CRON"` or `{cron | every, run_on_start, pause, timeout}`,
/// read once the rest of the service is known (its `TZ`).
pub fn schedule(d: &mut Decoder, n: &Node, s: &Service) -> Option<Schedule> {
    let w = format!("{}.schedule", s.name);
    let mut out = Schedule {
        when: When::Reboot,
        run_on_start: false,
        pause: Vec::new(),
        timeout: None,
    };
    let mut whens = 0;
    let mut bad = false;
    if n.as_map().is_none() {
        let text = d.string(n, &w)?;
        out.when = cron_when(d, n, &w, &text, s)?;
        return Some(out);
    }
    for (k, v) in d.map(n, &w, SCHEDULE)? {
        let kw = format!("{w}.{k}");
        match k {
            "cron" => {
                whens += 1;
                match d.string(v, &kw).and_then(|t| cron_when(d, v, &kw, &t, s)) {
                    Some(when) => out.when = when,
                    None => bad = true,
                }
            }
            "every" => {
                whens += 1;
                match d.duration(v, &kw) {
                    Some(t) if t >= Duration::from_secs(1) => out.when = When::Every(t),
                    Some(_) => {
                        d.err(v.pos, format!("{kw}: must be at least 1s"));
                        bad = true;
                    }
                    None => bad = true,
                }
            }
            "run_on_start" => out.run_on_start = d.bool(v, &kw).unwrap_or(false),
            "pause" => out.pause = d.strings(v, &kw).unwrap_or_default(),
            "timeout" => out.timeout = d.duration(v, &kw),
            other => d.unknown_key(n, &w, other, SCHEDULE),
        }
    }
    if whens != 1 {
        d.err(n.pos, format!("{w}: needs exactly one of cron, every"));
        return None;
    }
    if bad {
        return None;
    }
    Some(out)
}

fn cron_when(d: &mut Decoder, n: &Node, w: &str, text: &str, s: &Service) -> Option<When> {
    if text.trim().eq_ignore_ascii_case("@reboot") {
        return Some(When::Reboot);
    }
    let cron = match crate::cron::Cron::parse(text) {
        Ok(c) => c,
        Err(e) => {
            d.err(
                n.pos,
                format!("{w}: {e}; write e.g. \"30 3 * * *\" (03:30 every day) or @daily"),
            );
            return None;
        }
    };
    let tz_name = job_tz(s);
    match crate::cron::zone(tz_name.as_deref()) {
        Ok(tz) => Some(When::Cron {
            text: text.trim().to_string(),
            cron,
            tz,
        }),
        Err(e) => {
            d.err(n.pos, format!("{w}: {e}"));
            None
        }
    }
}

/// `watch: {paths: [..], on_change: reload | restart, debounce: 500ms}`.
pub fn watch(d: &mut Decoder, n: &Node, w: &str) -> Option<Watch> {
    let mut out = Watch {
        paths: Vec::new(),
        on_change: OnChange::Restart,
        debounce: Duration::from_millis(500),
    };
    for (k, v) in d.map(n, w, WATCH)? {
        let kw = format!("{w}.{k}");
        match k {
            "paths" => {
                for p in d.strings(v, &kw).unwrap_or_default() {
                    let p = std::path::PathBuf::from(p);
                    if !p.is_absolute() {
                        d.err(
                            v.pos,
                            format!("{kw}: {} must be an absolute path", p.display()),
                        );
                    }
                    out.paths.push(p);
                }
            }
            "on_change" => match v.text() {
                Some("reload") => out.on_change = OnChange::Reload,
                Some("restart") => out.on_change = OnChange::Restart,
                _ => d.err(v.pos, format!("{kw}: expected reload or restart")),
            },
            "debounce" => out.debounce = d.duration(v, &kw).unwrap_or(out.debounce),
            other => d.unknown_key(n, w, other, WATCH),
        }
    }
    if out.paths.is_empty() {
        d.err(
            n.pos,
            format!("{w}.paths: name at least one file or directory"),
        );
        return None;
    }
    Some(out)
}

/// The rules between services: a job pauses services that exist and are
/// not jobs; nothing waits (`after`) for a job, which is never "up"; a job
/// runs one process and is neither watched nor probed.
pub fn validate(d: &mut Decoder, services: &[Service]) {
    let is_job = |name: &str| {
        services
            .iter()
            .any(|s| s.name == name && s.schedule.is_some())
    };
    for s in services {
        let pos = s.origin.pos;
        for dep in s.after.iter().filter(|a| is_job(a)) {
            d.err(
                pos,
                format!(
                    "service {}: `after` names the scheduled job `{dep}`, which is never up; run it with run_on_start, or make it a service",
                    s.name
                ),
            );
        }
        let Some(sched) = &s.schedule else { continue };
        let name = &s.name;
        for p in &sched.pause {
            if p == name {
                d.err(
                    pos,
                    format!("{name}.schedule.pause: a job cannot pause itself"),
                );
            } else if is_job(p) {
                d.err(
                    pos,
                    format!("{name}.schedule.pause: `{p}` is a scheduled job, not a service"),
                );
            } else if !services.iter().any(|o| &o.name == p) {
                d.err(pos, format!("{name}.schedule.pause: unknown service `{p}`"));
            }
        }
        let mut not_for_jobs = Vec::new();
        if s.numprocesses > 1 {
            not_for_jobs.push("numprocesses");
        }
        if s.ready.is_some() {
            not_for_jobs.push("ready");
        }
        if s.live.is_some() {
            not_for_jobs.push("live");
        }
        if s.watch.is_some() {
            not_for_jobs.push("watch");
        }
        if s.max_age.is_some() {
            not_for_jobs.push("max_age");
        }
        if s.critical {
            not_for_jobs.push("critical");
        }
        if !s.after.is_empty() {
            not_for_jobs.push("after");
        }
        if !not_for_jobs.is_empty() {
            d.err(
                pos,
                format!(
                    "service {name}: a scheduled job takes no {} (it runs one process per run, from its schedule)",
                    not_for_jobs.join(", ")
                ),
            );
        }
    }
}
