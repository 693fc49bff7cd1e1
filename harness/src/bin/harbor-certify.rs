//! `harbor-certify`: the certification harness's command line. Thin on purpose: the commands are
//! in `harbor_harness::commands`, one file each.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = harbor_harness::commands::Cli::parse();
    let runtime = cli.runtime().expect("a tokio runtime builds");
    let code = runtime.block_on(harbor_harness::commands::main(cli));
    // `infra` and `serve` read standard input on a blocking thread (its end is their signal to
    // stop); after a SIGTERM that read never returns, and a plain drop of the runtime would wait
    // for it forever. Everything the command started is stopped by now.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}
