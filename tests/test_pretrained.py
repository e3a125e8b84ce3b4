"""gptlib.pretrained: GPT-2 checkpoints written by transformers load into the course's GPT
with the same logits, and ours load into transformers."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gptlib.model import GPT, GPTConfig
from gptlib.pretrained import (
    PretrainedError,
    from_pretrained,
    hf_to_ours,
    load_hf_folder,
    save_hf_folder,
)
from gptlib.sample import generate

SHAPES = {
    "small": dict(n_layer=2, n_head=2, n_embd=16, vocab_size=101, n_positions=32),
    "real vocabulary and context": dict(n_layer=1, n_head=4, n_embd=32, vocab_size=50257, n_positions=1024),
    "untied, exact GELU": dict(n_layer=2, n_head=4, n_embd=16, vocab_size=64, n_positions=32,
                               tie_word_embeddings=False, activation_function="gelu",
                               layer_norm_epsilon=1e-3),
}


def hf_model(folder, **shape):
    torch.manual_seed(0)
    config = GPT2Config(**shape, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random LayerNorms and biases too, so that every tensor matters
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_a_transformers_checkpoint_gives_the_same_logits_and_tokens(tmp_path, shape):
    theirs = hf_model(tmp_path, **shape)
    ours = load_hf_folder(tmp_path)
    idx = torch.randint(0, shape["vocab_size"], (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], theirs(idx).logits, rtol=0, atol=1e-5)
    prompt = idx[:1, :5]
    expected = theirs.generate(prompt, max_new_tokens=50 if shape["n_positions"] > 32 else 27,
                               do_sample=False, pad_token_id=0)
    new = expected.shape[1] - prompt.shape[1]
    assert torch.equal(generate(ours, prompt, new, top_k=1), expected)                  # KV cache
    assert torch.equal(generate(ours, prompt, new, top_k=1, use_cache=False), expected)


def test_fifty_greedy_tokens_with_the_real_vocabulary(tmp_path):
    theirs = hf_model(tmp_path, **SHAPES["real vocabulary and context"])
    ours = load_hf_folder(tmp_path)
    prompt = torch.tensor([[464, 1893, 286, 262]])
    expected = theirs.generate(prompt, max_new_tokens=50, do_sample=False, pad_token_id=0)
    assert expected.shape[1] == 54 and torch.equal(generate(ours, prompt, 50, top_k=1), expected)


@pytest.mark.parametrize("switches", [dict(qkv_bias=True, tied_head=True, gelu="tanh"),
                                      dict(qkv_bias=False, tied_head=False, gelu="exact")])
def test_our_gpt_exported_loads_in_transformers_with_the_same_logits(tmp_path, switches):
    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=70, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                         **switches)).eval()
    if not switches["tied_head"]:
        with torch.no_grad():
            ours.lm_head.bias.zero_()  # GPT-2's format has no output bias
    save_hf_folder(ours, tmp_path)
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 70, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(theirs(idx).logits, ours(idx)[0], rtol=0, atol=1e-5)
    back = load_hf_folder(tmp_path)
    torch.testing.assert_close(back(idx)[0], ours(idx)[0], rtol=0, atol=1e-5)


def test_an_output_bias_cannot_be_exported(tmp_path):
    ours = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with torch.no_grad():
        ours.lm_head.bias.fill_(0.5)
    with pytest.raises(PretrainedError, match="no bias on the output layer"):
        save_hf_folder(ours, tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_wrong_transpose_fits_every_shape_and_only_the_logits_catch_it(tmp_path):
    theirs = hf_model(tmp_path, **SHAPES["small"])
    from safetensors.torch import load_file

    model = load_hf_folder(tmp_path)
    config = model.config
    weights = hf_to_ours(load_file(tmp_path / "model.safetensors"), config)
    weights["blocks.0.attn.proj.weight"] = weights["blocks.0.attn.proj.weight"].t()  # the mistake
    weights["lm_head.weight"] = weights["token_embedding.weight"]
    broken = GPT(config).eval()
    broken.load_state_dict(weights)  # every shape fits: (16, 16) either way
    idx = torch.randint(0, 101, (1, 16))
    with torch.no_grad():
        assert (broken(idx)[0] - theirs(idx).logits).abs().max() > 1e-3
        torch.testing.assert_close(model(idx)[0], theirs(idx).logits, rtol=0, atol=1e-5)


def test_a_file_that_does_not_fit_is_refused_with_everything_wrong_at_once(tmp_path):
    from safetensors.torch import load_file, save_file

    hf_model(tmp_path, **SHAPES["small"])
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    tensors["transformer.h.0.ln_1.weight"] = torch.ones(17)
    tensors["transformer.extra.weight"] = torch.ones(3)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(PretrainedError) as error:
        load_hf_folder(tmp_path)
    message = str(error.value)
    assert "missing (1): blocks.1.ffwd.fc.bias" in message
    assert "unexpected (1): transformer.extra.weight" in message
    assert "mis-shaped (1): blocks.0.ln1.weight (17,) (expected (16,))" in message and "\n" not in message


def test_missing_files_foreign_configs_and_offline_names(tmp_path, monkeypatch):
    with pytest.raises(PretrainedError, match="no config.json"):
        load_hf_folder(tmp_path)
    hf_model(tmp_path, **SHAPES["small"])
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, model_type="llama")))
    with pytest.raises(PretrainedError, match="not a GPT-2 checkpoint"):
        load_hf_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(PretrainedError, match="is not a GPT-2 config"):
        load_hf_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert from_pretrained(str(tmp_path)).config.vocab_size == 101  # a local folder
    assert GPT.from_pretrained(str(tmp_path)).config.tied_head
    with pytest.raises(PretrainedError, match="unknown model 'gpt5'"):
        from_pretrained("gpt5")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedError, match="Offline, download config.json and model.safetensors"):
        from_pretrained("gpt2", cache_dir=tmp_path / "cache")


def test_the_hubs_layout_without_the_transformer_prefix_and_with_mask_buffers(tmp_path):
    # The released GPT-2 files were written by the older GPT2Model: "h.0.attn.c_attn.weight",
    # "wte.weight", ..., no lm_head (tied), and each block's causal mask as "h.N.attn.bias".
    from safetensors.torch import load_file, save_file

    theirs = hf_model(tmp_path, **SHAPES["small"])
    tensors = load_file(tmp_path / "model.safetensors")
    released = {k.removeprefix("transformer."): v for k, v in tensors.items() if k != "lm_head.weight"}
    for i in range(2):
        released[f"h.{i}.attn.bias"] = torch.tril(torch.ones(32, 32)).view(1, 1, 32, 32)
    save_file(released, tmp_path / "model.safetensors")
    ours = load_hf_folder(tmp_path)
    idx = torch.randint(0, 101, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], theirs(idx).logits, rtol=0, atol=1e-5)
