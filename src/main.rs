//! The `tokend` command. All of it is in the library (`tokend::cli`), where it is tested with the
//! rest.

fn main() -> std::process::ExitCode {
    tokend::cli::main()
}
