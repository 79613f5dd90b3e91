//! OMS manifests: which files a model is made of, how they are cut (whole files or shards) and
//! their digests. Paths and ordering follow the reference implementation (`model_signing` 1.x):
//! names are POSIX paths relative to the model root (`.` when the model is a single file),
//! items are ordered by path components, then shard offsets.

use crate::SignError;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// Paths the reference ignores unless told otherwise.
pub const DEFAULT_IGNORES: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];

/// Hard limit on the number of files in one model (a hostile folder must not exhaust memory).
pub const MAX_FILES: usize = 1_000_000;
/// Hard limit on directory depth.
pub const MAX_DEPTH: usize = 64;
/// Smallest shard size accepted (a tiny shard size would explode the manifest).
pub const MIN_SHARD_SIZE: u64 = 4096;
/// Default shard size of the reference (1 GB).
pub const DEFAULT_SHARD_SIZE: u64 = 1_000_000_000;

/// Content hash of a file or shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HashAlg {
    #[serde(rename = "sha256")]
    Sha256,
    #[serde(rename = "blake2b")]
    Blake2b,
    #[serde(rename = "blake3")]
    Blake3,
}

impl HashAlg {
    /// Name as written in `hash_type` and resource `algorithm`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Blake2b => "blake2b",
            HashAlg::Blake3 => "blake3",
        }
    }

    /// Parses a hash name; `blake2` is the reference's CLI spelling of `blake2b`.
    pub fn parse(s: &str) -> Option<HashAlg> {
        match s {
            "sha256" => Some(HashAlg::Sha256),
            "blake2b" | "blake2" => Some(HashAlg::Blake2b),
            "blake3" => Some(HashAlg::Blake3),
            _ => None,
        }
    }

    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha256 | HashAlg::Blake3 => 32,
            HashAlg::Blake2b => 64,
        }
    }

    /// Digest of `data`. BLAKE3 over large inputs fans out across cores.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha256 => Sha256::digest(data).to_vec(),
            HashAlg::Blake2b => blake2::Blake2b512::digest(data).to_vec(),
            HashAlg::Blake3 => {
                let mut h = blake3::Hasher::new();
                if data.len() >= 1 << 20 {
                    h.update_rayon(data);
                } else {
                    h.update(data);
                }
                h.finalize().as_bytes().to_vec()
            }
        }
    }
}

/// How a model is cut into resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Files,
    Shards { shard_size: u64 },
}

/// Everything needed to recompute a manifest: recorded in the signature's `serialization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serialization {
    pub method: Method,
    pub hash: HashAlg,
    pub allow_symlinks: bool,
    /// Paths relative to the model root; a directory ignores everything below it.
    pub ignore_paths: Vec<String>,
}

impl Serialization {
    /// The resource `algorithm` string for this serialization.
    pub fn algorithm(&self) -> String {
        match self.method {
            Method::Files => self.hash.name().to_string(),
            Method::Shards { shard_size } => format!("{}-sharded-{shard_size}", self.hash.name()),
        }
    }

    /// The `serialization` object of the OMS predicate.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        match self.method {
            Method::Files => {
                m.insert("method".into(), "files".into());
                m.insert("hash_type".into(), self.hash.name().into());
            }
            Method::Shards { shard_size } => {
                m.insert("method".into(), "shards".into());
                m.insert("hash_type".into(), self.hash.name().into());
                m.insert("shard_size".into(), shard_size.into());
            }
        }
        m.insert("allow_symlinks".into(), self.allow_symlinks.into());
        if !self.ignore_paths.is_empty() {
            m.insert("ignore_paths".into(), self.ignore_paths.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

/// One resource: a whole file or one shard of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// `path` for files, `path:start:end` for shards.
    pub name: String,
    pub algorithm: String,
    #[serde(serialize_with = "ser_hex")]
    pub digest: Vec<u8>,
}

fn ser_hex<S: serde::Serializer>(d: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(d))
}

impl Item {
    /// The file a resource belongs to (the name without `:start:end` for shards).
    pub fn file<'a>(&'a self, method: &Method) -> &'a str {
        match method {
            Method::Files => &self.name,
            Method::Shards { .. } => split_shard(&self.name).map(|(p, _, _)| p).unwrap_or(&self.name),
        }
    }
}

