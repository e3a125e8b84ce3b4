"""gptlib.numpy_gpt: every backward against finite differences, the whole GPT against torch."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from gptlib import numpy_gpt as ng
from gptlib.data import get_batch
from gptlib.model import GPT, GPTConfig
from gptlib.train import TrainConfig, configure_optimizer, learning_rate_at

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.0)


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def numeric_gradient(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, one entry at a time (f returns a number)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- each piece, by finite differences


def check_piece(forward, backward, inputs: list[np.ndarray], rng, tolerance=1e-7):
    """The loss sum(forward(*inputs) * R) for a random R: the backward of dy = R against
    finite differences, for every input."""
    out, cache = forward(*inputs)
    R = rng.normal(size=out.shape)
    analytic = backward(R, cache)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)
    for x, grad in zip(inputs, analytic):
        numeric = numeric_gradient(lambda: float((forward(*inputs)[0] * R).sum()), x)
        assert relative_error(grad, numeric) < tolerance


def test_linear(rng):
    check_piece(ng.linear_forward, ng.linear_backward,
                [rng.normal(size=(2, 3, 4)), rng.normal(size=(5, 4)), rng.normal(size=5)], rng)


def test_layernorm(rng):
    check_piece(ng.layernorm_forward, ng.layernorm_backward,
                [rng.normal(size=(2, 3, 6)), rng.normal(size=6), rng.normal(size=6)], rng)


def test_gelu(rng):
    check_piece(ng.gelu_forward, ng.gelu_backward, [rng.normal(size=(3, 7)) * 3], rng)


def test_the_normal_cdf_in_float32_is_within_a_float32_step_and_in_float64_is_scipys():
    from scipy.special import erf, ndtr

    x = np.linspace(-12, 12, 240_001).astype(np.float32).astype(np.float64)  # float32's numbers
    exact = ndtr(x)
    cdf, gauss = ng.normal_cdf(x.astype(np.float32))
    assert cdf.dtype == gauss.dtype == np.float32
    assert np.abs(cdf - exact).max() < 3.5e-7  # Abramowitz & Stegun 7.1.26, then float32 rounding
    assert (cdf[x < 0] <= 0.5).all() and (cdf[x > 0] >= 0.5).all()  # each tail on its side
    assert (np.diff(cdf[(x > -5) & (x < 5)]) >= 0).all()  # and never decreasing where it moves
    np.testing.assert_allclose(gauss, np.exp(-x * x / 2), rtol=1e-5, atol=1e-37)
    cdf64, _ = ng.normal_cdf(x)
    np.testing.assert_array_equal(cdf64, (1 + erf(x * (1 / np.sqrt(2)))) / 2)  # SciPy, unchanged
    f = torch.nn.functional.gelu(torch.from_numpy(x.astype(np.float32))).numpy()
    assert np.abs(ng.gelu_forward(x.astype(np.float32))[0] - f).max() < 2e-6  # torch's float32 GELU


def test_softmax(rng):
    def forward(z):
        p = ng.softmax(z)
        return p, p

    check_piece(forward, lambda dp, p: ng.softmax_backward(dp, p), [rng.normal(size=(4, 5))], rng)


def test_causal_attention(rng):
    C = 6
    inputs = [rng.normal(size=(2, 5, C))] + [rng.normal(size=(C, C)) for _ in range(4)] + [rng.normal(size=C)]
    check_piece(lambda *a: ng.causal_attention_forward(*a, n_head=3), ng.causal_attention_backward,
                inputs, rng)


def test_cross_entropy(rng):
    logits, targets = rng.normal(size=(2, 3, 5)), rng.integers(0, 5, size=(2, 3))
    loss, cache = ng.cross_entropy_forward(logits, targets)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits).reshape(6, 5),
                                                 torch.from_numpy(targets).reshape(6))
    assert abs(loss - expected.item()) < 1e-12
    numeric = numeric_gradient(lambda: float(ng.cross_entropy_forward(logits, targets)[0]), logits)
    assert relative_error(ng.cross_entropy_backward(cache), numeric) < 1e-7


def test_embedding_sums_the_rows_looked_up_more_than_once(rng):
    table, idx = rng.normal(size=(4, 3)), np.array([[1, 1, 3]])
    out, _ = ng.embedding_forward(table, idx)
    dy = rng.normal(size=out.shape)
    grad = ng.embedding_backward(dy, idx, 4)
    np.testing.assert_allclose(grad[1], dy[0, 0] + dy[0, 1])
    assert not grad[0].any() and not grad[2].any()


# ---------------------------------------------------------------- the whole GPT against torch


def pair(config=CONFIG, dtype=torch.float64, seed=0):
    """A torch GPT and a NumpyGPT with the same weights (copies, not shared)."""
    torch.manual_seed(seed)
    model = GPT(config).to(dtype)
    params = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    return model, ng.NumpyGPT(params, config.n_head)


def test_the_same_parameters_names_shapes_and_initialisation():
    model = GPT(GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=128, dropout=0.0))
    net = ng.NumpyGPT.create(65, 32, 2, 4, 128, seed=1)
    torch_shapes = {k: tuple(v.shape) for k, v in model.named_parameters()}
    assert {k: v.shape for k, v in net.params.items()} == torch_shapes
    assert list(net.params) == list(torch_shapes)  # the same order
    for name, value in net.params.items():
        reference = dict(model.named_parameters())[name].detach().numpy()
        assert value.dtype == np.float32
        assert abs(value.mean() - reference.mean()) < 0.01
        assert abs(value.std() - reference.std()) < 0.1 * reference.std() + 1e-7, name


def test_weights_go_both_ways_and_give_the_same_logits():
    model, _ = pair(dtype=torch.float32)
    net = ng.NumpyGPT({k: v.detach().numpy() for k, v in model.state_dict().items()}, CONFIG.n_head)
    back = GPT(CONFIG)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    idx = torch.randint(0, CONFIG.vocab_size, (3, 8))
    logits, _, _ = net.forward(idx.numpy())
    np.testing.assert_allclose(logits, model(idx)[0].detach().numpy(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(back(idx)[0], model(idx)[0])


def test_every_gradient_equals_autograds_in_float64():
    model, net = pair()
    x = torch.randint(0, CONFIG.vocab_size, (4, 8))
    y = torch.randint(0, CONFIG.vocab_size, (4, 8))
    _, loss = model(x, y)
    loss.backward()
    ours, grads = net.loss_and_grads(x.numpy(), y.numpy())
    assert abs(ours - loss.item()) < 1e-12
    errors = {name: relative_error(grads[name], p.grad.numpy()) for name, p in model.named_parameters()}
    assert max(errors.values()) <= 1e-9, errors


def test_a_shorter_window_and_the_residual_highway():
    model, net = pair()
    x, y = torch.randint(0, 11, (2, 5)), torch.randint(0, 11, (2, 5))
    model(x, y)[1].backward()
    _, grads = net.loss_and_grads(x.numpy(), y.numpy())
    pos = grads["position_embedding.table.weight"]
    assert not pos[5:].any() and relative_error(pos, model.position_embedding.table.weight.grad) < 1e-9


def train_both(dtype, steps=50):
    """50 steps of chapter 07's loop, in torch and in NumPy, from the same weights and batches."""
    config = TrainConfig(batch_size=4, max_iters=steps, learning_rate=3e-2, min_lr=3e-3,
                         warmup_iters=5, weight_decay=0.1, grad_clip=0.5)
    model, net = pair(dtype=dtype)
    optimizer = configure_optimizer(model, config)
    adamw = ng.AdamW(net.params, config.learning_rate, (config.beta1, config.beta2),
                     weight_decay=config.weight_decay)
    data = (torch.arange(500) * 3) % CONFIG.vocab_size  # a pattern to learn
    generator = torch.Generator().manual_seed(0)
    torch_losses, numpy_losses = [], []
    for step in range(steps):
        x, y = get_batch(data, config.batch_size, CONFIG.block_size, generator=generator)
        lr = learning_rate_at(step, config)
        assert lr == ng.learning_rate_at(step, config.learning_rate, config.min_lr,
                                         config.warmup_iters, config.decay_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        torch_losses.append(loss.item())
        numpy_loss, grads = net.loss_and_grads(x.numpy(), y.numpy())
        ng.clip_grad_norm(grads, config.grad_clip)
        adamw.step(grads, lr)
        numpy_losses.append(numpy_loss)
    return np.array(torch_losses), np.array(numpy_losses)


def test_fifty_training_steps_give_the_same_losses():
    torch_losses, numpy_losses = train_both(torch.float64)
    assert np.abs(torch_losses - numpy_losses).max() <= 1e-6
    assert torch_losses[-1] < torch_losses[0] - 0.1  # it did learn
    torch_losses, numpy_losses = train_both(torch.float32)
    assert np.abs(torch_losses - numpy_losses).max() <= 1e-3


def test_clipping_and_adamw_alone():
    grads = {"a": np.array([3.0, 4.0]), "b": np.array([[0.0]])}
    assert ng.clip_grad_norm(grads, 1.0) == 5.0
    np.testing.assert_allclose(grads["a"], [3 / (5 + 1e-6), 4 / (5 + 1e-6)])
    p, m, v = np.array([1.0]), np.zeros(1), np.zeros(1)
    ng.adamw_update(p, np.array([2.0]), m, v, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
                    weight_decay=0.5)
    # the first step moves by lr (m / sqrt(v) = sign(g) after bias correction), after decay
    assert abs(p[0] - (1.0 * (1 - 0.05) - 0.1)) < 1e-6


def test_bad_parameters_are_refused():
    _, net = pair()
    params = dict(net.params)
    params["lm_head.weight"] = params["lm_head.weight"][:, :4]
    with pytest.raises(ValueError, match="lm_head.weight"):
        ng.NumpyGPT(params, 2)
    with pytest.raises(ValueError, match="block size"):
        net.forward(np.zeros((1, 9), dtype=int))


def test_the_module_imports_no_torch():
    code = "import sys, gptlib.numpy_gpt; assert 'torch' not in sys.modules, 'torch was imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
