//! The inspection pipeline: [`Target`] -> [`FileSet`] -> [`Inspection`].

use crate::detect::{self, Format};
use crate::inventory::{FileFacts, Inventory, TensorInfo};
use crate::{archive, config, gguf, limits, numpy, pickle, safetensors, template, tokenizer};
use needle_report::{Failure, Finding, Rule, Severity};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub static SYMLINK_OUTSIDE: Rule = Rule {
    code: "file/symlink-outside",
    severity: Severity::High,
    summary: "a symbolic link points outside the model folder",
    fix: "replace the link with the file it should contain; loaders would read whatever it points to",
};
pub static UNKNOWN_BINARY: Rule = Rule {
    code: "file/unrecognized-binary",
    severity: Severity::Low,
    summary: "a binary file of no known model format",
    fix: "find out what the file is and remove it if the model does not need it",
};

pub static BROKEN_SYMLINK: Rule = Rule {
    code: "file/broken-symlink",
    severity: Severity::Medium,
    summary: "a symbolic link leads nowhere (its target is missing, or links loop)",
    fix: "remove the link or replace it with the file it should contain",
};
pub static SPECIAL_FILE: Rule = Rule {
    code: "file/special-file",
    severity: Severity::Medium,
    summary: "a FIFO, socket or device file in the model folder (reading it can block or read a device)",
    fix: "remove it; a model folder holds only regular files and folders",
};
pub static EXTENSION_MISMATCH: Rule = Rule {
    code: "file/extension-mismatch",
    severity: Severity::Medium,
    summary: "a file's name claims one format (.safetensors, .gguf) but its content is another",
    fix: "find out why the content differs from the name; tools that pick a loader by content would load it as the other format",
};

pub static RULES: &[&Rule] = &[&SYMLINK_OUTSIDE, &UNKNOWN_BINARY, &BROKEN_SYMLINK, &SPECIAL_FILE, &EXTENSION_MISMATCH];

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a file or a folder")]
    NotFileOrFolder { path: String },
    #[error("{path}: more than {max} files", max = limits::MAX_FILES)]
    TooManyFiles { path: String },
}

/// What the user pointed needle at, checked to exist.
#[derive(Debug, Clone)]
pub struct Target {
    /// The path as given.
    pub path: PathBuf,
    pub is_dir: bool,
}

