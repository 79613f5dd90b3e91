//! CycloneDX 1.6 ML-BOM for a model folder, adapter or single file.
//!
//! The model is a `machine-learning-model` component (hashes, architecture, parameter count,
//! dtypes, quantization, base model, datasets and license from the model card, chat-template
//! digests, and the OMS signature's digest and signer when `model.sig` is present); every file is
//! a `file` component with SHA-256 and BLAKE3 hashes; the tokenizer and an adapter's base model
//! are components linked through `dependencies`. Facts come from `needle_artifact`'s inspection
//! (headers only: nothing is loaded or executed). Output is deterministic (no timestamp; the
//! serial number is derived from the content).

use crate::bundle::{Bundle, Material};
use crate::manifest::{self, HashAlg, ManifestOptions, Method, Serialization, DEFAULT_IGNORES};
use crate::x509::Cert;
use crate::SignError;
use needle_artifact::inventory::Inventory;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// Largest model card or config read.
const MAX_TEXT: u64 = 4 << 20;
/// Most entries taken from one YAML list.
const MAX_LIST: usize = 256;

/// What the model card's YAML header says.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ModelCard {
    pub license: Option<String>,
    pub base_model: Vec<String>,
    pub datasets: Vec<String>,
    pub pipeline_tag: Option<String>,
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(s);
    let s = s.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')).unwrap_or(s);
    s.trim().to_string()
}

/// Parses the YAML front matter of a Hugging Face model card (`---` ... `---`): top-level
/// scalars and lists (block `- x` or flow `[a, b]`) of the keys needle uses. Not a general YAML
/// parser: anything else is skipped.
pub fn parse_model_card(text: &str) -> ModelCard {
    let mut card = ModelCard::default();
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some("---") {
        return card;
    }
    let mut current: Option<String> = None;
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in lines.take(10_000) {
        if line.trim_end() == "---" {
            break;
        }
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if let (true, Some(item)) = (indented || line.starts_with('-'), line.trim_start().strip_prefix("- ")) {
            if let Some(k) = &current {
                let v = values.entry(k.clone()).or_default();
                if v.len() < MAX_LIST {
                    v.push(unquote(item));
                }
            }
            continue;
        }
        if indented {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let key = k.trim().to_string();
            let v = v.trim();
            current = Some(key.clone());
            if v.is_empty() {
                continue;
            }
            let entry = values.entry(key).or_default();
            if let Some(inner) = v.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
                entry.extend(inner.split(',').map(unquote).filter(|s| !s.is_empty()).take(MAX_LIST));
            } else {
                entry.push(unquote(v));
            }
        }
    }
    let first = |k: &str| values.get(k).and_then(|v| v.first().cloned()).filter(|s| !s.is_empty());
    card.license = first("license");
    if card.license.as_deref() == Some("other") {
        card.license = first("license_name").or(card.license);
    }
    card.base_model = values.get("base_model").cloned().unwrap_or_default();
    card.datasets = values.get("datasets").cloned().unwrap_or_default();
    card.pipeline_tag = first("pipeline_tag");
    card
}

