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
