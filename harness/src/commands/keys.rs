//! `harbor-certify verify`, `keygen` and `token`: report signatures, and the keys and tokens a
//! hand-started service needs.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{CANNOT_RUN, NOT_CERTIFIED};
use crate::report;
use crate::tokens::{self, TokenKind, TokenMint};

/// What `verify` checks.
#[derive(clap::Args, Clone, Debug)]
pub struct VerifyArgs {
    /// The run folder (such as reports/latest).
    pub dir: PathBuf,
    /// The base64 Ed25519 public key you trust (default: the folder's own signing-key.pub,
    /// which proves integrity but not authorship).
    #[arg(long)]
    pub public_key: Option<String>,
}

/// What `keygen` writes.
#[derive(clap::Args, Clone, Debug)]
pub struct KeygenArgs {
    /// Where to write the report-signing key.
    #[arg(long, required_unless_present = "service")]
    pub out: Option<PathBuf>,
    /// Write the service's keys into this directory instead.
    #[arg(long, conflicts_with = "out")]
    pub service: Option<PathBuf>,
}

/// Whose token `token` prints.
#[derive(clap::Args, Clone, Debug)]
pub struct TokenArgs {
    /// The gateway key (`DIR/gateway.key`).
    #[arg(long)]
    pub key: PathBuf,
    /// The user's id (the token's `sub`).
    #[arg(long)]
    pub sub: uuid::Uuid,
}

/// Checks a report folder against its SHA256SUMS (and signature).
pub fn verify(args: VerifyArgs) -> ExitCode {
    match report::sign::verify(&args.dir, args.public_key.as_deref()) {
        Ok(v) => {
            println!(
                "{}: {} file(s) match SHA256SUMS",
                args.dir.display(),
                v.files
            );
            match v.signed_by {
                Some(k) => println!(
                    "signature valid, key {k}{}",
                    if args.public_key.is_none() {
                        " (the folder's own key: pass --public-key to check who signed)"
                    } else {
                        ""
                    }
                ),
                None => println!("not signed"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harbor-certify: {}: NOT VERIFIED: {e}", args.dir.display());
            ExitCode::from(NOT_CERTIFIED)
        }
    }
}

/// Writes a report-signing key, or the service's keys.
pub fn keygen(args: KeygenArgs) -> ExitCode {
    if let Some(dir) = args.service {
        return match tokens::write_service_keys(&dir) {
            Ok(env) => {
                println!("{}", env.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("harbor-certify: {}: {e}", dir.display());
                ExitCode::from(CANNOT_RUN)
            }
        };
    }
    let Some(out) = args.out else {
        eprintln!("harbor-certify: keygen needs --out or --service");
        return ExitCode::from(CANNOT_RUN);
    };
    let (pkcs8, key) = report::sign::SigningKey::generate();
    if let Err(e) = std::fs::write(&out, format!("{pkcs8}\n")) {
        eprintln!("harbor-certify: {}: {e}", out.display());
        return ExitCode::from(CANNOT_RUN);
    }
    println!("{}", key.public_key());
    ExitCode::SUCCESS
}

/// Prints a long-lived bearer token for `--sub`.
pub fn token(args: TokenArgs) -> ExitCode {
    match TokenMint::from_key_file(&args.key) {
        Ok(mint) => {
            println!("{}", mint.token(args.sub, TokenKind::LongLived));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harbor-certify: {e}");
            ExitCode::from(CANNOT_RUN)
        }
    }
}