impl Target {
    pub fn open(path: &Path) -> Result<Target, TargetError> {
        let meta = std::fs::metadata(path)
            .map_err(|source| TargetError::Io { path: path.display().to_string(), source })?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(TargetError::NotFileOrFolder { path: path.display().to_string() });
        }
        Ok(Target { path: path.to_path_buf(), is_dir: meta.is_dir() })
    }

    /// Lists every file (recursively for a folder), detecting formats by content.
    ///
    /// Symlinks: a link whose destination leaves the folder is recorded (a finding) and never
    /// read; a dangling or looping link is recorded too. A link to a file inside the folder is
    /// listed under its own name (loaders will read it); a link to a folder inside is not
    /// descended, since that folder is walked at its real place once. Folders are also tracked
    /// by device and inode, so bind mounts cannot make the walk loop.
    pub fn walk(self) -> Result<FileSet, TargetError> {
        let mut files = Vec::new();
        let mut outside_links = Vec::new();
        let mut broken_links = Vec::new();
        let mut special_files = Vec::new();
        let mut failures = Vec::new();
        if self.is_dir {
            let root = std::fs::canonicalize(&self.path)
                .map_err(|source| TargetError::Io { path: self.path.display().to_string(), source })?;
            let mut visited: std::collections::HashSet<(u64, u64)> = std::collections::HashSet::new();
            let mut stack = vec![(root.clone(), String::new(), 0usize)];
            while let Some((dir, prefix, depth)) = stack.pop() {
                if let Some(id) = dir_id(&dir) {
                    if !visited.insert(id) {
                        continue;
                    }
                }
                if depth > limits::MAX_DEPTH {
                    failures.push(Failure::new(Some(prefix_or_dot(&prefix)), format!("folders nested more than {} deep were not examined", limits::MAX_DEPTH)));
                    continue;
                }
                let rd = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) => {
                        failures.push(Failure::new(Some(prefix_or_dot(&prefix)), format!("cannot list folder: {e}")));
                        continue;
                    }
                };
                let mut entries: Vec<_> = rd.filter_map(|e| match e {
                    Ok(e) => Some(e),
                    Err(err) => {
                        failures.push(Failure::new(Some(prefix_or_dot(&prefix)), format!("cannot list folder: {err}")));
                        None
                    }
                }).collect();
                entries.sort_by_key(|e| e.file_name());
                for e in entries {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                    let path = e.path();
                    let lmeta = match std::fs::symlink_metadata(&path) {
                        Ok(m) => m,
                        Err(err) => {
                            failures.push(Failure::new(Some(rel), err.to_string()));
                            continue;
                        }
                    };
                    let mut symlink_target = None;
                    if lmeta.file_type().is_symlink() {
                        let dest = std::fs::read_link(&path).map(|p| p.display().to_string()).unwrap_or_default();
                        match std::fs::canonicalize(&path) {
                            Ok(real) if real.starts_with(&root) => symlink_target = Some(dest),
                            Ok(_) => {
                                outside_links.push((rel, dest));
                                continue;
                            }
                            Err(_) => {
                                broken_links.push((rel, dest));
                                continue;
                            }
                        }
                    }
                    let meta = match std::fs::metadata(&path) {
                        Ok(m) => m,
                        Err(err) => {
                            failures.push(Failure::new(Some(rel), err.to_string()));
                            continue;
                        }
                    };
                    if meta.is_dir() {
                        if symlink_target.is_none() {
                            stack.push((path, rel, depth + 1));
                        }
                        continue;
                    }
                    if !meta.is_file() {
                        special_files.push(rel);
                        continue;
                    }
                    files.push(FileEntry { rel, path, size: meta.len(), format: Format::Unknown, symlink: symlink_target });
                    if files.len() > limits::MAX_FILES {
                        return Err(TargetError::TooManyFiles { path: self.path.display().to_string() });
                    }
                }
            }
            files.sort_by(|a, b| a.rel.cmp(&b.rel));
        } else {
            let size = std::fs::metadata(&self.path)
                .map_err(|source| TargetError::Io { path: self.path.display().to_string(), source })?
                .len();
            let rel = self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.path.display().to_string());
            files.push(FileEntry { rel, path: self.path.clone(), size, format: Format::Unknown, symlink: None });
        }
        for f in &mut files {
            match Mapped::open(&f.path) {
                Ok(m) => f.format = detect::sniff(m.bytes()),
                Err(e) => failures.push(Failure::new(Some(f.rel.clone()), e.to_string())),
            }
        }
        Ok(FileSet { target: self, files, outside_links, broken_links, special_files, failures })
    }
}

#[cfg(unix)]
fn dir_id(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn dir_id(_: &Path) -> Option<(u64, u64)> {
    None
}

fn prefix_or_dot(p: &str) -> String {
    if p.is_empty() { ".".into() } else { p.to_string() }
}

/// One file of the target.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Path relative to the target folder (`/`-separated), or the file name for a file target.
    pub rel: String,
    pub path: PathBuf,
    pub size: u64,
    pub format: Format,
    /// Where a symlink inside the folder points, when this entry is one.
    pub symlink: Option<String>,
}

impl FileEntry {
    /// The file name without folders.
    pub fn name(&self) -> &str {
        self.rel.rsplit('/').next().unwrap_or(&self.rel)
    }
}

/// Every file of a target, formats detected.
#[derive(Debug)]
pub struct FileSet {
    pub target: Target,
    pub files: Vec<FileEntry>,
    /// Symlinks whose destination is outside the folder: `(rel, destination)`.
    pub outside_links: Vec<(String, String)>,
    /// Symlinks that lead nowhere (missing target or a loop): `(rel, destination)`.
    pub broken_links: Vec<(String, String)>,
    /// FIFOs, sockets and devices: listed, never opened.
    pub special_files: Vec<String>,
    /// Files that could not be listed or opened.
    pub failures: Vec<Failure>,
}

impl FileSet {
    /// The file at `rel` (relative, `/`-separated), if any.
    pub fn get(&self, rel: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.rel == rel)
    }

    /// Reads a small file fully (JSON, templates) under a size limit.
    pub fn read_small(&self, f: &FileEntry, max: u64) -> Result<Vec<u8>, String> {
        if f.size > max {
            return Err(format!("file is {} bytes, over the {} byte limit for this kind of file", f.size, max));
        }
        std::fs::read(&f.path).map_err(|e| e.to_string())
    }
}

