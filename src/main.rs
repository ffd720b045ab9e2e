//! The `flowlet` binary: parse the command line and hand off; nothing else lives here.

fn main() -> std::process::ExitCode {
    flowlet::cli::run()
}
