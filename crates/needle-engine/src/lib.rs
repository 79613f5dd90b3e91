//! The white-box LM engine. (stub: to be implemented)
//!
//! Model side (engineer "engine"): config, weights, model/, lora, kv, generate, train.
//! Text side (engineer "text"): tokenizer, chat, sampler, gguf.

pub mod chat;
pub mod config;
pub mod generate;
pub mod gguf;
pub mod lora;
pub mod model;
pub mod sampler;
pub mod tokenizer;
pub mod train;
pub mod weights;