fn read_small(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    if !m.is_file() || m.len() > MAX_TEXT {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// SPDX license ids from the committed SPDX schema, for mapping a card's `license` to an id.
fn spdx_id(license: &str) -> Option<String> {
    static SCHEMA: &str = include_str!("../data/cyclonedx/spdx.SNAPSHOT.schema.json");
    let v: Value = serde_json::from_str(SCHEMA).ok()?;
    v.get("enum")?.as_array()?.iter().filter_map(Value::as_str).find(|id| id.eq_ignore_ascii_case(license)).map(str::to_string)
}

fn license_json(l: &str) -> Value {
    match spdx_id(l) {
        Some(id) => json!({"license": {"id": id}}),
        None => json!({"license": {"name": l}}),
    }
}

fn prop(name: &str, value: impl Into<String>) -> Value {
    json!({"name": format!("needle:{name}"), "value": value.into()})
}

/// A content-derived UUID (RFC 4122 layout, version 5 bits) for `serialNumber`.
fn uuid_from(bytes: &[u8]) -> String {
    let mut h: [u8; 32] = Sha256::digest(bytes).into();
    h[6] = (h[6] & 0x0f) | 0x50;
    h[8] = (h[8] & 0x3f) | 0x80;
    let x = hex::encode(&h[..16]);
    format!("{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// Who signed a bundle, as far as the bundle itself says (not verified here).
fn describe_signer(bundle: &Bundle) -> String {
    match &bundle.material {
        Material::PublicKey { hint: Some(h), .. } => format!("key sha256:{h}"),
        Material::PublicKey { .. } => "public key (legacy format)".into(),
        Material::Chain(c) => c
            .first()
            .and_then(|d| Cert::from_der(d).ok())
            .map(|c| format!("certificate {}", c.subject()))
            .unwrap_or_else(|| "certificate".into()),
        Material::Certificate(d) => Cert::from_der(d)
            .ok()
            .map(|c| {
                let ids = c.san_identities().join(", ");
                match crate::sigstore::oidc_issuer(&c) {
                    Some(i) => format!("sigstore {ids} (issuer {i})"),
                    None => format!("sigstore {ids}"),
                }
            })
            .unwrap_or_else(|| "sigstore certificate".into()),
    }
}

/// Builds the BOM. `inventory` comes from `needle_artifact::inspect`.
pub fn build(path: &Path, inventory: &Inventory) -> Result<Value, SignError> {
    let is_dir = std::fs::metadata(path).map_err(|e| SignError::io(path, e))?.is_dir();
    let mut ignore: Vec<String> = DEFAULT_IGNORES.iter().map(|s| s.to_string()).collect();
    ignore.push("model.sig".into());
    let files_opts = |hash| ManifestOptions {
        serialization: Serialization { method: Method::Files, hash, allow_symlinks: true, ignore_paths: ignore.clone() },
        ignore_abs: vec![],
        only_files: None,
    };
    let sha = manifest::compute(path, &files_opts(HashAlg::Sha256))?;
    let b3 = manifest::compute(path, &files_opts(HashAlg::Blake3))?;
    let b3: BTreeMap<&str, &[u8]> = b3.items.iter().map(|i| (i.name.as_str(), i.digest.as_slice())).collect();
    let name = manifest::model_name(path);
    let display = |n: &str| if n == "." { name.clone() } else { n.to_string() };

    let mut components = Vec::new();
    let mut file_refs = Vec::new();
    for it in &sha.items {
        let fname = display(&it.name);
        let r = format!("file:{fname}");
        let mut hashes = vec![json!({"alg": "SHA-256", "content": hex::encode(&it.digest)})];
        if let Some(d) = b3.get(it.name.as_str()) {
            hashes.push(json!({"alg": "BLAKE3", "content": hex::encode(d)}));
        }
        components.push(json!({"type": "file", "bom-ref": r, "name": fname, "hashes": hashes}));
        file_refs.push(r);
    }

    // Model card, config, adapter: base model, datasets, license.
    let card = if is_dir { read_small(&path.join("README.md")).map(|t| parse_model_card(&t)).unwrap_or_default() } else { ModelCard::default() };
    let config_base = if is_dir {
        read_small(&path.join("config.json"))
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("_name_or_path").and_then(Value::as_str).map(str::to_string))
            .filter(|s| !s.is_empty() && !s.starts_with('/') && !s.starts_with('.'))
    } else {
        None
    };
    let base_models: Vec<String> = inventory
        .adapter
        .as_ref()
        .and_then(|a| a.base_model.clone())
        .map(|b| vec![b])
        .filter(|v| !v.is_empty())
        .or_else(|| (!card.base_model.is_empty()).then(|| card.base_model.clone()))
        .or_else(|| config_base.map(|b| vec![b]))
        .unwrap_or_default();

    let model_ref = "model".to_string();
    let mut props = Vec::new();
    if let Some(m) = &inventory.model {
        if !m.architectures.is_empty() {
            props.push(prop("architecture", m.architectures.join(", ")));
        }
        if let Some(t) = &m.model_type {
            props.push(prop("model_type", t.clone()));
        }
        if let Some(d) = &m.torch_dtype {
            props.push(prop("torch_dtype", d.clone()));
        }
        if let Some(q) = &m.quantization {
            props.push(prop("quantization", q.clone()));
        }
        for (k, v) in [("hidden_size", m.hidden_size), ("num_layers", m.num_layers), ("vocab_size", m.vocab_size)] {
            if let Some(v) = v {
                props.push(prop(k, v.to_string()));
            }
        }
    }
    props.push(prop("parameters", inventory.tensors.parameters.to_string()));
    props.push(prop("tensors", inventory.tensors.count.to_string()));
    for (dtype, n) in &inventory.tensors.dtypes {
        props.push(prop(&format!("dtype:{dtype}"), n.to_string()));
    }
    for t in &inventory.chat_templates {
        props.push(prop(&format!("chat_template:{}:{}:sha256", t.file, t.key), t.sha256.clone()));
    }
    if let Some(a) = &inventory.adapter {
        if let Some(p) = &a.peft_type {
            props.push(prop("adapter:peft_type", p.clone()));
        }
        if let Some(r) = a.rank {
            props.push(prop("adapter:rank", r.to_string()));
        }
        if !a.target_modules.is_empty() {
            props.push(prop("adapter:target_modules", a.target_modules.join(", ")));
        }
    }
    props.push(prop("manifest:sha256", hex::encode(sha.root_digest())));
    let sig_path = if is_dir { path.join("model.sig") } else { path.with_file_name("model.sig") };
    if sig_path.is_file() {
        let bytes = std::fs::read(&sig_path).map_err(|e| SignError::io(&sig_path, e))?;
        props.push(prop("signature:file", "model.sig"));
        props.push(prop("signature:sha256", hex::encode(Sha256::digest(&bytes))));
        match Bundle::parse(&bytes) {
            Ok(b) => props.push(prop("signature:signer", describe_signer(&b))),
            Err(e) => props.push(prop("signature:error", e.to_string())),
        }
        props.push(prop("signature:verified", "false (run `needle verify` to check it)"));
    }

    let mut model_parameters = serde_json::Map::new();
    if let Some(t) = &card.pipeline_tag {
        model_parameters.insert("task".into(), json!(t));
    }
    if let Some(m) = &inventory.model {
        if let Some(t) = &m.model_type {
            model_parameters.insert("architectureFamily".into(), json!(t));
        }
        if let Some(a) = m.architectures.first() {
            model_parameters.insert("modelArchitecture".into(), json!(a));
        }
    }
    if !card.datasets.is_empty() {
        model_parameters.insert(
            "datasets".into(),
            Value::Array(card.datasets.iter().map(|d| json!({"type": "dataset", "name": d})).collect()),
        );
    }
    let mut model = json!({
        "type": "machine-learning-model",
        "bom-ref": model_ref,
        "name": name,
        "hashes": [{"alg": "SHA-256", "content": hex::encode(sha.root_digest())}],
        "modelCard": {"modelParameters": Value::Object(model_parameters)},
        "properties": props,
    });
    if let Some(l) = &card.license {
        model["licenses"] = json!([license_json(l)]);
    }
    if let Some(obj) = model.as_object_mut() {
        obj.insert("description".into(), json!(format!("{} ({} files)", if inventory.adapter.is_some() { "adapter" } else { "model" }, sha.items.len())));
    }

    let mut model_deps: Vec<String> = file_refs.clone();
    if let Some(t) = &inventory.tokenizer {
        let r = "tokenizer".to_string();
        let mut c = json!({"type": "data", "bom-ref": r, "name": t.file, "description": "tokenizer"});
        if let Some(h) = sha.items.iter().find(|i| i.name == t.file) {
            c["hashes"] = json!([{"alg": "SHA-256", "content": hex::encode(&h.digest)}]);
        }
        let mut p = Vec::new();
        if let Some(m) = &t.model {
            p.push(prop("tokenizer:model", m.clone()));
        }
        if let Some(v) = t.vocab_size {
            p.push(prop("tokenizer:vocab_size", v.to_string()));
        }
        p.push(prop("tokenizer:added_tokens", t.added_tokens.to_string()));
        c["properties"] = Value::Array(p);
        components.push(c);
        model_deps.push(r);
    }
    let mut dependencies = Vec::new();
    for (i, b) in base_models.iter().enumerate() {
        let r = format!("base-model-{i}");
        components.push(json!({
            "type": "machine-learning-model",
            "bom-ref": r,
            "name": b,
            "description": "base model (declared, not verified)",
        }));
        model_deps.push(r.clone());
        dependencies.push(json!({"ref": r, "dependsOn": []}));
    }
    for f in &file_refs {
        dependencies.push(json!({"ref": f, "dependsOn": []}));
    }
    if inventory.tokenizer.is_some() {
        dependencies.push(json!({"ref": "tokenizer", "dependsOn": []}));
    }
    dependencies.insert(0, json!({"ref": model_ref, "dependsOn": model_deps}));
    if !base_models.is_empty() {
        model["pedigree"] = json!({"ancestors": base_models.iter().map(|b| json!({"type": "machine-learning-model", "name": b})).collect::<Vec<_>>()});
    }

    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_from(&sha.root_digest())),
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "needle", "version": env!("CARGO_PKG_VERSION")}]},
            "component": model,
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_card_header() {
        let c = parse_model_card("---\nlicense: apache-2.0\nbase_model: meta/llama\ndatasets:\n  - a/b\n  - \"c\"\ntags: [x, y]\n---\n# Title\nlicense: no\n");
        assert_eq!(c.license.as_deref(), Some("apache-2.0"));
        assert_eq!(c.base_model, ["meta/llama"]);
        assert_eq!(c.datasets, ["a/b", "c"]);
        assert_eq!(parse_model_card("# no header\n"), ModelCard::default());
        let flow = parse_model_card("---\ndatasets: [d1, 'd2']\nlicense: other\nlicense_name: my-license\n---\n");
        assert_eq!(flow.datasets, ["d1", "d2"]);
        assert_eq!(flow.license.as_deref(), Some("my-license"));
    }

    #[test]
    fn spdx_mapping() {
        assert_eq!(license_json("apache-2.0"), json!({"license": {"id": "Apache-2.0"}}));
        assert_eq!(license_json("llama3"), json!({"license": {"name": "llama3"}}));
    }

    #[test]
    fn serial_is_a_uuid() {
        let u = uuid_from(b"x");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "5");
    }
}
