"""Chapter 12: GPT-2's weights, in the Hugging Face format, in and out of the course's GPT.

A GPT-2 checkpoint as ``transformers`` writes it is a folder with ``config.json`` (the
shape) and ``model.safetensors`` (the tensors, by name). Its names and layout differ from
the course's GPT in four ways, all undone here:

- the names (``transformer.h.3.attn.c_attn.weight`` is our ``blocks.3.attn.query/key/value``;
  the files released on the Hub drop the ``transformer.`` prefix, and both are read);
- GPT-2's linear layers are ``Conv1D`` modules, whose weight is stored (in, out): the
  transpose of ``nn.Linear``'s (out, in);
- the query, key and value projections are one fused matrix ``c_attn`` of 3 x n_embd
  outputs, split here in three;
- the output layer is the token embedding, tied, so it may not be in the file at all.

A file that does not fit is refused with one error that lists what is missing,
unexpected or mis-shaped: never a silent partial load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gptlib.data import write_atomically
from gptlib.model import GPT, GPTConfig

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
# The released models on the Hugging Face Hub.
HUB_NAMES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
             "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl"}
GELU_NAMES = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}


class PretrainedError(ValueError):
    """A pretrained checkpoint could not be found, read or fitted. The message says why."""


def config_from_hf(hf: dict, dropout: float = 0.0) -> GPTConfig:
    """Our GPTConfig for a ``transformers`` GPT2Config (as the dict in ``config.json``)."""
    if hf.get("model_type") != "gpt2":
        raise PretrainedError(f"not a GPT-2 checkpoint (model_type {hf.get('model_type')!r})")
    unsupported = [f"{key}={hf[key]!r}" for key, fine in (
        ("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
        ("scale_attn_weights", True)) if hf.get(key, fine) != fine]
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        unsupported.append(f"n_inner={hf['n_inner']}")
    if hf.get("activation_function", "gelu_new") not in GELU_NAMES:
        unsupported.append(f"activation_function={hf['activation_function']!r}")
    if unsupported:
        raise PretrainedError(f"this GPT-2 variant is not the course's GPT: {', '.join(unsupported)}")
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=dropout, qkv_bias=True,
                     tied_head=hf.get("tie_word_embeddings", True), head_bias=False,
                     gelu=GELU_NAMES[hf.get("activation_function", "gelu_new")],
                     layernorm_eps=hf.get("layer_norm_epsilon", 1e-5))


def hf_to_ours(tensors: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """GPT-2's tensors under our names and layouts. Unknown or missing names are left for
    :func:`check_fit` to report."""
    C = config.n_embd
    out = {}
    renames = {"transformer.wte.weight": "token_embedding.weight",
               "transformer.wpe.weight": "position_embedding.table.weight",
               "transformer.ln_f.weight": "ln_f.weight", "transformer.ln_f.bias": "ln_f.bias",
               "lm_head.weight": "lm_head.weight"}
    for name, tensor in tensors.items():
        # transformers' save_pretrained writes "transformer.h.0..."; the files released on the
        # Hub (written by the older GPT2Model) have no "transformer." prefix: "h.0...".
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name
        if name in renames:
            out[renames[name]] = tensor
            continue
        parts = name.split(".")
        if len(parts) < 5 or parts[:2] != ["transformer", "h"]:
            out[name] = tensor  # unexpected: reported by check_fit
            continue
        ours = f"blocks.{parts[2]}."
        rest = ".".join(parts[3:])
        if rest in ("attn.bias", "attn.masked_bias"):
            continue  # older files store the causal mask as a buffer: not a weight
        if rest == "attn.c_attn.weight":  # (C, 3C), Conv1D: columns are outputs
            for i, which in enumerate(("query", "key", "value")):
                out[f"{ours}attn.{which}.weight"] = tensor[:, i * C:(i + 1) * C].t()
        elif rest == "attn.c_attn.bias":
            for i, which in enumerate(("query", "key", "value")):
                out[f"{ours}attn.{which}.bias"] = tensor[i * C:(i + 1) * C]
        elif rest in BLOCK_NAMES:
            conv = tensor.dim() == 2  # Conv1D stores (in, out); nn.Linear (out, in)
            out[ours + BLOCK_NAMES[rest]] = tensor.t() if conv else tensor
        else:
            out[name] = tensor
    if config.tied_head:
        out.pop("lm_head.weight", None)  # the embedding itself (checked equal by check_fit)
    return out


BLOCK_NAMES = {  # GPT-2's names inside a block -> ours
    "ln_1.weight": "ln1.weight", "ln_1.bias": "ln1.bias", "ln_2.weight": "ln2.weight",
    "ln_2.bias": "ln2.bias", "attn.c_proj.weight": "attn.proj.weight",
    "attn.c_proj.bias": "attn.proj.bias", "mlp.c_fc.weight": "ffwd.fc.weight",
    "mlp.c_fc.bias": "ffwd.fc.bias", "mlp.c_proj.weight": "ffwd.proj.weight",
    "mlp.c_proj.bias": "ffwd.proj.bias",
}


def check_fit(model: GPT, weights: dict[str, torch.Tensor], source: str) -> None:
    """Raise one error naming every missing, unexpected and mis-shaped tensor."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if model.config.tied_head:
        expected.pop("lm_head.weight")
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = sorted(f"{k} {tuple(weights[k].shape)} (expected {expected[k]})"
                    for k in set(expected) & set(weights) if tuple(weights[k].shape) != expected[k])
    problems = [f"{label} ({len(items)}): {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
                for label, items in (("missing", missing), ("unexpected", unexpected),
                                     ("mis-shaped", shapes)) if items]
    if problems:
        raise PretrainedError(f"{source} does not fit a GPT of this shape; " + "; ".join(problems))