/// Splits `path:start:end` (the path may itself contain `:`).
pub fn split_shard(name: &str) -> Option<(&str, u64, u64)> {
    let mut it = name.rsplitn(3, ':');
    let end = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    let path = it.next()?;
    (start <= end).then_some((path, start, end))
}

/// A model's manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub model_name: String,
    #[serde(skip)]
    pub serialization: Serialization,
    pub items: Vec<Item>,
}

impl Manifest {
    /// SHA-256 over the concatenated raw digests in manifest order: the in-toto subject digest.
    pub fn root_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for it in &self.items {
            h.update(&it.digest);
        }
        h.finalize().into()
    }

    /// Sorts items the way the reference does: path components, then start and end offsets.
    pub fn sort(&mut self) {
        let method = self.serialization.method;
        self.items.sort_by_cached_key(|it| sort_key(&it.name, &method));
    }
}

fn sort_key(name: &str, method: &Method) -> (Vec<String>, u64, u64) {
    let (path, s, e) = match method {
        Method::Files => (name, 0, 0),
        Method::Shards { .. } => split_shard(name).unwrap_or((name, 0, 0)),
    };
    (path.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string).collect(), s, e)
}

/// Options for walking and hashing a model.
#[derive(Debug, Clone)]
pub struct ManifestOptions {
    pub serialization: Serialization,
    /// Extra absolute paths to ignore (the signature file when it lies inside the model).
    pub ignore_abs: Vec<PathBuf>,
    /// When set, only these files (relative names) are hashed: `--ignore-unsigned-files`.
    pub only_files: Option<std::collections::BTreeSet<String>>,
}

/// One file found under the model root.
#[derive(Debug, Clone)]
pub struct FoundFile {
    /// Relative POSIX name (`.` for a single-file model).
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Normalises a user-given ignore path to components relative to `root`.
fn rel_components(root: &Path, p: &str) -> Option<Vec<String>> {
    let pb = Path::new(p);
    let rel = if pb.is_absolute() {
        let canon_root = root.canonicalize().ok()?;
        let canon = pb.canonicalize().unwrap_or_else(|_| pb.to_path_buf());
        canon.strip_prefix(&canon_root).ok()?.to_path_buf()
    } else {
        pb.to_path_buf()
    };
    let comps: Vec<String> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    (!comps.is_empty()).then_some(comps)
}

/// Lists the files of a model the way the reference does: every regular file below `root`
/// (hidden ones included), skipping ignored paths; symlinks are an error unless allowed, in
/// which case a link to a file is hashed as that file and a link to a directory is not entered.
pub fn list_files(root: &Path, opts: &ManifestOptions) -> Result<Vec<FoundFile>, SignError> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| SignError::io(root, e))?;
    let allow = opts.serialization.allow_symlinks;
    if meta.file_type().is_symlink() && !allow {
        return Err(SignError::Symlink(root.display().to_string()));
    }
    let target_meta = std::fs::metadata(root).map_err(|e| SignError::io(root, e))?;
    if target_meta.is_file() {
        return Ok(vec![FoundFile { name: ".".into(), path: root.to_path_buf(), size: target_meta.len() }]);
    }
    if !target_meta.is_dir() {
        return Err(SignError::SpecialFile(root.display().to_string()));
    }
    let ignores: Vec<Vec<String>> =
        opts.serialization.ignore_paths.iter().filter_map(|p| rel_components(root, p)).collect();
    let ignore_abs: Vec<Vec<String>> =
        opts.ignore_abs.iter().filter_map(|p| rel_components(root, &p.to_string_lossy())).collect();
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, Vec<String>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir, comps)) = stack.pop() {
        if comps.len() > MAX_DEPTH {
            return Err(SignError::Limit(format!("directory depth above {MAX_DEPTH} at {}", dir.display())));
        }
        let rd = std::fs::read_dir(&dir).map_err(|e| SignError::io(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| SignError::io(&dir, e))?;
            let fname = entry.file_name();
            let fname = fname
                .to_str()
                .ok_or_else(|| SignError::BadName(entry.path().display().to_string()))?
                .to_string();
            let mut c = comps.clone();
            c.push(fname);
            if ignores.iter().chain(ignore_abs.iter()).any(|ig| c.starts_with(ig)) {
                continue;
            }
            let path = entry.path();
            let name = c.join("/");
            let ft = entry.file_type().map_err(|e| SignError::io(&path, e))?;
            if ft.is_symlink() {
                if !allow {
                    return Err(SignError::Symlink(name));
                }
                // Broken links and special files are refused like the reference does.
                let m = std::fs::metadata(&path).map_err(|_| SignError::SpecialFile(name.clone()))?;
                if m.is_file() {
                    push_file(&mut out, opts, name, path, m.len())?;
                } else if !m.is_dir() {
                    return Err(SignError::SpecialFile(name));
                }
            } else if ft.is_dir() {
                stack.push((path, c));
            } else if ft.is_file() {
                let m = entry.metadata().map_err(|e| SignError::io(&path, e))?;
                push_file(&mut out, opts, name, path, m.len())?;
            } else {
                return Err(SignError::SpecialFile(name));
            }
        }
    }
    Ok(out)
}

