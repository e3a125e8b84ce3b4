"""Train chapter 3's one-layer attention model and save its weights here.

    python assets/attention-lm/make.py

Chapter 3 trains this model live, with these same settings; chapters 4 and 5 load
the result instead of training it again. The file holds the weights and, as JSON
in its metadata, the model's shape and the training settings.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from gptlib.attention import AttentionLM
from gptlib.data import load_dataset
from gptlib.train import TrainConfig, full_loss, train

SHAPE = dict(n_embd=32, n_head=4, block_size=32)
# Chapter 2's optimiser: AdamW with PyTorch's defaults, a constant learning rate, no clipping.
CONFIG = TrainConfig(batch_size=32, max_iters=1000, learning_rate=1e-2, min_lr=1e-2,
                     warmup_iters=0, weight_decay=0.01, beta2=0.999, grad_clip=0.0,
                     eval_interval=1000, eval_iters=10, seed=1)

if __name__ == "__main__":
    text, tokenizer, train_data, val_data = load_dataset()
    torch.manual_seed(0)
    model = AttentionLM(tokenizer.vocab_size, **SHAPE)
    train(model, train_data, val_data, CONFIG, progress=False)
    out = Path(__file__).with_name("model.safetensors")
    metadata = {"shape": json.dumps(SHAPE), "train_config": json.dumps(CONFIG.to_dict()),
                "vocab": json.dumps(tokenizer.vocab)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out, metadata=metadata)
    out.chmod(0o644)
    print(f"saved {out}; full validation loss {full_loss(model, val_data):.4f}")
