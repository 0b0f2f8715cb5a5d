// Replay and the live tracer allocate many short-lived strings per event: mimalloc keeps that
// cheap (glibc malloc was a third of replay's profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mntleak::cli::main()
}