def load_hf_folder(folder, dropout: float = 0.0, device="cpu") -> GPT:
    """The course's GPT with the weights of a Hugging Face GPT-2 folder (``config.json`` and
    ``model.safetensors``, as ``save_pretrained`` writes them)."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise PretrainedError(f"no {path.name} in {folder}: a GPT-2 folder holds {CONFIG_FILE} "
                                  f"and {WEIGHTS_FILE}")
    try:
        hf = json.loads(config_path.read_text(encoding="utf-8"))
        tensors = load_file(weights_path)
    except (OSError, ValueError) as error:
        raise PretrainedError(f"{folder} is not a readable GPT-2 checkpoint ({error})") from None
    try:
        config = config_from_hf(hf, dropout)
    except (KeyError, TypeError) as error:
        raise PretrainedError(f"{config_path} is not a GPT-2 config (no {error})") from None
    model = GPT(config)
    weights = hf_to_ours(tensors, config)
    check_fit(model, weights, str(weights_path))
    if config.tied_head and "lm_head.weight" in tensors and not torch.equal(
            tensors["lm_head.weight"], tensors["transformer.wte.weight"]):
        raise PretrainedError(f"{weights_path} says its head is tied, but its lm_head.weight "
                              f"differs from the token embedding")
    if config.tied_head:
        weights["lm_head.weight"] = weights["token_embedding.weight"]
    model.load_state_dict({k: v.contiguous() for k, v in weights.items()})
    return model.to(device).eval()


def config_to_hf(config: GPTConfig) -> dict:
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "vocab_size": config.vocab_size, "n_positions": config.block_size,
            "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head,
            "n_inner": None, "activation_function": "gelu_new" if config.gelu == "tanh" else "gelu",
            "layer_norm_epsilon": config.layernorm_eps, "tie_word_embeddings": config.tied_head,
            "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
            "attn_pdrop": config.dropout, "bos_token_id": None, "eos_token_id": None}


def ours_to_hf(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under GPT-2's names and layouts (the inverse of :func:`hf_to_ours`)."""
    config, C = model.config, model.config.n_embd
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if "lm_head.bias" in state and state["lm_head.bias"].any():
        raise PretrainedError("GPT-2's format has no bias on the output layer, and this model's "
                              "is not zero: it cannot be written as GPT-2")
    out = {"transformer.wte.weight": state["token_embedding.weight"],
           "transformer.wpe.weight": state["position_embedding.table.weight"],
           "transformer.ln_f.weight": state["ln_f.weight"], "transformer.ln_f.bias": state["ln_f.bias"]}
    if not config.tied_head:
        out["lm_head.weight"] = state["lm_head.weight"]
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for hf_name, our_name in BLOCK_NAMES.items():
            tensor = state[ours + our_name]
            out[theirs + hf_name] = tensor.t() if tensor.dim() == 2 else tensor
        q, k, v = (state[f"{ours}attn.{w}.weight"] for w in ("query", "key", "value"))
        out[theirs + "attn.c_attn.weight"] = torch.cat([q.t(), k.t(), v.t()], dim=1)
        biases = [state.get(f"{ours}attn.{w}.bias", torch.zeros(C)) for w in ("query", "key", "value")]
        out[theirs + "attn.c_attn.bias"] = torch.cat(biases)  # no biases: zeros, the same model
    return {k: v.contiguous() for k, v in out.items()}


def save_hf_folder(model: GPT, folder) -> Path:
    """Write ``model`` as a GPT-2 folder that ``transformers`` loads unchanged
    (``GPT2LMHeadModel.from_pretrained(folder)``). Each file is written atomically."""
    folder = Path(folder)
    tensors = ours_to_hf(model)
    config = json.dumps(config_to_hf(model.config), indent=2) + "\n"
    write_atomically(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    write_atomically(folder / CONFIG_FILE, lambda tmp: Path(tmp).write_text(config))
    return folder


def from_pretrained(name: str, cache_dir=None, dropout: float = 0.0, device="cpu") -> GPT:
    """GPT-2 by name (``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``), downloaded
    once from the Hugging Face Hub into its cache, or a local GPT-2 folder."""
    if Path(name).is_dir():
        return load_hf_folder(name, dropout, device)
    if name not in HUB_NAMES:
        raise PretrainedError(f"unknown model {name!r}: give one of {', '.join(HUB_NAMES)} or a "
                              f"folder holding {CONFIG_FILE} and {WEIGHTS_FILE}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(HUB_NAMES[name], allow_patterns=[CONFIG_FILE, WEIGHTS_FILE],
                                   cache_dir=cache_dir)
    except (LocalEntryNotFoundError, OSError) as error:
        raise PretrainedError(
            f"could not download {name} from the Hugging Face Hub ({type(error).__name__}). "
            f"Offline, download {CONFIG_FILE} and {WEIGHTS_FILE} of {HUB_NAMES[name]} elsewhere, "
            f"put them in a folder, and pass that folder instead of {name!r}") from None
    return load_hf_folder(folder, dropout, device)
