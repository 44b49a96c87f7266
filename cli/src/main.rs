//! The `polycache` binary: [`polycache_cli::run`] on the process' arguments and streams.

fn main() {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code = polycache_cli::run(
        std::env::args_os().collect(),
        &mut stdout.lock(),
        &mut stderr.lock(),
    );
    std::process::exit(code);
}
