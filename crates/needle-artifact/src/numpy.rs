//! NumPy `.npy` (object arrays carry pickles). (stub: to be implemented)

use crate::inspect::{FileCtx, Sink};
use needle_report::Rule;

pub static RULES: &[&Rule] = &[];

/// Returns a one-line detail for the inventory.
pub fn inspect(_ctx: &FileCtx, _sink: &mut Sink) -> Option<String> {
    None
}
