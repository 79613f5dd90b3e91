"""Loads a folder written by Trainer::save with transformers and compares its logits with the
engine's (JSON from examples/train_save on stdin). Exit 0 when they agree within 1e-4."""
import json, sys

import torch
import transformers

folder = sys.argv[1]
ref = json.load(sys.stdin)
model = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
tok = transformers.AutoTokenizer.from_pretrained(folder)
with torch.no_grad():
    got = model(torch.tensor([ref["input_ids"]])).logits[0]
diff = (got - torch.tensor(ref["logits"])).abs().max().item()
print(json.dumps({"folder": folder, "class": type(model).__name__, "tokenizer": type(tok).__name__, "max_abs_diff": diff}))
sys.exit(0 if diff < 1e-4 else 1)
