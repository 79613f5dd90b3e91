//! Shared by the fixed-seed mutation tests (needle-engine's `tests/model_mutation.rs` includes it
//! too): a deterministic generator and one mutator, tuned per format by a [`Profile`].

/// xorshift64: a tiny deterministic generator, so every run mutates the same way.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// What a format's mutations favour.
pub struct Profile {
    /// Bytes written over a byte (its syntax: brackets, opcodes).
    pub interesting: &'static [u8],
    /// Values written over a 32-bit field (lengths, offsets, counts, memo keys); the input's
    /// length is added.
    pub narrow: &'static [u32],
    /// Values written over a 64-bit field, at the start of the input a third of the time (a
    /// safetensors header length) and anywhere else otherwise; none skips this mutation. The
    /// input's length is added.
    pub wide: &'static [u64],
}

/// `seed` mutated 1 to 4 times: bit flips, interesting bytes, random bytes, extreme 32- and
/// 64-bit fields, truncations, runs copied within it or spliced from another of `all`, zeros
/// appended, runs deleted.
pub fn mutate(rng: &mut XorShift, seed: &[u8], all: &[Vec<u8>], p: &Profile) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = p.interesting[rng.below(p.interesting.len())];
            }
            2 if len > 0 => {
                let i = rng.below(len);
                d[i] = rng.next() as u8;
            }
            3 if len > 8 && !p.wide.is_empty() => {
                let i = if rng.below(3) == 0 { 0 } else { rng.below(len - 8) };
                let k = rng.below(p.wide.len() + 1);
                let v = p.wide.get(k).copied().unwrap_or(len as u64);
                d[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            4 if len > 4 => {
                let i = rng.below(len - 4);
                let k = rng.below(p.narrow.len() + 1);
                let v = p.narrow.get(k).copied().unwrap_or(len as u32);
                d[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            5 => d.truncate(rng.below(len + 1)),
            6 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                let chunk = d[a..b].to_vec();
                let at = rng.below(len);
                d.splice(at..at, chunk);
            }
            7 => {
                let other = &all[rng.below(all.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + rng.below(256)).min(other.len());
                    let at = rng.below(len + 1);
                    d.splice(at..at, other[a..b].iter().copied());
                }
            }
            8 => d.extend(std::iter::repeat_n(0u8, rng.below(256))),
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

/// Safetensors and GGUF: JSON syntax bytes, and the counts, lengths and offsets of their headers.
#[allow(dead_code)]
pub const TENSORS: Profile = Profile {
    interesting: &[0x00, 0x01, 0x7f, 0x80, 0xff, b'{', b'}', b'[', b']', b'"', b',', b':', b'0', b'9', b'-', b' '],
    narrow: &[0, 1, 4, 9, 8, 0xffff_ffff, 0x8000_0000],
    wide: &[0, 1, u64::MAX, 1 << 63, 1 << 32, 100_000_001],
};