fn push_file(
    out: &mut Vec<FoundFile>,
    opts: &ManifestOptions,
    name: String,
    path: PathBuf,
    size: u64,
) -> Result<(), SignError> {
    if let Some(only) = &opts.only_files {
        if !only.contains(&name) {
            return Ok(());
        }
    }
    if out.len() >= MAX_FILES {
        return Err(SignError::Limit(format!("more than {MAX_FILES} files")));
    }
    out.push(FoundFile { name, path, size });
    Ok(())
}

/// Model name the reference records: the last component of the path.
pub fn model_name(root: &Path) -> String {
    match root.file_name().and_then(|n| n.to_str()) {
        Some(n) if n != ".." => n.to_string(),
        _ => root
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default(),
    }
}

struct Unit<'a> {
    file: &'a FoundFile,
    start: u64,
    end: u64,
    name: String,
}

/// Walks and hashes a model. Files (or shards) are hashed in parallel; each file is memory
/// mapped, so resident memory stays flat whatever the model size.
pub fn compute(root: &Path, opts: &ManifestOptions) -> Result<Manifest, SignError> {
    let files = list_files(root, opts)?;
    let ser = opts.serialization.clone();
    let mut units = Vec::new();
    for f in &files {
        match ser.method {
            Method::Files => units.push(Unit { file: f, start: 0, end: f.size, name: f.name.clone() }),
            Method::Shards { shard_size } => {
                let shards = f.size.div_ceil(shard_size.max(1));
                if units.len() as u64 + shards > crate::bundle::MAX_RESOURCES as u64 {
                    return Err(SignError::Limit(format!("more than {} shards", crate::bundle::MAX_RESOURCES)));
                }
                let mut start = 0u64;
                while start < f.size {
                    let end = start.saturating_add(shard_size).min(f.size);
                    units.push(Unit { file: f, start, end, name: format!("{}:{start}:{end}", f.name) });
                    start = end;
                }
            }
        }
    }
    // Big units first so the pool stays busy until the end.
    units.sort_by_key(|u| std::cmp::Reverse(u.end - u.start));
    use rayon::prelude::*;
    let algorithm = ser.algorithm();
    let items: Result<Vec<Item>, SignError> = units
        .par_iter()
        .map(|u| {
            let digest = hash_range(&u.file.path, u.start, u.end, ser.hash)?;
            Ok(Item { name: u.name.clone(), algorithm: algorithm.clone(), digest })
        })
        .collect();
    let mut m = Manifest { model_name: model_name(root), serialization: ser, items: items? };
    m.sort();
    Ok(m)
}

/// Bytes mapped at a time: resident memory stays bounded whatever the file size.
const WINDOW: u64 = 64 << 20;

