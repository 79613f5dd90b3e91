//! Prefill and batched-decode throughput of the engine, and peak RSS.
//!
//! engine_bench (--model DIR | --random-qwen05b) [--batch B] [--prompt-len T] [--new-tokens N]
//! Prints one JSON object. Used by bench/engine/run.sh.

use needle_engine::candle_core::Device;
use needle_engine::model::{Capture, KvCache, Model, TokenBatch};
use needle_engine::train::{TrainParams, Trainer};
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    let batch: usize = get("--batch").map_or(Ok(4), |s| s.parse())?;
    let prompt_len: usize = get("--prompt-len").map_or(Ok(32), |s| s.parse())?;
    let new_tokens: usize = get("--new-tokens").map_or(Ok(16), |s| s.parse())?;
    needle_engine::init_threads();
    let dev = Device::Cpu;
    let t0 = Instant::now();
    let (model, label) = if args.iter().any(|a| a == "--random-qwen05b") {
        let cfg = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"], "hidden_size": 896, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
            "vocab_size": 151936, "tie_word_embeddings": true, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "max_position_embeddings": 32768, "hidden_act": "silu"
        });
        let mut t = Trainer::new_random(&cfg, 0, TrainParams::default(), &dev)?;
        t.model.set_fast_kernels(true);
        (t.model, "random Qwen2.5-0.5B shapes".to_string())
    } else {
        let dir = get("--model").ok_or("--model DIR or --random-qwen05b")?;
        (Model::load(std::path::Path::new(&dir), &dev)?, dir)
    };
    let load_s = t0.elapsed().as_secs_f64();
    let vocab = model.config.vocab_size as u32;
    let prompts: Vec<Vec<u32>> =
        (0..batch).map(|b| (0..prompt_len).map(|i| ((i * 7919 + b * 104_729 + 13) as u32) % vocab).collect()).collect();
    let cap = Capture { last_logits_only: true, ..Capture::default() };
    // Warm-up.
    let _ = model.forward(&TokenBatch::left_padded(&prompts[..1], 0)?, None, &cap)?;
    let mut cache = KvCache::new(&model);
    let t1 = Instant::now();
    let out = model.forward(&TokenBatch::left_padded(&prompts, 0)?, Some(&mut cache), &cap)?;
    let prefill_s = t1.elapsed().as_secs_f64();
    let mut next: Vec<u32> = out.logits.squeeze(1)?.argmax(1)?.to_vec1::<u32>()?;
    let t2 = Instant::now();
    for _ in 0..new_tokens {
        let step = TokenBatch::new(next.clone(), vec![1; batch], batch, 1)?;
        let o = model.forward(&step, Some(&mut cache), &cap)?;
        next = o.logits.squeeze(1)?.argmax(1)?.to_vec1::<u32>()?;
    }
    let decode_s = t2.elapsed().as_secs_f64();
    let threads = std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "default".into());
    println!(
        "{}",
        serde_json::json!({
            "engine": "needle", "model": label, "threads": threads, "batch": batch,
            "prompt_len": prompt_len, "new_tokens": new_tokens, "load_s": load_s,
            "prefill_tok_s": (batch * prompt_len) as f64 / prefill_s,
            "decode_tok_s": (batch * new_tokens) as f64 / decode_s,
            "peak_rss_mb": peak_rss_mb(),
        })
    );
    Ok(())
}
