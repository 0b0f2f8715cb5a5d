fn main() -> std::process::ExitCode {
    mntleak::cli::main()
}
