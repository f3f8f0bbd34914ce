use std::process::ExitCode;

fn main() -> ExitCode {
    match llmfile::cli::main_with_args(std::env::args_os().collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("llmfile: {error:#}");
            ExitCode::FAILURE
        }
    }
}
