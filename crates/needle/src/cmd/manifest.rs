use super::sign::HashArg;
use anyhow::Context;
use clap::{Args, ValueEnum};
use needle_report::ExitStatus;
use needle_sign::manifest::{compute, ManifestOptions, DEFAULT_IGNORES};
use needle_sign::{Method, Serialization};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ManifestFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Model folder or file
    pub path: PathBuf,
    /// Hash for files and shards
    #[arg(long, value_enum, default_value_t = HashArg::Sha256)]
    pub hash: HashArg,
    /// Hash files in shards of BYTES; whole files when absent
    #[arg(long, value_name = "BYTES")]
    pub shard_size: Option<u64>,
    /// Paths (relative to PATH) to leave out
    #[arg(long, value_name = "P", num_args = 1..)]
    pub ignore_paths: Vec<String>,
    /// Hash the targets of symbolic links instead of refusing them
    #[arg(long)]
    pub allow_symlinks: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = ManifestFormat::Human)]
    pub format: ManifestFormat,
}

pub fn run(args: ManifestArgs) -> anyhow::Result<ExitStatus> {
    let mut ignore: Vec<String> = DEFAULT_IGNORES.iter().map(|s| s.to_string()).collect();
    ignore.push("model.sig".into());
    ignore.extend(args.ignore_paths.iter().cloned());
    let hash: needle_sign::HashAlg = args.hash.into();
    let method = match args.shard_size {
        Some(n) if hash != needle_sign::HashAlg::Blake3 => {
            anyhow::ensure!(n >= needle_sign::manifest::MIN_SHARD_SIZE, "shard size must be at least {} bytes", needle_sign::manifest::MIN_SHARD_SIZE);
            Method::Shards { shard_size: n }
        }
        _ => Method::Files,
    };
    let opts = ManifestOptions {
        serialization: Serialization { method, hash, allow_symlinks: args.allow_symlinks, ignore_paths: ignore },
        ignore_abs: vec![],
        only_files: None,
    };
    let m = compute(&args.path, &opts).with_context(|| format!("hashing {}", args.path.display()))?;
    let root: String = m.root_digest().iter().map(|b| format!("{b:02x}")).collect();
    match args.format {
        ManifestFormat::Json => {
            let v = serde_json::json!({
                "model_name": m.model_name,
                "root_digest": {"sha256": root},
                "serialization": m.serialization.to_json(),
                "resources": m.items,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ManifestFormat::Human => {
            println!("model {}  ({} resources, {})", m.model_name, m.items.len(), m.serialization.algorithm());
            for it in &m.items {
                let d: String = it.digest.iter().map(|b| format!("{b:02x}")).collect();
                println!("{d}  {}", it.name);
            }
            println!("root sha256 {root}");
        }
    }
    Ok(ExitStatus::Clean)
}
