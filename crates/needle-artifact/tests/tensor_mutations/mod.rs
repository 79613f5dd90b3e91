//! Mutations of binary tensor files (safetensors, GGUF): bit flips, interesting bytes, extreme
//! 32/64-bit values in length and offset fields, truncations, splices within a file and from
//! other seeds. Shared by `tests/tensors_mutation.rs` and needle-engine's
//! `tests/gguf_mutation.rs`; each declares `mod common` (the generator) at its root.

use crate::common::XorShift;

const INTERESTING: &[u8] = &[0x00, 0x01, 0x7f, 0x80, 0xff, b'{', b'}', b'[', b']', b'"', b',', b':', b'0', b'9', b'-', b' '];

pub fn mutate(rng: &mut XorShift, seed: &[u8], all: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 8 => {
                // A 64-bit field (GGUF counts, lengths and offsets; the safetensors length).
                let i = if rng.below(3) == 0 { 0 } else { rng.below(len - 8) };
                let v: u64 = [0, 1, u64::MAX, 1 << 63, 1 << 32, len as u64, 100_000_001][rng.below(7)];
                d[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            3 if len > 4 => {
                let i = rng.below(len - 4);
                let v: u32 = [0, 1, 4, 9, 8, 0xffff_ffff, 0x8000_0000][rng.below(7)];
                d[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            4 => d.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                let chunk = d[a..b].to_vec();
                let at = rng.below(len);
                d.splice(at..at, chunk);
            }
            6 => {
                let other = &all[rng.below(all.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + rng.below(256)).min(other.len());
                    let at = rng.below(len + 1);
                    d.splice(at..at, other[a..b].iter().copied());
                }
            }
            7 => d.extend(std::iter::repeat_n(0u8, rng.below(256))),
            _ if len > 1 => {
                let a = rng.below(len);
                let b = (a + rng.below(32)).min(len);
                d.drain(a..b);
            }
            _ => {}
        }
    }
    d
}
