//! The `dirhost` binary: parse arguments, set up logging, run, map the result to an exit code.

fn main() -> std::process::ExitCode {
    dirhost::cli::main()
}