/// A read-only memory map (or an empty buffer for empty files).
pub struct Mapped {
    map: Option<memmap2::Mmap>,
}

impl Mapped {
    pub fn open(path: &Path) -> std::io::Result<Mapped> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Mapped { map: None });
        }
        // SAFETY: the map is read-only; a file truncated underneath us by another process can
        // fault, which is the documented risk of every mmap-based loader (safetensors included).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Mapped { map: Some(map) })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// What a check sees of one file (or of one archive member).
pub struct FileCtx<'a> {
    /// Display path: `pytorch_model.bin`, or `outer.zip!archive/data.pkl` inside archives.
    pub rel: &'a str,
    pub data: &'a [u8],
    /// Archive nesting depth (0 for a file on disk).
    pub depth: usize,
}

/// Where checks put their results.
#[derive(Debug, Default)]
pub struct Sink {
    pub findings: Vec<Finding>,
    pub failures: Vec<Failure>,
}

impl Sink {
    pub fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }
    pub fn fail(&mut self, file: &str, message: impl Into<String>) {
        self.failures.push(Failure::new(Some(file.to_string()), message));
    }
}

/// A view of a [`Sink`] that keeps at most [`limits::MAX_FINDINGS_PER_CODE`] findings of each
/// code and summarises the rest in one more finding, so a hostile header listing a million bad
/// tensors yields a readable report. Used per file; the summary is written on drop.
pub struct Capped<'a> {
    sink: &'a mut Sink,
    over: BTreeMap<String, (usize, Option<Finding>)>,
}

impl<'a> Capped<'a> {
    pub fn new(sink: &'a mut Sink) -> Self {
        Capped { sink, over: BTreeMap::new() }
    }

    pub fn push(&mut self, f: Finding) {
        let e = self.over.entry(f.code.clone()).or_insert((0, None));
        e.0 += 1;
        if e.0 <= limits::MAX_FINDINGS_PER_CODE {
            self.sink.push(f);
        } else if e.1.is_none() {
            e.1 = Some(f);
        }
    }

    pub fn fail(&mut self, file: &str, message: impl Into<String>) {
        self.sink.fail(file, message);
    }

    /// Writes the summaries (also done on drop).
    pub fn finish(self) {}
}

impl Drop for Capped<'_> {
    fn drop(&mut self) {
        for (code, (n, first)) in std::mem::take(&mut self.over) {
            if let Some(mut f) = first {
                f.message = format!("{} more `{code}` findings like this one were not listed", n - limits::MAX_FINDINGS_PER_CODE);
                f.evidence.clear();
                f.location.at = None;
                self.sink.push(f);
            }
        }
    }
}

/// The result of `needle inspect`.
#[derive(Debug, Default)]
pub struct Inspection {
    pub inventory: Inventory,
    pub findings: Vec<Finding>,
    pub failures: Vec<Failure>,
}

