//! The safetensors header JSON, read with serde visitors that see every key (serde_json's own
//! maps keep the last of two equal keys silently, which is exactly the differential we report)
//! and that never hold more than a bounded amount per value.

use crate::limits;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// Bits per element of every dtype the reference parser knows.
pub fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// A parsed header: every entry, in file order, duplicates included.
#[derive(Debug, Default)]
pub struct Header {
    pub tensors: Vec<RawTensor>,
    /// Keys seen more than once: top-level names, or `tensor.field` inside an entry.
    pub duplicate_keys: Vec<String>,
    pub metadata_problems: Vec<MetadataProblem>,
    /// Number of `__metadata__` entries.
    pub metadata_entries: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataProblem {
    NotAnObject(&'static str),
    NonString { key: String, kind: &'static str },
    DuplicateKey(String),
}

/// One tensor entry as written. `problem` is set when the entry is not well formed; then
/// `shape`/`offsets` hold whatever could be read.
#[derive(Debug, Clone, Default)]
pub struct RawTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub offsets: [u64; 2],
    pub problem: Option<String>,
}

impl RawTensor {
    /// The entry as compact JSON-like text, for evidence.
    pub fn describe(&self) -> String {
        format!(
            "\"{}\": {{\"dtype\": \"{}\", \"shape\": {:?}, \"data_offsets\": [{}, {}]}}",
            self.name, self.dtype, self.shape, self.offsets[0], self.offsets[1]
        )
    }
}

#[derive(Debug)]
pub enum HeaderError {
    /// Not a header the reference parser accepts at all.
    Invalid(String),
    /// Over needle's tensor limit: the file may be valid; we did not examine it.
    TooManyTensors,
}

const TOO_MANY: &str = "needle: too many tensors";

/// Parses header bytes (without the 8-byte length).
pub fn parse_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| HeaderError::Invalid(format!("not UTF-8 (invalid byte at header offset {})", e.valid_up_to())))?;
    match text.chars().next() {
        Some('{') => {}
        Some(c) => {
            return Err(HeaderError::Invalid(format!("the header starts with {c:?}, not `{{`")));
        }
        None => return Err(HeaderError::Invalid("the header is empty".into())),
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let header = HeaderSeed.deserialize(&mut de).map_err(map_err)?;
    de.end().map_err(map_err)?;
    Ok(header)
}

fn map_err(e: serde_json::Error) -> HeaderError {
    if e.to_string().starts_with(TOO_MANY) {
        HeaderError::TooManyTensors
    } else {
        HeaderError::Invalid(e.to_string())
    }
}

struct HeaderSeed;

impl<'de> DeserializeSeed<'de> for HeaderSeed {
    type Value = Header;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Header, D::Error> {
        d.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of tensors")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
        let mut h = Header::default();
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                h.duplicate_keys.push(key.clone());
            } else {
                seen.insert(key.clone());
            }
            if key == "__metadata__" {
                let m: MetaValue = map.next_value()?;
                h.metadata_entries += m.entries;
                h.metadata_problems.extend(m.problems);
                continue;
            }
            if h.tensors.len() as u64 >= limits::MAX_TENSORS {
                return Err(de::Error::custom(TOO_MANY));
            }
            let entry: TensorValue = map.next_value()?;
            for k in &entry.duplicate_fields {
                h.duplicate_keys.push(format!("{key}.{k}"));
            }
            h.tensors.push(entry.into_raw(key));
        }
        Ok(h)
    }
}

/// A JSON value reduced to what a tensor entry may hold, with bounded size.
#[derive(Debug, Clone, PartialEq)]
enum Loose {
    Null,
    Bool,
    UInt(u64),
    NegInt,
    Float,
    Str(String),
    /// Up to `MAX_SAFETENSORS_DIMS + 1` elements; `true` when more were skipped.
    Seq(Vec<Atom>, bool),
    Map,
}

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    UInt(u64),
    Other(&'static str),
}

