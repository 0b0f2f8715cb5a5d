//! Makes one mount syscall itself, so that a test can choose the name of the process the tracer
//! sees make it: copy this binary as `dockerd` and the call is dockerd's.
//!
//! `mntleak-act mount SOURCE TARGET FSTYPE [DATA]` | `mntleak-act umount TARGET [detach]`

use std::ffi::CString;
use std::process::ExitCode;

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let r = match a(0) {
        "mount" => {
            let (src, dst, fs, data) = (cstr(a(1)), cstr(a(2)), cstr(a(3)), cstr(a(4)));
            // SAFETY: every pointer is a valid NUL-terminated string for the call's duration.
            unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    fs.as_ptr(),
                    0,
                    if a(4).is_empty() {
                        std::ptr::null()
                    } else {
                        data.as_ptr().cast()
                    },
                )
            }
        }
        "umount" => {
            let dst = cstr(a(1));
            let flags = if a(2) == "detach" {
                libc::MNT_DETACH
            } else {
                0
            };
            // SAFETY: dst is a valid NUL-terminated string.
            unsafe { libc::umount2(dst.as_ptr(), flags) }
        }
        _ => {
            eprintln!(
                "usage: mntleak-act mount SOURCE TARGET FSTYPE [DATA] | umount TARGET [detach]"
            );
            return ExitCode::from(2);
        }
    };
    if r != 0 {
        eprintln!("{}: {}", a(0), std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
