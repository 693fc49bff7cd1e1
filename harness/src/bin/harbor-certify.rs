//! `harbor-certify`: the certification harness's command line. Thin on purpose: the commands are
//! in `harbor_harness::commands`, one file each.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    harbor_harness::commands::main().await
}
