//! GGUF round trips: reference folders exported (F32, Q8_0, Q4_K) and loaded back give the same
//! tensors (exactly, or within the quantization's error), config, tokenizer and chat template;
//! damaged files are errors, never panics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use needle_engine::chat::{ChatTemplate, Message, RenderOptions};
use needle_engine::gguf::{load_gguf, write_gguf, GgmlDType, GgufFile};
use needle_engine::tokenizer::Tokenizer;
use serde_json::Value as Json;

fn reference() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference")
}

fn hf_tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn config(dir: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Largest absolute difference relative to the tensor's largest magnitude.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = max_abs(&(a - b).unwrap());
    d / max_abs(a).max(1e-12)
}

fn expected_tensor_names(dir: &Path) -> Vec<String> {
    let cfg = config(dir);
    let tied = cfg["tie_word_embeddings"].as_bool().unwrap_or(false);
    let mut names: Vec<String> = hf_tensors(dir)
        .into_keys()
        .filter(|n| !(tied && n == "lm_head.weight"))
        .collect();
    names.sort();
    names
}

fn round_trip(name: &str, dtype: GgmlDType, tol: f32) -> (PathBuf, tempfile::TempDir) {
    let dir = reference().join(name);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join(format!("{name}.gguf"));
    let summary = write_gguf(&dir, &out, dtype).unwrap();
    assert!(summary.bytes > 0);
    let model = load_gguf(&out).unwrap();
    let orig = hf_tensors(&dir);
    let mut got: Vec<String> = model.tensors.keys().cloned().collect();
    got.sort();
    assert_eq!(got, expected_tensor_names(&dir), "{name} {dtype:?}");
    for (k, t) in &model.tensors {
        let o = orig[k].to_dtype(DType::F32).unwrap();
        let e = rel_err(&o, t);
        assert!(
            e <= tol.max(1e-6),
            "{name} {dtype:?} {k}: relative error {e} > {tol}"
        );
        // Gemma's norm weights go through `w + 1 - 1`, exact only to f32 rounding.
        if tol == 0.0 && !name.starts_with("gemma") {
            assert_eq!(
                o.to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{name} {k}"
            );
        }
    }
    (out, tmp)
}

fn assert_config_matches(name: &str, gguf_cfg: &Json) {
    let cfg = config(&reference().join(name));
    for key in [
        "architectures",
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "rms_norm_eps",
        "vocab_size",
        "tie_word_embeddings",
        "max_position_embeddings",
        "bos_token_id",
        "eos_token_id",
        "n_embd",
        "n_layer",
        "n_head",
        "n_positions",
        "layer_norm_epsilon",
        "sliding_window",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "query_pre_attn_scalar",
        "layer_types",
    ] {
        if let Some(v) = cfg.get(key) {
            assert_eq!(
                gguf_cfg.get(key).unwrap_or(&Json::Null),
                v,
                "{name}: config `{key}`"
            );
        }
    }
    if cfg.get("head_dim").is_some() {
        assert_eq!(gguf_cfg["head_dim"], cfg["head_dim"], "{name}: head_dim");
    }
    assert_eq!(
        gguf_cfg["rope_parameters"]
            .get("rope_theta")
            .or_else(|| gguf_cfg["rope_parameters"]["full_attention"].get("rope_theta")),
        cfg["rope_parameters"]
            .get("rope_theta")
            .or_else(|| cfg["rope_parameters"]["full_attention"].get("rope_theta")),
        "{name}: rope_theta"
    );
}

fn assert_text_side_matches(name: &str, gguf: &Path) {
    let dir = reference().join(name);
    let f = GgufFile::open(gguf).unwrap();
    let tok = f.tokenizer().unwrap();
    let orig = Tokenizer::from_folder(&dir).unwrap();
    let expected: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    for p in expected["prompts"].as_array().unwrap() {
        let p = p.as_str().unwrap();
        assert_eq!(
            tok.encode(p, false).unwrap(),
            orig.encode(p, false).unwrap(),
            "{name}: {p:?}"
        );
    }
    let t = f.chat_template().unwrap();
    let orig_t = ChatTemplate::from_folder(&dir, None).unwrap();
    assert_eq!(t.source(), orig_t.source());
    let msgs = [
        Message::system("You are helpful."),
        Message::user("Spell cat backwards."),
    ];
    let opts = RenderOptions {
        add_generation_prompt: true,
        ..RenderOptions::default()
    };
    assert_eq!(
        t.render(&msgs, &opts).unwrap(),
        expected["prompts"][2].as_str().unwrap()
    );
}

#[test]
fn f32_round_trip_is_exact_for_every_supported_architecture() {
    // Exact equality checks the inverse Q/K permutation, Gemma's norm shift and GPT-2's
    // transposes, and every name mapping.
    for name in [
        "llama",
        "llama-tied",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma2",
        "gemma3",
        "phi3",
        "gpt2",
    ] {
        let (out, _tmp) = round_trip(name, GgmlDType::F32, 0.0);
        let model = load_gguf(&out).unwrap();
        let mut cfg = model.config.clone();
        if name == "mistral" {
            // llama.cpp stores Mistral as the llama architecture.
            assert_eq!(cfg["model_type"], "llama");
            cfg["model_type"] = "mistral".into();
            cfg["architectures"] = serde_json::json!(["MistralForCausalLM"]);
        }
        assert_config_matches(name, &cfg);
    }
}

