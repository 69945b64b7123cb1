//! Reloads and the launcher's own sshd: what a new configuration
//! changes, and sshd following the keys.

use super::*;
use crate::config::model::Service;
use crate::ctl::proto::Reply;
use crate::supervisor::machine::Event;
use crate::supervisor::plan::{self};
use std::sync::Arc;
use std::time::Instant;

impl Core {
    /// Retire service `s`: it stops, and is forgotten once down.
    pub(super) fn retire(&mut self, s: SvcId, now: Instant, fx: &mut Vec<Effect>) {
        if let Some(svc) = self.svcs.get_mut(&s) {
            svc.status = Status::Retired;
            if let Some(r) = &mut svc.readiness {
                if let Some(p) = r.running.take() {
                    fx.push(Effect::CancelProbe(p));
                }
            }
        }
        self.svc_event(s, &Event::Stop, now, fx);
    }

    pub(super) fn reloaded(
        &mut self,
        result: Result<ReloadSet, String>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) -> Reply {
        let set = match result {
            Ok(set) => set,
            Err(text) => {
                // One record, however many errors (a collector sees one event).
                let one: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                log::error!("reload refused, nothing changed: {}", one.join("; "));
                return Reply::error(format!("invalid config, nothing changed:\n{text}"));
            }
        };
        if self.stop.active.is_some() {
            return Reply::error("the launcher is stopping");
        }
        let old: Vec<(SvcId, Arc<Service>)> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.role == Role::Config && s.status != Status::Retired)
            .map(|(&id, s)| (id, s.spec.clone()))
            .collect();
        let old_refs: Vec<&Service> = old.iter().map(|(_, s)| s.as_ref()).collect();
        let mut d = plan::diff(&old_refs, &set.services);
        for (id, spec) in &old {
            if d.removed.contains(&spec.name) || d.changed.contains(&spec.name) {
                self.retire(*id, now, fx);
            }
        }
        for spec in set.services {
            if d.added.contains(&spec.name) || d.changed.contains(&spec.name) {
                let changed = d.changed.contains(&spec.name);
                let name = spec.name.clone();
                self.add(spec, Role::Config);
                // Its new definition replaces the old one's processes.
                if let Some(svc) = self.find(&name).and_then(|s| self.svcs.get_mut(&s)) {
                    svc.facts.restart_reason = changed.then(|| "reload".to_string());
                }
            }
        }
        if let Some(want) = set.sshd {
            match self.set_sshd(want, now) {
                SshdChange::Added => d.added.push("sshd".into()),
                SshdChange::Removed => d.removed.push("sshd".into()),
                SshdChange::Changed => d.changed.push("sshd".into()),
                SshdChange::None => {}
            }
            // set_sshd retires without effects: stop what it retired now.
            self.stop_retired(now, fx);
        }
        self.stop.timeout = set.shutdown_timeout;
        self.stop.drain = set.drain;
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(" ")
            }
        };
        let message = format!(
            "reloaded: {} added, {} removed, {} changed",
            list(&d.added),
            list(&d.removed),
            list(&d.changed)
        );
        Reply {
            ok: true,
            message: Some(message),
            added: Some(d.added),
            removed: Some(d.removed),
            changed: Some(d.changed),
            ..Reply::default()
        }
    }

    /// Make sshd what the keys ask for (README "SSH keys": with `sshd:
    /// auto` it starts with the first valid key and stops with the last).
    pub(super) fn set_sshd(&mut self, want: Option<Service>, now: Instant) -> SshdChange {
        let current = self
            .svcs
            .iter()
            .find(|(_, s)| s.role == Role::Sshd && s.status != Status::Retired)
            .map(|(&id, s)| (id, s.spec.clone()));
        let change = match (&current, &want) {
            (None, None) => return SshdChange::None,
            (Some((_, cur)), Some(new)) if plan::same_definition(cur, new) => {
                return SshdChange::None
            }
            (None, Some(_)) => SshdChange::Added,
            (Some(_), None) => SshdChange::Removed,
            (Some(_), Some(_)) => SshdChange::Changed,
        };
        if self.stop.active.is_some() {
            return SshdChange::None;
        }
        if let Some((id, _)) = current {
            if let Some(svc) = self.svcs.get_mut(&id) {
                svc.status = Status::Retired;
                svc.stop_sent = false;
            }
        }
        match change {
            SshdChange::Added => log::info!("sshd: starting (a valid key is installed)"),
            SshdChange::Removed => log::info!("sshd: stopping (no key left)"),
            _ => log::info!("sshd: restarting (its settings changed)"),
        }
        if let Some(spec) = want {
            self.add(spec, Role::Sshd);
        }
        let _ = now;
        change
    }

    /// Send the stop to retired services that still run.
    pub(super) fn stop_retired(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let ids: Vec<SvcId> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.status == Status::Retired && s.has_live_process())
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.retire(id, now, fx);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SshdChange {
    None,
    Added,
    Removed,
    Changed,
}
