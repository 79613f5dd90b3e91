//! Trains a freshly initialised model for a few steps and saves it as a Hugging Face folder.
//!
//! train_save CONFIG_FOLDER OUT_FOLDER: prints the logits of a fixed prompt (JSON) so that
//! bench/engine/check_saved.py can compare them with transformers loading OUT_FOLDER.

use needle_engine::candle_core::Device;
use needle_engine::model::{Capture, TokenBatch};
use needle_engine::train::{TrainBatch, TrainParams, Trainer};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (src, out) = match args.as_slice() {
        [_, s, o] => (Path::new(s), Path::new(o)),
        _ => return Err("usage: train_save CONFIG_FOLDER OUT_FOLDER".into()),
    };
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json"))?)?;
    let mut t = Trainer::new_random(&cfg, 0, TrainParams { learning_rate: 3e-3, ..TrainParams::default() }, &Device::Cpu)?;
    let examples: Vec<(Vec<u32>, Vec<u32>)> = (0..4u32).map(|i| (vec![5 + i, 17, 40 + i], vec![100 + i, 2])).collect();
    let batch = TrainBatch::from_examples(&examples, 0, true)?;
    for step in 0..5 {
        let s = t.step(&batch)?;
        eprintln!("step {step}: loss {:.4} grad-norm {:.4}", s.loss, s.grad_norm);
    }
    t.save(out, Some(src))?;
    let ids = vec![5u32, 17, 40, 100, 2, 9, 33];
    let logits = t.model.forward(&TokenBatch::left_padded(&[&ids], 0)?, None, &Capture::logits())?.logits;
    let rows = logits.squeeze(0)?.to_vec2::<f32>()?;
    println!("{}", serde_json::json!({"input_ids": ids, "logits": rows}));
    Ok(())
}
