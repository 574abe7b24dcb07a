//! `projector`: the operator's and developer's command line.

fn main() -> std::process::ExitCode {
    projector_cli::cli::main()
}
