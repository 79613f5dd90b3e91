"""PyTorch eager counterpart of engine_bench: same shapes, same token ids, same timing points.

python torch_bench.py (--model DIR | --random-qwen05b) --batch B --prompt-len T --new-tokens N --threads K
"""
import argparse, json, resource, time

import torch
import transformers

p = argparse.ArgumentParser()
p.add_argument("--model")
p.add_argument("--random-qwen05b", action="store_true")
p.add_argument("--batch", type=int, default=4)
p.add_argument("--prompt-len", type=int, default=32)
p.add_argument("--new-tokens", type=int, default=16)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
t0 = time.perf_counter()
if a.random_qwen05b:
    cfg = transformers.Qwen2Config(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                                   num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                                   tie_word_embeddings=True, rms_norm_eps=1e-6, rope_theta=1e6,
                                   max_position_embeddings=32768)
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
    label = "random Qwen2.5-0.5B shapes"
else:
    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32, attn_implementation="eager")
    label = a.model
model.eval()
load_s = time.perf_counter() - t0
V = model.config.vocab_size
ids = torch.tensor([[((i * 7919 + b * 104729 + 13) % V) for i in range(a.prompt_len)] for b in range(a.batch)])
with torch.inference_mode():
    model(ids[:1], use_cache=True, logits_to_keep=1)
    t1 = time.perf_counter()
    out = model(ids, use_cache=True, logits_to_keep=1)
    prefill_s = time.perf_counter() - t1
    past = out.past_key_values
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    t2 = time.perf_counter()
    for _ in range(a.new_tokens):
        out = model(nxt, past_key_values=past, use_cache=True, logits_to_keep=1)
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    decode_s = time.perf_counter() - t2
print(json.dumps({
    "engine": "pytorch-eager", "torch": torch.__version__, "model": label, "threads": a.threads,
    "batch": a.batch, "prompt_len": a.prompt_len, "new_tokens": a.new_tokens, "load_s": load_s,
    "prefill_tok_s": a.batch * a.prompt_len / prefill_s, "decode_tok_s": a.batch * a.new_tokens / decode_s,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
