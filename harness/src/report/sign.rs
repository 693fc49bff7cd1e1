//! Tamper evidence for a run folder: `SHA256SUMS` (the `sha256sum` format, so
//! `sha256sum -c SHA256SUMS` checks it too) and, with a configured Ed25519 key, `SHA256SUMS.sig`
//! (base64 signature of the manifest) plus `signing-key.pub` (the public key, base64).
//! [`verify`] checks both; pass the public key you trust, since the folder's own copy only proves
//! integrity, not who signed.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

/// An Ed25519 signing key (PKCS#8).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Reads a PKCS#8 key (as written by `harbor-certify keygen`).
    pub fn from_pkcs8_file(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let der = STANDARD
            .decode(String::from_utf8_lossy(&bytes).trim())
            .unwrap_or(bytes);
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| format!("{}: not an Ed25519 PKCS#8 key", path.display()))?;
        Ok(Self { pair })
    }

    /// A new key: its PKCS#8 document (base64) and the key.
    pub fn generate() -> (String, Self) {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("a fresh key parses");
        (STANDARD.encode(doc.as_ref()), Self { pair })
    }

    /// The public key, base64.
    pub fn public_key(&self) -> String {
        STANDARD.encode(self.pair.public_key().as_ref())
    }
}

/// Writes `SHA256SUMS` for `names` in `dir`, and the signature when a key is given.
pub fn write_manifest(dir: &Path, names: &[&str], key: Option<&SigningKey>) -> std::io::Result<()> {
    let mut manifest = String::new();
    for name in names {
        let digest = Sha256::digest(std::fs::read(dir.join(name))?);
        manifest.push_str(&format!("{}  {name}\n", hex::encode(digest)));
    }
    std::fs::write(dir.join("SHA256SUMS"), &manifest)?;
    if let Some(key) = key {
        let sig = key.pair.sign(manifest.as_bytes());
        std::fs::write(
            dir.join("SHA256SUMS.sig"),
            format!("{}\n", STANDARD.encode(sig.as_ref())),
        )?;
        std::fs::write(
            dir.join("signing-key.pub"),
            format!("{}\n", key.public_key()),
        )?;
    }
    Ok(())
}

/// What [`verify`] established.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// Files whose digest matched.
    pub files: usize,
    /// What the match rests on.
    pub trust: Trust,
    /// Files in the folder that the manifest does not list (a planted `traces/X.json`): nothing
    /// vouches for them.
    pub unlisted: Vec<String>,
}

/// What a verification proves about who wrote the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Signed, and the signature checks against the key the caller trusts: integrity and
    /// authorship.
    TrustedKey(String),
    /// Signed by the key the folder itself carries: whoever edits a file can sign again with a
    /// key of their own, so this proves integrity against accidents only.
    FolderKey(String),
    /// Not signed: whoever edits a file can regenerate `SHA256SUMS`.
    Unsigned,
}

impl Verified {
    /// Authenticated against a trusted key, and nothing unlisted beside it.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.trust, Trust::TrustedKey(_)) && self.unlisted.is_empty()
    }
}

/// Every file under `dir` (relative names, `/`-separated) but the manifest and its signature.
fn files_in(dir: &Path) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut pending = vec![std::path::PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let entries = std::fs::read_dir(dir.join(&rel)).map_err(|e| e.to_string())?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = rel.join(entry.file_name());
            if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
                pending.push(name);
            } else {
                out.push(name.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.retain(|n| {
        !matches!(
            n.as_str(),
            "SHA256SUMS" | "SHA256SUMS.sig" | "signing-key.pub"
        )
    });
    out.sort();
    Ok(out)
}

/// Checks every digest in `dir/SHA256SUMS`, and the signature if there is one (against
/// `trusted_key` if given, else the folder's own `signing-key.pub`).
pub fn verify(dir: &Path, trusted_key: Option<&str>) -> Result<Verified, String> {
    let manifest =
        std::fs::read_to_string(dir.join("SHA256SUMS")).map_err(|e| format!("SHA256SUMS: {e}"))?;
    // A manifest that simply leaves a file out would protect nothing: every run file must be in it.
    let listed: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, n)| n))
        .collect();
    if let Some(missing) = super::RUN_FILES.iter().find(|f| !listed.contains(f)) {
        return Err(format!("SHA256SUMS does not list {missing}"));
    }
    let mut files = 0;
    for line in manifest.lines() {
        let (digest, name) = line
            .split_once("  ")
            .ok_or_else(|| format!("malformed manifest line {line:?}"))?;
        // Names are relative and stay inside the folder (`traces/<ID>.json` is one level down).
        let inside = std::path::Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(format!("manifest names a file outside the folder: {name}"));
        }
        let actual = hex::encode(Sha256::digest(
            std::fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"))?,
        ));
        if actual != digest {
            return Err(format!(
                "{name} was modified (sha256 {actual}, manifest says {digest})"
            ));
        }
        files += 1;
    }
    let unlisted: Vec<String> = files_in(dir)?
        .into_iter()
        .filter(|f| !listed.contains(&f.as_str()))
        .collect();
    let sig_path = dir.join("SHA256SUMS.sig");
    if !sig_path.exists() {
        if trusted_key.is_some() {
            return Err("a public key was given but the report is not signed".into());
        }
        return Ok(Verified {
            files,
            trust: Trust::Unsigned,
            unlisted,
        });
    }
    let key = match trusted_key {
        Some(k) => k.trim().to_owned(),
        None => std::fs::read_to_string(dir.join("signing-key.pub"))
            .map_err(|e| format!("signing-key.pub: {e}"))?
            .trim()
            .to_owned(),
    };
    let public = STANDARD
        .decode(&key)
        .map_err(|_| "the public key is not base64".to_owned())?;
    let sig = STANDARD
        .decode(
            std::fs::read_to_string(&sig_path)
                .map_err(|e| e.to_string())?
                .trim(),
        )
        .map_err(|_| "SHA256SUMS.sig is not base64".to_owned())?;
    UnparsedPublicKey::new(&ED25519, &public)
        .verify(manifest.as_bytes(), &sig)
        .map_err(|_| "the signature does not match the manifest and key".to_owned())?;
    Ok(Verified {
        files,
        trust: if trusted_key.is_some() {
            Trust::TrustedKey(key)
        } else {
            Trust::FolderKey(key)
        },
        unlisted,
    })
}
