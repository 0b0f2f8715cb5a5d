//! Reading the kernel's mount and namespace state from userspace: `listmount`/`statmount`
//! ([`mountapi`]), nsfs ioctls ([`nsfs`]) and /proc ([`proc`]). No eBPF here; these complement the
//! tracepoints (the initial snapshot, namespaces that appear mid-capture, `holders`).

pub mod mountapi;
pub mod nsfs;
pub mod proc;

/// An error reading kernel state, naming what was being read.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {msg}")]
    Parse { what: String, msg: String },
}

impl SysError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        SysError::Io {
            what: what.into(),
            source,
        }
    }

    /// The last OS error, with context.
    pub fn last_os(what: impl Into<String>) -> Self {
        Self::io(what, std::io::Error::last_os_error())
    }

    pub fn parse(what: impl Into<String>, msg: impl Into<String>) -> Self {
        SysError::Parse {
            what: what.into(),
            msg: msg.into(),
        }
    }

    /// The errno behind an I/O error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SysError::Io { source, .. } => source.raw_os_error(),
            SysError::Parse { .. } => None,
        }
    }

    /// The object went away between listing and reading it (a process exited, a mount was
    /// unmounted): callers skip it rather than fail the whole scan.
    pub fn is_gone(&self) -> bool {
        matches!(self.errno(), Some(libc::ENOENT) | Some(libc::ESRCH))
            || matches!(self, SysError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// The kernel lacks the call or ioctl (older than 6.8 / 6.11).
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOSYS) | Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP)
        )
    }
}

/// How mounts and namespaces were found; reported so users know how exact the answer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanMethod {
    /// `NS_MNT_GET_NEXT` walk + `listmount`/`statmount` (Linux >= 6.11 for the walk).
    Listmount,
    /// `/proc/*/mountinfo` and `/proc/*/fd` only: namespaces without a readable member are missed.
    ProcFallback,
}

impl ScanMethod {
    pub fn describe(self) -> &'static str {
        match self {
            ScanMethod::Listmount => "listmount/statmount + NS_MNT_GET_NEXT",
            ScanMethod::ProcFallback => "/proc/*/mountinfo + /proc/*/fd (fallback)",
        }
    }
}