/// Runs every check over the file set.
pub fn inspect(set: &FileSet) -> Inspection {
    let mut sink = Sink::default();
    sink.failures.extend(set.failures.iter().cloned());
    let mut inv = Inventory { kind: if set.target.is_dir { "folder".into() } else { "file".into() }, ..Default::default() };
    for (rel, dest) in &set.outside_links {
        sink.push(
            SYMLINK_OUTSIDE
                .finding(format!("{rel} links to {dest}, outside the model folder"))
                .file(rel.clone())
                .evidence(format!("{rel} -> {dest}")),
        );
    }
    for (rel, dest) in &set.broken_links {
        sink.push(
            BROKEN_SYMLINK
                .finding(format!("{rel} links to {dest}, which does not resolve"))
                .file(rel.clone())
                .evidence(format!("{rel} -> {dest}")),
        );
    }
    for rel in &set.special_files {
        sink.push(SPECIAL_FILE.finding(format!("{rel} is not a regular file")).file(rel.clone()));
    }
    let mut tensors_by_file: BTreeMap<String, Vec<TensorInfo>> = BTreeMap::new();
    let mut gguf_templates: Vec<(String, String, String)> = Vec::new();
    let mut single_flavor = None;
    for f in &set.files {
        inv.total_bytes = inv.total_bytes.saturating_add(f.size);
        let mut facts = FileFacts { path: f.rel.clone(), size: f.size, format: f.format.name().into(), detail: None };
        // A name that claims a format overrides content that is no known format, so that a
        // damaged `model.safetensors` is checked (and reported) as one.
        let mut format = f.format;
        if let Some(claimed) = detect::claimed_by_name(f.name()) {
            if claimed != f.format {
                sink.push(
                    EXTENSION_MISMATCH
                        .finding(format!("{} is named like {} but its content is {}", f.rel, claimed.name(), f.format.name()))
                        .file(f.rel.clone())
                        .evidence(format!("name {}, content {}", f.name(), f.format.name())),
                );
                if matches!(f.format, Format::Unknown | Format::Text | Format::Json | Format::Empty) {
                    format = claimed;
                }
            }
        }
        let needs_bytes = !matches!(format, Format::Empty | Format::Text | Format::Json);
        if needs_bytes {
            let mapped = match Mapped::open(&f.path) {
                Ok(m) => m,
                Err(e) => {
                    sink.fail(&f.rel, e.to_string());
                    inv.files.push(facts);
                    continue;
                }
            };
            let ctx = FileCtx { rel: &f.rel, data: mapped.bytes(), depth: 0 };
            match format {
                Format::Safetensors => {
                    if let Some(t) = safetensors::inspect(&ctx, &mut sink) {
                        facts.detail = Some(tensor_detail(&t));
                        tensors_by_file.insert(f.rel.clone(), t);
                    }
                }
                Format::Gguf => {
                    if let Some(g) = gguf::inspect(&ctx, &mut sink) {
                        facts.detail = Some(g.detail());
                        for (key, src) in &g.chat_templates {
                            gguf_templates.push((f.rel.clone(), key.clone(), src.clone()));
                        }
                        if inv.model.is_none() {
                            inv.model = g.model_facts();
                        }
                        tensors_by_file.insert(f.rel.clone(), g.tensors);
                    }
                }
                Format::Zip | Format::Tar | Format::SevenZip | Format::Gzip | Format::Bzip2 | Format::Xz | Format::Zstd => {
                    if format == Format::Zip && !set.target.is_dir {
                        single_flavor = detect::zip_flavor(ctx.data);
                    }
                    let a = archive::inspect(&ctx, format, &mut sink);
                    facts.detail = a.detail;
                }
                Format::Pickle => {
                    let p = pickle::inspect(&ctx, &mut sink);
                    facts.detail = p.detail;
                }
                Format::Npy => {
                    facts.detail = numpy::inspect(&ctx, &mut sink);
                }
                Format::Elf | Format::MachO | Format::Pe | Format::Script => {
                    config::executable(&ctx, format, &mut sink);
                }
                Format::Unknown => {
                    sink.push(
                        UNKNOWN_BINARY
                            .finding(format!("{} is {} bytes of no known format", f.rel, f.size))
                            .file(f.rel.clone()),
                    );
                }
                Format::Empty | Format::Text | Format::Json => {}
            }
        }
        inv.files.push(facts);
    }
    inv.layout = Some(detect::layout(set, single_flavor));
    for ts in tensors_by_file.values() {
        for t in ts {
            inv.tensors.add(t);
        }
    }
    // Folder-level checks.
    let cfg = config::inspect_folder(set, &mut sink);
    if cfg.model.is_some() {
        inv.model = cfg.model;
    }
    inv.adapter = cfg.adapter;
    inv.shard_index = safetensors::check_index(set, &tensors_by_file, &mut sink);
    let embedding_rows = safetensors::embedding_rows(&tensors_by_file);
    inv.tokenizer = tokenizer::inspect_folder(set, embedding_rows, inv.model.as_ref().and_then(|m| m.vocab_size), &mut sink);
    let mut templates = template::collect(set, &mut sink);
    templates.extend(gguf_templates);
    for (file, key, src) in &templates {
        inv.chat_templates.push(template::facts(file, key, src));
        template::check(src, file, key, &mut sink);
    }
    Inspection { inventory: inv, findings: sink.findings, failures: sink.failures }
}