enum Hasher {
    Sha256(Box<Sha256>),
    Blake2b(Box<blake2::Blake2b512>),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    fn new(alg: HashAlg) -> Hasher {
        match alg {
            HashAlg::Sha256 => Hasher::Sha256(Box::default()),
            HashAlg::Blake2b => Hasher::Blake2b(Box::default()),
            HashAlg::Blake3 => Hasher::Blake3(Box::default()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Blake2b(h) => h.update(data),
            Hasher::Blake3(h) => {
                if data.len() >= 1 << 20 {
                    h.update_rayon(data);
                } else {
                    h.update(data);
                }
            }
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Blake2b(h) => h.finalize().to_vec(),
            Hasher::Blake3(h) => h.finalize().as_bytes().to_vec(),
        }
    }
}

/// Hashes bytes `start..end` of a file through memory maps of at most [`WINDOW`] bytes, each
/// unmapped once hashed.
pub fn hash_range(path: &Path, start: u64, end: u64, alg: HashAlg) -> Result<Vec<u8>, SignError> {
    hash_range_in(path, start, end, alg, WINDOW)
}

fn hash_range_in(path: &Path, start: u64, end: u64, alg: HashAlg, window: u64) -> Result<Vec<u8>, SignError> {
    let mut hasher = Hasher::new(alg);
    if end == start {
        return Ok(hasher.finish());
    }
    let file = std::fs::File::open(path).map_err(|e| SignError::io(path, e))?;
    let len = file.metadata().map_err(|e| SignError::io(path, e))?.len();
    if end > len {
        return Err(SignError::Changed(path.display().to_string()));
    }
    let mut off = start;
    while off < end {
        let n = (end - off).min(window.max(1));
        let n_usize = usize::try_from(n).map_err(|_| SignError::Limit("window size".into()))?;
        // SAFETY: the map is read-only; a file truncated while mapped can fault, which a signer
        // or verifier accepts (the reference tool has the same exposure through its reads).
        let map = unsafe { memmap2::MmapOptions::new().offset(off).len(n_usize).map(&file) }
            .map_err(|e| SignError::io(path, e))?;
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        hasher.update(&map);
        off += n;
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_split_from_the_right() {
        assert_eq!(split_shard("a:b:0:10"), Some(("a:b", 0, 10)));
        assert_eq!(split_shard("x:10:0"), None);
        assert_eq!(split_shard("x"), None);
    }

    #[test]
    fn order_is_by_components() {
        let ser = Serialization { method: Method::Files, hash: HashAlg::Sha256, allow_symlinks: false, ignore_paths: vec![] };
        let mk = |n: &str| Item { name: n.into(), algorithm: "sha256".into(), digest: vec![] };
        let mut m = Manifest { model_name: "m".into(), serialization: ser, items: vec![mk("a-b"), mk("a/b"), mk("a")] };
        m.sort();
        let names: Vec<_> = m.items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a", "a/b", "a-b"]);
    }

    #[test]
    fn shards_sort_numerically() {
        let ser = Serialization { method: Method::Shards { shard_size: 5 }, hash: HashAlg::Sha256, allow_symlinks: false, ignore_paths: vec![] };
        let mk = |n: &str| Item { name: n.into(), algorithm: String::new(), digest: vec![] };
        let mut m = Manifest { model_name: "m".into(), serialization: ser, items: vec![mk("f:10:15"), mk("f:5:10"), mk("f:0:5")] };
        m.sort();
        assert_eq!(m.items[0].name, "f:0:5");
        assert_eq!(m.items[2].name, "f:10:15");
    }

    #[test]
    fn windows_and_ranges_hash_like_one_pass() {
        let dir = std::env::temp_dir().join(format!("needle-sign-win-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        let data: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        for alg in [HashAlg::Sha256, HashAlg::Blake2b, HashAlg::Blake3] {
            assert_eq!(hash_range_in(&p, 0, data.len() as u64, alg, 4096).unwrap(), alg.hash(&data));
            assert_eq!(hash_range_in(&p, 5000, 70_001, alg, 999).unwrap(), alg.hash(&data[5000..70_001]));
            assert_eq!(hash_range(&p, 3, 3, alg).unwrap(), alg.hash(&[]));
        }
        assert!(matches!(hash_range(&p, 0, 200_000, HashAlg::Sha256), Err(SignError::Changed(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn known_digests() {
        assert_eq!(hex::encode(HashAlg::Sha256.hash(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(HashAlg::Blake2b.hash(b"").len(), 64);
        assert_eq!(hex::encode(HashAlg::Blake3.hash(b"")), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    }
}
