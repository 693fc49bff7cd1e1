//! `harbor-certify verify`, `keygen` and `token`: report signatures, and the keys and tokens a
//! hand-started service needs.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{CANNOT_RUN, NOT_CERTIFIED};
use crate::identity::{self, TokenKind, TokenMint};
use crate::report;

/// What `verify` checks.
#[derive(clap::Args, Clone, Debug)]
pub struct VerifyArgs {
    /// The run folder (such as reports/latest).
    pub dir: PathBuf,
    /// The base64 Ed25519 public key you trust (default: the folder's own signing-key.pub,
    /// which proves integrity but not authorship).
    #[arg(long)]
    pub public_key: Option<String>,
    /// Accept a folder whose digests match without a trusted signature (exit 0): proves the files
    /// agree with their manifest, not who wrote them.
    #[arg(long)]
    pub integrity_only: bool,
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

/// Checks a report folder against its SHA256SUMS (and signature). Exit 0 only when a trusted key
/// signed it and nothing unlisted lies beside it — or, with `--integrity-only`, when the digests
/// match and nothing is unlisted; anything less is NOT VERIFIED (exit 1), saying what is missing.
pub fn verify(args: VerifyArgs) -> ExitCode {
    use report::sign::Trust;
    let dir = args.dir.display();
    let v = match report::sign::verify(&args.dir, args.public_key.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("harbor-certify: {dir}: NOT VERIFIED: {e}");
            return ExitCode::from(NOT_CERTIFIED);
        }
    };
    println!("{dir}: {} file(s) match SHA256SUMS", v.files);
    for f in &v.unlisted {
        println!("unlisted: {f} (in the folder, not in SHA256SUMS: nothing vouches for it)");
    }
    let trust = match &v.trust {
        Trust::TrustedKey(k) => format!("signature valid, by the key you trust ({k})"),
        Trust::FolderKey(k) => format!(
            "signed by the folder's own key ({k}): anyone who edits a file can sign again with a key of their own; pass --public-key to check who signed"
        ),
        Trust::Unsigned => "not signed: anyone who edits a file can regenerate SHA256SUMS".to_owned(),
    };
    println!("{trust}");
    let integrity = v.unlisted.is_empty();
    if v.is_authenticated() {
        println!("VERIFIED");
        ExitCode::SUCCESS
    } else if args.integrity_only && integrity {
        println!("INTEGRITY ONLY (--integrity-only): the files agree with their manifest; who wrote them is not proven");
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "harbor-certify: {dir}: NOT VERIFIED: {}",
            if integrity {
                "no trusted signature (pass --public-key KEY, or --integrity-only to accept matching digests alone)"
            } else {
                "files the manifest does not list lie in the folder"
            }
        );
        ExitCode::from(NOT_CERTIFIED)
    }
}

/// Writes a report-signing key, or the service's keys.
pub fn keygen(args: KeygenArgs) -> ExitCode {
    if let Some(dir) = args.service {
        return match identity::write_service_keys(&dir) {
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
    if let Err(e) = crate::secret_file::write_secret_file(&out, format!("{pkcs8}\n").as_bytes()) {
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