#[test]
fn q8_0_round_trip_llama_and_qwen2() {
    for name in ["llama", "qwen2"] {
        let (out, _tmp) = round_trip(name, GgmlDType::Q8_0, 0.01);
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.tensor_dtype("blk.0.attn_q.weight"), Some(GgmlDType::Q8_0));
        assert_eq!(
            f.tensor_dtype("blk.0.attn_norm.weight"),
            Some(GgmlDType::F32)
        );
        assert_config_matches(name, &f.config().unwrap());
        assert_text_side_matches(name, &out);
    }
}

#[test]
fn q4_k_round_trip_llama_and_qwen2() {
    // The fixtures' rows (64, 160) do not fill 256-element K blocks: those tensors fall back to
    // Q8_0 as llama.cpp falls back for incompatible shapes.
    for name in ["llama", "qwen2"] {
        let (out, _tmp) = round_trip(name, GgmlDType::Q4K, 0.01);
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(
            f.tensor_dtype("blk.0.ffn_down.weight"),
            Some(GgmlDType::Q8_0)
        );
        assert_config_matches(name, &f.config().unwrap());
        assert_text_side_matches(name, &out);
    }
}

/// A llama-shaped folder whose rows are multiples of 256, so Q4_K really is used.
#[test]
fn q4_k_quantization_of_a_wide_llama() {
    let src = reference().join("llama");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wide");
    std::fs::create_dir(&dir).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut cfg = config(&src);
    cfg["hidden_size"] = 256.into();
    cfg["intermediate_size"] = 512.into();
    cfg["num_hidden_layers"] = 1.into();
    cfg["head_dim"] = 64.into();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    let dev = Device::Cpu;
    let mut ts: HashMap<String, Tensor> = HashMap::new();
    let mut add = |n: &str, shape: &[usize]| {
        ts.insert(n.to_owned(), Tensor::randn(0f32, 0.5, shape, &dev).unwrap());
    };
    add("model.embed_tokens.weight", &[2048, 256]);
    add("lm_head.weight", &[2048, 256]);
    add("model.norm.weight", &[256]);
    add("model.layers.0.input_layernorm.weight", &[256]);
    add("model.layers.0.post_attention_layernorm.weight", &[256]);
    add("model.layers.0.self_attn.q_proj.weight", &[256, 256]);
    add("model.layers.0.self_attn.k_proj.weight", &[128, 256]);
    add("model.layers.0.self_attn.v_proj.weight", &[128, 256]);
    add("model.layers.0.self_attn.o_proj.weight", &[256, 256]);
    add("model.layers.0.mlp.gate_proj.weight", &[512, 256]);
    add("model.layers.0.mlp.up_proj.weight", &[512, 256]);
    add("model.layers.0.mlp.down_proj.weight", &[256, 512]);
    candle_core::safetensors::save(&ts, dir.join("model.safetensors")).unwrap();

    let out = tmp.path().join("wide.gguf");
    let summary = write_gguf(&dir, &out, GgmlDType::Q4K).unwrap();
    assert!(
        summary.dtypes.iter().any(|(n, c)| n == "Q4K" && *c == 9),
        "{summary:?}"
    );
    let model = load_gguf(&out).unwrap();
    for (k, t) in &model.tensors {
        let o = &ts[k];
        let e = rel_err(o, t);
        let tol = if t.rank() == 1 { 0.0 } else { 0.15 };
        assert!(e <= tol, "{k}: relative error {e}");
        if t.rank() == 2 {
            // Q4_K's root-mean-square error on Gaussian weights is a few percent of their scale.
            let rms = ((o - t)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap())
            .sqrt();
            assert!(rms < 0.05, "{k}: rms error {rms}");
            // ... and Q4_K is not lossless: the file really is quantized.
            assert!(rms > 1e-4, "{k}: rms error {rms}");
        }
    }
    assert_eq!(model.config["hidden_size"], 256);
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let (out, tmp) = round_trip("qwen2", GgmlDType::Q8_0, 0.01);
    let bytes = std::fs::read(&out).unwrap();
    // Truncations everywhere in the header and inside the data.
    let bad = tmp.path().join("bad.gguf");
    for cut in [
        0,
        3,
        8,
        20,
        100,
        1000,
        50_000,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        assert!(load_gguf(&bad).is_err(), "truncated at {cut}");
    }
    // Corrupted bytes in the header: any result but a panic; lengths blown up to huge values
    // must be refused before allocation.
    for pos in (8..4096).step_by(37) {
        let mut b = bytes.clone();
        b[pos] ^= 0xff;
        if pos + 7 < b.len() {
            b[pos + 7] ^= 0x7f;
        }
        std::fs::write(&bad, &b).unwrap();
        let _ = load_gguf(&bad);
    }
    // Not a GGUF at all.
    std::fs::write(&bad, b"definitely not gguf").unwrap();
    assert!(GgufFile::open(&bad).is_err());
    // An unsupported architecture is a clear error.
    assert!(write_gguf(&reference().join("gpt_neox"), &bad, GgmlDType::F32).is_err());
}
