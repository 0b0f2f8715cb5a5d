//! Findings: the engine's verdicts (`leak`, `at_risk`) and their text and JSON renderings.
//! Timestamps stay kernel CLOCK_MONOTONIC ns; the caller passes a `wall` converter for display.

use serde::{Deserialize, Serialize};
use std::fmt::Write;

use crate::report::escape::escape;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Leak,
    AtRisk,
}

/// The mount a finding is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingMount {
    pub source: String,
    pub fstype: String,
    /// Path in the owner namespace A.
    pub path: String,
    /// Path of the surviving copy in namespace B.
    pub path_in_ns: String,
    /// Kernel mount id of the copy when known (else of the original).
    pub mount_id: Option<u64>,
}

/// Who mounted it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub pid: u32,
    pub comm: String,
    pub mnt_ns_id: u64,
    pub time: u64,
}

/// One event named by a finding (the leaking event, the cut-off, the umount).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    pub pid: u32,
    pub comm: String,
    pub syscall: String,
    pub time: u64,
    pub mnt_ns_id: u64,
    /// The call as a human reads it, e.g. `unshare(CLONE_NEWNS)`.
    pub detail: String,
    /// Propagation of the copy right after this event (`shared:3`, `master:2`, `private`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
}

/// A failed syscall explained by the finding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symptom {
    pub pid: u32,
    pub comm: String,
    pub syscall: String,
    pub path: String,
    pub ret: i64,
    pub errno: String,
    pub time: u64,
    pub explanation: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
}

/// How the kernel (or someone) ended a leak.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub how: String,
    pub time: u64,
    pub by: Option<EventRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// Stable within one engine run; a changed finding keeps its id.
    pub id: u64,
    pub mount: FindingMount,
    pub origin: Option<Origin>,
    /// The event that made B's surviving copy: "the moment it leaked".
    pub leaked_by: Option<EventRef>,
    /// A later propagation change that cut the copy off (make-rprivate after unshare or rbind).
    pub cut_off_by: Option<EventRef>,
    pub from_mnt_ns_id: u64,
    pub into_mnt_ns_id: u64,
    /// Machine-readable cause: private_copy, parent_not_propagating, slave_direction,
    /// different_peer_group, stranded.
    pub reason_code: String,
    pub reason: String,
    /// The owner's umount that did not reach the copy (or the failed one, for a stranded mount).
    pub umount: Option<EventRef>,
    pub symptoms: Vec<Symptom>,
    pub holders: Vec<Holder>,
    /// What keeps B alive when no process does (an nsfs bind mount path).
    pub pin: Option<String>,
    pub resolved: Option<Resolved>,
    pub remediation: Vec<String>,
}

impl Finding {
    pub fn is_leak(&self) -> bool {
        self.kind == FindingKind::Leak
    }
    pub fn is_resolved(&self) -> bool {
        self.resolved.is_some()
    }
}

fn ev_line(e: &EventRef, wall: &dyn Fn(u64) -> String) -> String {
    let mut s = format!(
        "{} by pid {} ({}) at {}",
        escape(&e.detail),
        e.pid,
        escape(&e.comm),
        wall(e.time)
    );
    if let Some(p) = &e.propagation {
        let _ = write!(s, ", copy propagation {}", escape(p));
    }
    s
}

/// Multi-line readable rendering; every untrusted string is escaped.
pub fn finding_text(f: &Finding, wall: &dyn Fn(u64) -> String) -> String {
    let mut s = String::new();
    let head = match (f.kind, &f.resolved) {
        (FindingKind::Leak, None) => "LEAK",
        (FindingKind::Leak, Some(_)) => "LEAK (resolved)",
        (FindingKind::AtRisk, _) => "AT RISK",
    };
    let _ = writeln!(
        s,
        "{head}: {} {} at {} (mnt ns {}) has a copy at {} in mnt ns {}",
        escape(&f.mount.fstype),
        escape(&f.mount.source),
        escape(&f.mount.path),
        f.from_mnt_ns_id,
        escape(&f.mount.path_in_ns),
        f.into_mnt_ns_id
    );
    if let Some(o) = &f.origin {
        let _ = writeln!(
            s,
            "  mounted by:  pid {} ({}) in mnt ns {} at {}",
            o.pid,
            escape(&o.comm),
            o.mnt_ns_id,
            wall(o.time)
        );
    }
    match &f.leaked_by {
        Some(e) => {
            let _ = writeln!(s, "  leaked by:   {}", ev_line(e, wall));
        }
        None => {
            let _ = writeln!(s, "  leaked by:   (before the capture started)");
        }
    }
    if let Some(e) = &f.cut_off_by {
        let _ = writeln!(s, "  cut off by:  {}", ev_line(e, wall));
    }
    let _ = writeln!(s, "  why:         {}", escape(&f.reason));
    if let Some(e) = &f.umount {
        let _ = writeln!(s, "  umount:      {}", ev_line(e, wall));
    }
    for y in &f.symptoms {
        let _ = writeln!(
            s,
            "  symptom:     {}({}) = {} {} by pid {} ({}) at {}: {}",
            escape(&y.syscall),
            escape(&y.path),
            y.ret,
            escape(&y.errno),
            y.pid,
            escape(&y.comm),
            wall(y.time),
            escape(&y.explanation)
        );
    }
    if f.holders.is_empty() {
        match &f.pin {
            Some(p) => {
                let _ = writeln!(s, "  held by:     no process; pinned by {}", escape(p));
            }
            None => {
                let _ = writeln!(s, "  held by:     no known process");
            }
        }
    } else {
        let list: Vec<String> = f
            .holders
            .iter()
            .map(|h| format!("{} ({})", h.pid, escape(&h.comm)))
            .collect();
        // A resolved leak's copy is gone: these held it, they hold nothing now.
        let until = if f.is_resolved() {
            " (until the copy went)"
        } else {
            ""
        };
        let _ = writeln!(s, "  held by:     {}{until}", list.join(", "));
    }
    if let Some(r) = &f.resolved {
        let by =
            r.by.as_ref()
                .map(|e| format!(" ({})", ev_line(e, wall)))
                .unwrap_or_default();
        let _ = writeln!(
            s,
            "  resolved:    {} at {}{}",
            escape(&r.how),
            wall(r.time),
            by
        );
    }
    for r in &f.remediation {
        let _ = writeln!(s, "  fix:         {}", escape(r));
    }
    s
}

fn add_wall(v: &mut serde_json::Value, key: &str, wall: &dyn Fn(u64) -> String) {
    if let Some(obj) = v.get_mut(key).and_then(|o| o.as_object_mut())
        && let Some(t) = obj.get("time").and_then(|t| t.as_u64())
    {
        obj.insert("wall".into(), serde_json::Value::String(wall(t)));
    }
}

/// The NDJSON object: the stable keys of issue 3 plus a `wall` string next to each `time`.
pub fn finding_json(f: &Finding, wall: &dyn Fn(u64) -> String) -> serde_json::Value {
    let mut v = serde_json::to_value(f).unwrap_or(serde_json::Value::Null);
    for k in ["origin", "leaked_by", "cut_off_by", "umount", "resolved"] {
        add_wall(&mut v, k, wall);
    }
    if let Some(syms) = v.get_mut("symptoms").and_then(|s| s.as_array_mut()) {
        for y in syms {
            if let Some(t) = y.get("time").and_then(|t| t.as_u64()) {
                y["wall"] = serde_json::Value::String(wall(t));
            }
        }
    }
    v
}
