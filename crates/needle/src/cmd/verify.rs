use crate::cli::ReportArgs;
use crate::output;
use clap::Args;
use needle_report::{ExitStatus, Failure, Report};
use needle_sign::keys::PublicKey;
use needle_sign::sigstore::TrustedRoot;
use needle_sign::x509::Cert;
use needle_sign::{Trust, VerifyOptions};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Model folder or file
    pub path: PathBuf,
    /// The signature (Sigstore bundle) [default: PATH/model.sig; next to PATH for a file]
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
    /// Verify a key signature with this EC public key (PEM)
    #[arg(long, value_name = "PUBLIC.pem", conflicts_with_all = ["certificate_chain", "identity"])]
    pub key: Option<PathBuf>,
    /// Verify a certificate signature: trusted root (and intermediate) CA certificates, PEM
    #[arg(long, value_name = "CA.pem", num_args = 1.., conflicts_with = "identity")]
    pub certificate_chain: Vec<PathBuf>,
    /// Sigstore keyless: the signer identity (certificate SAN: e-mail or URI), checked offline
    #[arg(long, value_name = "ID", requires = "issuer")]
    pub identity: Option<String>,
    /// Sigstore keyless: the OIDC issuer recorded in the certificate
    #[arg(long, value_name = "URL", requires = "identity")]
    pub issuer: Option<String>,
    /// Sigstore trusted_root.json to use instead of the public-good root shipped with needle
    #[arg(long, value_name = "FILE", requires = "identity")]
    pub trusted_root: Option<PathBuf>,
    /// Paths (relative to PATH) to leave out, in addition to those recorded in the signature
    #[arg(long, value_name = "P", num_args = 1..)]
    pub ignore_paths: Vec<String>,
    /// Do not report files the signature does not cover
    #[arg(long)]
    pub ignore_unsigned_files: bool,
    #[command(flatten)]
    pub report: ReportArgs,
}

fn trust(args: &VerifyArgs) -> Result<Trust, String> {
    let read = |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    if let Some(k) = &args.key {
        let pem = read(k)?;
        return PublicKey::from_pem(&pem).map(Trust::Key).map_err(|e| format!("{}: {e}", k.display()));
    }
    if !args.certificate_chain.is_empty() {
        let mut roots = Vec::new();
        for p in &args.certificate_chain {
            roots.extend(Cert::from_pem_all(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))?);
        }
        return Ok(Trust::Chain(roots));
    }
    if let (Some(identity), Some(issuer)) = (&args.identity, &args.issuer) {
        let root = match &args.trusted_root {
            Some(p) => {
                let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
                TrustedRoot::parse(&bytes).map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => TrustedRoot::public_good().map_err(|e| e.to_string())?,
        };
        return Ok(Trust::Sigstore { root: Box::new(root), identity: identity.clone(), issuer: issuer.clone() });
    }
    Err("say how to verify: --key PUBLIC.pem, --certificate-chain CA.pem ..., or --identity and --issuer (Sigstore)".into())
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitStatus> {
    let catalogue = super::rules::catalogue();
    let policy = output::load_policy(&args.report, &catalogue)?;
    let mut report = Report::new("verify", args.path.display().to_string());
    let signature = args.signature.clone().unwrap_or_else(|| super::sign::default_signature(&args.path));
    let mut preamble = String::new();
    match trust(&args) {
        Err(msg) => report.fail(Failure::new(None, msg)),
        Ok(trust) => {
            let opts = VerifyOptions {
                trust,
                signature: signature.clone(),
                ignore_paths: args.ignore_paths.clone(),
                ignore_unsigned_files: args.ignore_unsigned_files,
            };
            eprintln!("needle: verifying {} against {}", args.path.display(), signature.display());
            match needle_sign::verify(&args.path, &opts) {
                Ok(v) => {
                    for s in &v.steps {
                        preamble.push_str(&format!(
                            "  {}. {:<28} {}  {}\n",
                            s.step,
                            s.name,
                            if s.passed { "ok  " } else { "FAIL" },
                            s.detail
                        ));
                    }
                    if let Some(signer) = &v.signer {
                        preamble.push_str(&format!("signer: {signer}\n"));
                    }
                    report.facts = serde_json::to_value(&v)?;
                    report.extend(v.findings);
                }
                Err(e) => {
                    let file = match &e {
                        needle_sign::SignError::Malformed(_) => Some(signature.display().to_string()),
                        _ => None,
                    };
                    report.fail(Failure::new(file, e.to_string()));
                }
            }
        }
    }
    report.sort();
    let pre = (!preamble.is_empty()).then(|| format!("verification steps:\n{preamble}"));
    output::finish(report, &args.report, &policy, &catalogue, pre)
}