impl Loose {
    fn kind(&self) -> &'static str {
        match self {
            Loose::Null => "null",
            Loose::Bool => "a boolean",
            Loose::UInt(_) => "a number",
            Loose::NegInt => "a negative number",
            Loose::Float => "a fractional number",
            Loose::Str(_) => "a string",
            Loose::Seq(..) => "an array",
            Loose::Map => "an object",
        }
    }

    /// A list of non-negative integers of at most `max` elements.
    fn uint_list(&self, max: usize) -> Result<Vec<u64>, String> {
        match self {
            Loose::Seq(items, more) => {
                if *more || items.len() > max {
                    return Err(format!("more than {max} elements"));
                }
                items
                    .iter()
                    .map(|a| match a {
                        Atom::UInt(n) => Ok(*n),
                        Atom::Other(k) => Err(format!("an element is {k}, not a non-negative integer")),
                    })
                    .collect()
            }
            other => Err(format!("{}, not an array", other.kind())),
        }
    }
}

struct LooseVisitor;

macro_rules! scalar_visits {
    ($t:ty, $uint:expr, $neg:expr, $float:expr, $other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$t, E> {
            Ok($other("a boolean"))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<$t, E> {
            Ok($uint(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<$t, E> {
            if v >= 0 { Ok($uint(v as u64)) } else { Ok($neg) }
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$t, E> {
            Ok($float)
        }
        fn visit_unit<E: de::Error>(self) -> Result<$t, E> {
            Ok($other("null"))
        }
        fn visit_none<E: de::Error>(self) -> Result<$t, E> {
            Ok($other("null"))
        }
    };
}

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    scalar_visits!(Loose, Loose::UInt, Loose::NegInt, Loose::Float, |k| if k == "null" { Loose::Null } else { Loose::Bool });
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose, E> {
        Ok(Loose::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Loose, E> {
        Ok(Loose::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
        let mut items = Vec::new();
        let mut more = false;
        while items.len() <= limits::MAX_SAFETENSORS_DIMS {
            match seq.next_element::<Atom>()? {
                Some(a) => items.push(a),
                None => return Ok(Loose::Seq(items, false)),
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {
            more = true;
        }
        Ok(Loose::Seq(items, more))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Map)
    }
}

impl<'de> de::Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Loose, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

struct AtomVisitor;

impl<'de> Visitor<'de> for AtomVisitor {
    type Value = Atom;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    scalar_visits!(Atom, Atom::UInt, Atom::Other("a negative number"), Atom::Other("a fractional number"), Atom::Other);
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Atom, E> {
        Ok(Atom::Other("a string"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Atom, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Atom::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Atom, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Atom::Other("an object"))
    }
}

impl<'de> de::Deserialize<'de> for Atom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Atom, D::Error> {
        d.deserialize_any(AtomVisitor)
    }
}

/// One top-level tensor entry.
#[derive(Debug, Default)]
struct TensorValue {
    not_object: Option<&'static str>,
    dtype: Option<Loose>,
    shape: Option<Loose>,
    offsets: Option<Loose>,
    duplicate_fields: Vec<String>,
}

impl TensorValue {
    fn into_raw(self, name: String) -> RawTensor {
        let mut t = RawTensor { name, ..Default::default() };
        if let Some(kind) = self.not_object {
            t.problem = Some(format!("the entry is {kind}, not an object"));
            return t;
        }
        let mut problems = Vec::new();
        match self.dtype {
            Some(Loose::Str(s)) => t.dtype = s,
            Some(other) => problems.push(format!("`dtype` is {}", other.kind())),
            None => problems.push("no `dtype`".to_string()),
        }
        match self.shape.as_ref().map(|s| s.uint_list(limits::MAX_SAFETENSORS_DIMS)) {
            Some(Ok(s)) => t.shape = s,
            Some(Err(e)) => problems.push(format!("`shape`: {e}")),
            None => problems.push("no `shape`".to_string()),
        }
        match self.offsets.as_ref().map(|s| s.uint_list(2)) {
            Some(Ok(o)) if o.len() == 2 => t.offsets = [o[0], o[1]],
            Some(Ok(o)) => problems.push(format!("`data_offsets` has {} elements, not 2", o.len())),
            Some(Err(e)) => problems.push(format!("`data_offsets`: {e}")),
            None => problems.push("no `data_offsets`".to_string()),
        }
        if !problems.is_empty() {
            t.problem = Some(problems.join("; "));
        }
        t
    }
}

struct TensorVisitor;

impl<'de> Visitor<'de> for TensorVisitor {
    type Value = TensorValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor entry")
    }
    scalar_visits!(
        TensorValue,
        |_| TensorValue { not_object: Some("a number"), ..Default::default() },
        TensorValue { not_object: Some("a number"), ..Default::default() },
        TensorValue { not_object: Some("a number"), ..Default::default() },
        |k| TensorValue { not_object: Some(k), ..Default::default() }
    );
    fn visit_str<E: de::Error>(self, _: &str) -> Result<TensorValue, E> {
        Ok(TensorValue { not_object: Some("a string"), ..Default::default() })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TensorValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TensorValue { not_object: Some("an array"), ..Default::default() })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TensorValue, A::Error> {
        let mut v = TensorValue::default();
        let mut seen: Vec<String> = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            let slot = match k.as_str() {
                "dtype" => &mut v.dtype,
                "shape" => &mut v.shape,
                "data_offsets" => &mut v.offsets,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Loose>()?);
            if seen.contains(&k) {
                v.duplicate_fields.push(k);
            } else {
                seen.push(k);
            }
        }
        Ok(v)
    }
}

impl<'de> de::Deserialize<'de> for TensorValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TensorValue, D::Error> {
        d.deserialize_any(TensorVisitor)
    }
}

/// `__metadata__`: null, or a map of strings to strings.
#[derive(Debug, Default)]
struct MetaValue {
    entries: usize,
    problems: Vec<MetadataProblem>,
}

struct MetaVisitor;

impl<'de> Visitor<'de> for MetaVisitor {
    type Value = MetaValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of strings")
    }
    scalar_visits!(
        MetaValue,
        |_| MetaValue { entries: 0, problems: vec![MetadataProblem::NotAnObject("a number")] },
        MetaValue { entries: 0, problems: vec![MetadataProblem::NotAnObject("a number")] },
        MetaValue { entries: 0, problems: vec![MetadataProblem::NotAnObject("a number")] },
        |k| if k == "null" {
            MetaValue::default()
        } else {
            MetaValue { entries: 0, problems: vec![MetadataProblem::NotAnObject(k)] }
        }
    );
    fn visit_str<E: de::Error>(self, _: &str) -> Result<MetaValue, E> {
        Ok(MetaValue { entries: 0, problems: vec![MetadataProblem::NotAnObject("a string")] })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MetaValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(MetaValue { entries: 0, problems: vec![MetadataProblem::NotAnObject("an array")] })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetaValue, A::Error> {
        let mut m = MetaValue::default();
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            let v: Atomish = map.next_value()?;
            m.entries += 1;
            if let Atomish::Other(kind) = v {
                if m.problems.len() < limits::MAX_FINDINGS_PER_CODE {
                    m.problems.push(MetadataProblem::NonString { key: k.clone(), kind });
                }
            }
            if !seen.insert(k.clone()) && m.problems.len() < limits::MAX_FINDINGS_PER_CODE {
                m.problems.push(MetadataProblem::DuplicateKey(k));
            }
        }
        Ok(m)
    }
}

impl<'de> de::Deserialize<'de> for MetaValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MetaValue, D::Error> {
        d.deserialize_any(MetaVisitor)
    }
}

/// A metadata value: a string (not kept), or something else.
enum Atomish {
    Str,
    Other(&'static str),
}

struct AtomishVisitor;

impl<'de> Visitor<'de> for AtomishVisitor {
    type Value = Atomish;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    scalar_visits!(Atomish, |_| Atomish::Other("a number"), Atomish::Other("a number"), Atomish::Other("a number"), Atomish::Other);
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Atomish, E> {
        Ok(Atomish::Str)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Atomish, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Atomish::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Atomish, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Atomish::Other("an object"))
    }
}

impl<'de> de::Deserialize<'de> for Atomish {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Atomish, D::Error> {
        d.deserialize_any(AtomishVisitor)
    }
}
