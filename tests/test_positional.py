import math

import pytest
import torch

from gptlib.attention import Head
from gptlib.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)


def test_without_positions_attention_is_permutation_equivariant():
    torch.manual_seed(0)
    head = Head(16, 8, block_size=10, causal=False).eval()
    x = torch.randn(1, 10, 16)
    perm = torch.randperm(10)
    torch.testing.assert_close(head(x[:, perm]), head(x)[:, perm], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "make", [lambda: LearnedPositionalEmbedding(10, 16), lambda: SinusoidalPositionalEncoding(10, 16)]
)
def test_added_positions_break_the_equivariance(make):
    torch.manual_seed(0)
    head = Head(16, 8, block_size=10, causal=False).eval()
    positions = make()
    with torch.no_grad():
        if isinstance(positions, LearnedPositionalEmbedding):
            positions.table.weight.normal_()  # trained-looking sizes, not the small init
    x = torch.randn(1, 10, 16)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    shuffled_then = head(positions(x[:, perm]))
    then_shuffled = head(positions(x))[:, perm]
    assert not torch.allclose(shuffled_then, then_shuffled, atol=1e-3)


def test_learned_embedding_adds_one_trainable_vector_per_position():
    pos = LearnedPositionalEmbedding(block_size=8, n_embd=4)
    x = torch.zeros(2, 5, 4)
    torch.testing.assert_close(pos(x), pos.table.weight[:5].expand(2, 5, 4))
    assert pos.table.weight.requires_grad
    with pytest.raises(ValueError, match="longer than block_size 8"):
        pos(torch.zeros(1, 9, 4))


def test_sinusoidal_encoding_matches_its_formula():
    pe = sinusoidal_encoding(50, 8)
    for t in (0, 1, 17, 49):
        for i in range(4):
            w = 10000 ** (-2 * i / 8)
            assert pe[t, 2 * i].item() == pytest.approx(math.sin(t * w), abs=1e-5)
            assert pe[t, 2 * i + 1].item() == pytest.approx(math.cos(t * w), abs=1e-5)


def test_sinusoidal_similarity_depends_only_on_the_offset():
    # The defining property: PE(t) . PE(t + k) is the same for every t.
    pe = sinusoidal_encoding(64, 32)
    sim = pe @ pe.T
    for k in (0, 1, 5, 20):
        diagonal = torch.diagonal(sim, offset=k)
        torch.testing.assert_close(diagonal, torch.full_like(diagonal, diagonal[0].item()),
                                   atol=1e-4, rtol=1e-4)


def test_sinusoidal_shift_is_a_rotation_of_each_pair():
    # PE(t + k) is a fixed linear function (a rotation per frequency) of PE(t).
    pe = sinusoidal_encoding(40, 4)
    k = 3
    for i in range(2):
        w = 10000 ** (-2 * i / 4)
        rotation = torch.tensor([[math.cos(k * w), -math.sin(k * w)],
                                 [math.sin(k * w), math.cos(k * w)]])
        pair = pe[:, 2 * i : 2 * i + 2]  # (sin, cos)
        torch.testing.assert_close(pair[:-k] @ rotation, pair[k:], atol=1e-5, rtol=1e-5)


def test_sinusoidal_module_adds_the_fixed_encoding_and_has_no_parameters():
    module = SinusoidalPositionalEncoding(block_size=16, n_embd=8)
    x = torch.randn(2, 10, 8)
    torch.testing.assert_close(module(x), x + sinusoidal_encoding(10, 8))
    assert list(module.parameters()) == []
    with pytest.raises(ValueError, match="even"):
        sinusoidal_encoding(4, 7)


def test_rope_score_depends_only_on_the_relative_offset():
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_size=16, block_size=64)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        """q placed at position m, k at position n, both rotated, then dotted."""
        queries = torch.zeros(64, 16)
        keys = torch.zeros(64, 16)
        queries[m], keys[n] = q, k
        return (rope(queries)[m] @ rope(keys)[n]).item()

    for m, n in [(5, 2), (10, 10), (3, 9)]:
        for shift in (1, 7, 30):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)


def test_rope_rotates_without_changing_lengths_and_leaves_position_zero_alone():
    rope = RotaryEmbedding(head_size=8, block_size=16)
    x = torch.randn(2, 3, 16, 8)  # (B, heads, T, head_size)
    y = rope(x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[..., 0, :], x[..., 0, :])


def test_rope_rotates_the_first_pair_by_the_position():
    rope = RotaryEmbedding(head_size=2, block_size=8)
    x = torch.tensor([[1.0, 0.0]]).expand(8, 2)
    y = rope(x)
    angles = torch.arange(8.0)  # theta_0 = 1
    torch.testing.assert_close(y, torch.stack([angles.cos(), angles.sin()], dim=1))


def test_rope_offset_continues_the_positions():
    rope = RotaryEmbedding(head_size=8, block_size=16)
    x = torch.randn(1, 10, 8)
    torch.testing.assert_close(rope(x[:, 6:], offset=6), rope(x)[:, 6:])
    with pytest.raises(ValueError, match="longer than block_size"):
        rope(x, offset=8)


def test_learned_embedding_offset_continues_the_positions():
    pos = LearnedPositionalEmbedding(block_size=8, n_embd=4)
    x = torch.zeros(1, 3, 4)
    torch.testing.assert_close(pos(x, offset=5)[0], pos.table.weight[5:8])
    with pytest.raises(ValueError, match="longer than block_size"):
        pos(x, offset=6)