/// `12 tensors, 1.2M parameters, F32` for the inventory.
fn tensor_detail(t: &[TensorInfo]) -> String {
    let mut s = crate::inventory::TensorSummary::default();
    for x in t {
        s.add(x);
    }
    let dtypes: Vec<&str> = s.dtypes.keys().map(|k| k.as_str()).collect();
    let mut out = format!("{} tensors, {} parameters", s.count, crate::inventory::human_count(s.parameters));
    if !dtypes.is_empty() {
        out.push_str(&format!(", {}", dtypes.join("/")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st_bytes() -> Vec<u8> {
        let h = br#"{"model.embed_tokens.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h);
        out.extend_from_slice(&[0u8; 16]);
        out
    }

    fn run(p: &Path) -> Inspection {
        inspect(&Target::open(p).unwrap().walk().unwrap())
    }

    fn has(ins: &Inspection, code: &str) -> bool {
        ins.findings.iter().any(|f| f.code == code)
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_outside_broken_and_looping() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("model.safetensors"), st_bytes()).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        symlink(outside.path(), p.join("tokenizer.json")).unwrap();
        symlink("missing.bin", p.join("dangling.bin")).unwrap();
        symlink(".", p.join("self")).unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
        symlink("..", p.join("sub/up")).unwrap();
        symlink("../model.safetensors", p.join("sub/weights.safetensors")).unwrap();
        symlink("loop-b", p.join("loop-a")).unwrap();
        symlink("loop-a", p.join("loop-b")).unwrap();
        let ins = run(p);
        assert!(ins.failures.is_empty(), "{:?}", ins.failures);
        assert!(has(&ins, "file/symlink-outside"));
        let broken: Vec<_> = ins.findings.iter().filter(|f| f.code == "file/broken-symlink").collect();
        assert_eq!(broken.len(), 3, "{broken:?}");
        // The link to a file inside is listed (once, under its own name); links to folders are not walked again.
        let names: Vec<_> = ins.inventory.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["model.safetensors", "sub/weights.safetensors"]);
    }

    #[cfg(unix)]
    #[test]
    fn fifos_are_listed_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let ok = std::process::Command::new("mkfifo").arg(&fifo).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            eprintln!("mkfifo unavailable; skipped");
            return;
        }
        let ins = run(dir.path());
        assert!(has(&ins, "file/special-file"));
    }

    #[test]
    fn names_that_claim_a_format_are_checked_as_that_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("model.safetensors"), b"this is not a tensor file at all\n").unwrap();
        std::fs::write(p.join("x.gguf"), [0u8, 1, 2, 3, 4, 5, 6, 7, 200, 201]).unwrap();
        let ins = run(p);
        assert!(has(&ins, "file/extension-mismatch"));
        assert!(has(&ins, "safetensors/header-too-large") || has(&ins, "safetensors/truncated"), "{:?}", ins.findings);
        assert!(has(&ins, "gguf/bad-magic"));
        assert!(!has(&ins, "file/unrecognized-binary"));
    }

    #[test]
    fn capped_summarises_the_rest() {
        static R: Rule = Rule { code: "t/x", severity: Severity::Low, summary: "s", fix: "f" };
        let mut sink = Sink::default();
        {
            let mut c = Capped::new(&mut sink);
            for i in 0..limits::MAX_FINDINGS_PER_CODE + 5 {
                c.push(R.finding(format!("n{i}")));
            }
        }
        assert_eq!(sink.findings.len(), limits::MAX_FINDINGS_PER_CODE + 1);
        assert!(sink.findings.last().unwrap().message.starts_with("5 more"));
    }

    #[test]
    fn layouts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("config.json"), b"{\"model_type\": \"llama\"}").unwrap();
        std::fs::write(p.join("model.safetensors"), st_bytes()).unwrap();
        assert_eq!(run(p).inventory.layout.as_deref(), Some("Hugging Face model (safetensors)"));
        std::fs::write(p.join("adapter_config.json"), b"{\"peft_type\": \"LORA\"}").unwrap();
        assert_eq!(run(p).inventory.layout.as_deref(), Some("PEFT adapter (safetensors)"));
        let ins = run(&p.join("model.safetensors"));
        assert_eq!(ins.inventory.layout.as_deref(), Some("safetensors file"));
        assert_eq!(ins.inventory.tensors.parameters, 4);
    }
}
