//! Hard limits applied to every parser. Hostile input that exceeds one produces a finding or a
//! clear error, never an unbounded allocation or a hang.

/// Largest JSON file (config, tokenizer, index) read into memory.
pub const MAX_JSON_BYTES: u64 = 256 * 1024 * 1024;
/// Largest chat template considered.
pub const MAX_TEMPLATE_BYTES: usize = 1024 * 1024;
/// Largest safetensors header (the reference parser's limit).
pub const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;
/// Archive nesting depth (zip in tar in zip ...).
pub const MAX_ARCHIVE_DEPTH: usize = 4;
/// Entries read from one archive.
pub const MAX_ARCHIVE_ENTRIES: usize = 100_000;
/// Bytes decompressed from one archive member.
pub const MAX_MEMBER_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Files walked in a folder.
pub const MAX_FILES: usize = 100_000;
/// Tensors described by one safetensors header or one GGUF file.
pub const MAX_TENSORS: u64 = 1_000_000;
/// Metadata key/value pairs in one GGUF file.
pub const MAX_GGUF_KV: u64 = 1_000_000;
/// Bytes of one GGUF string (keys, values, tensor names). Chat templates and merges fit easily.
pub const MAX_GGUF_STRING: u64 = 64 * 1024 * 1024;
/// Elements of one GGUF array (vocabularies are about 10^5 to 10^6).
pub const MAX_GGUF_ARRAY_LEN: u64 = 64 * 1024 * 1024;
/// Nesting of GGUF arrays of arrays.
pub const MAX_GGUF_ARRAY_DEPTH: usize = 3;
/// Values visited in one GGUF metadata section, arrays included (bounds the walk's time).
pub const MAX_GGUF_VALUES: u64 = 256 * 1024 * 1024;
/// Dimensions of one GGUF tensor (ggml's GGML_MAX_DIMS).
pub const MAX_GGUF_DIMS: u32 = 4;
/// Dimensions of one safetensors tensor considered plausible.
pub const MAX_SAFETENSORS_DIMS: usize = 64;
/// Findings of one code reported for one file; the rest are summarised in one more finding.
pub const MAX_FINDINGS_PER_CODE: usize = 20;
/// Folder depth walked.
pub const MAX_DEPTH: usize = 64;
