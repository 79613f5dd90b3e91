use anyhow::Context;
use clap::{Args, ValueEnum};
use needle_report::ExitStatus;
use needle_sign::keys::PrivateKey;
use needle_sign::x509::Cert;
use needle_sign::{HashAlg, SignOptions};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HashArg {
    Sha256,
    #[value(alias = "blake2")]
    Blake2b,
    Blake3,
}

impl From<HashArg> for HashAlg {
    fn from(h: HashArg) -> HashAlg {
        match h {
            HashArg::Sha256 => HashAlg::Sha256,
            HashArg::Blake2b => HashAlg::Blake2b,
            HashArg::Blake3 => HashAlg::Blake3,
        }
    }
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Model folder or file
    pub path: PathBuf,
    /// EC private key, PEM (PKCS#8, SEC1, or encrypted PKCS#8): P-256, P-384 or P-521
    #[arg(long, value_name = "PRIVATE.pem")]
    pub key: PathBuf,
    /// File whose first line is the password of an encrypted key
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Sign with a certificate: the signing certificate (PEM) first, then its chain
    #[arg(long, value_name = "CERT.pem", num_args = 1..)]
    pub certificate_chain: Vec<PathBuf>,
    /// Where to write the signature [default: PATH/model.sig; next to PATH for a file]
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
    /// Hash for files and shards
    #[arg(long, value_enum, default_value_t = HashArg::Sha256)]
    pub hash: HashArg,
    /// Hash files in shards of BYTES (shard serialization); whole files when absent
    #[arg(long, value_name = "BYTES")]
    pub shard_size: Option<u64>,
    /// Paths (relative to PATH) to leave out; a directory leaves out everything below it
    #[arg(long, value_name = "P", num_args = 1..)]
    pub ignore_paths: Vec<String>,
    /// Hash the targets of symbolic links instead of refusing them
    #[arg(long)]
    pub allow_symlinks: bool,
}

/// The default signature path: `PATH/model.sig`, or `model.sig` beside a single file.
pub fn default_signature(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("model.sig")
    } else {
        path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("model.sig")
    }
}

pub fn read_password(file: &Option<PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    match file {
        None => Ok(None),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading password file {}", p.display()))?;
            Ok(Some(text.lines().next().unwrap_or_default().as_bytes().to_vec()))
        }
    }
}

pub fn run(args: SignArgs) -> anyhow::Result<ExitStatus> {
    let pem = std::fs::read_to_string(&args.key).with_context(|| format!("reading key {}", args.key.display()))?;
    let password = read_password(&args.password_file)?;
    let key = PrivateKey::from_pem(&pem, password.as_deref()).with_context(|| format!("key {}", args.key.display()))?;
    let mut chain = Vec::new();
    for p in &args.certificate_chain {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading certificate {}", p.display()))?;
        chain.extend(Cert::from_pem_all(&text).with_context(|| format!("certificate {}", p.display()))?);
    }
    let signature = args.signature.clone().unwrap_or_else(|| default_signature(&args.path));
    let opts = SignOptions {
        key,
        chain,
        hash: args.hash.into(),
        shard_size: args.shard_size,
        ignore_paths: args.ignore_paths.clone(),
        allow_symlinks: args.allow_symlinks,
        signature: signature.clone(),
    };
    let curve = opts.key.curve();
    let signed = needle_sign::sign(&args.path, &opts).with_context(|| format!("signing {}", args.path.display()))?;
    std::fs::write(&signature, signed.bundle_json.as_bytes()).with_context(|| format!("writing {}", signature.display()))?;
    let method = match signed.manifest.serialization.method {
        needle_sign::Method::Files => "files".to_string(),
        needle_sign::Method::Shards { shard_size } => format!("shards of {shard_size} bytes"),
    };
    println!(
        "signed {} ({} resources, {}, {}) with {} {}\nroot sha256 {}\nwrote {}",
        args.path.display(),
        signed.manifest.items.len(),
        method,
        signed.manifest.serialization.hash.name(),
        if opts.chain.is_empty() { "key" } else { "certificate + key" },
        curve,
        hex_root(&signed.manifest),
        signature.display()
    );
    Ok(ExitStatus::Clean)
}

fn hex_root(m: &needle_sign::Manifest) -> String {
    m.root_digest().iter().map(|b| format!("{b:02x}")).collect()
}
