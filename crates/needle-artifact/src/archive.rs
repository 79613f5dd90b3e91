//! Archives: PyTorch zip (read tolerantly, as PyTorch does), nested zips, tar, 7z and
//! compressed wrappers. (stub: to be implemented)

use crate::detect::Format;
use crate::inspect::{FileCtx, Sink};
use needle_report::Rule;

pub static RULES: &[&Rule] = &[];

#[derive(Debug, Clone, Default)]
pub struct ArchiveFacts {
    pub detail: Option<String>,
}

/// Inspects an archive of format `format` and, recursively, what it contains.
pub fn inspect(_ctx: &FileCtx, _format: Format, _sink: &mut Sink) -> ArchiveFacts {
    ArchiveFacts::default()
}

/// Offset of a zip end-of-central-directory record, when `data` ends with one.
pub fn find_zip_end(_data: &[u8]) -> Option<usize> {
    None
}
