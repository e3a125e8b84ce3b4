import math
import shutil
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from gptlib.model import GPT, GPTConfig
from gptlib.runtime import Runtime, autocast_dtype
from gptlib.train import (
    TrainConfig,
    TrainingDiverged,
    TrainState,
    configure_optimizer,
    estimate_loss,
    estimate_losses,
    full_loss,
    learning_rate_at,
    train,
    training_step,
)

TINY = GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(TINY)


def test_weight_decay_only_on_matrices_and_embeddings():
    model = tiny_model()
    optimizer = configure_optimizer(model, TrainConfig(weight_decay=0.1))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert any("token_embedding" in names[id(p)] for p in decayed["params"])
    assert any("ln1" in names[id(p)] for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_learning_rate_warms_up_then_follows_a_cosine_down():
    c = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110, max_iters=200)
    assert learning_rate_at(0, c) == pytest.approx(1e-4)
    assert learning_rate_at(9, c) == pytest.approx(1e-3)
    assert learning_rate_at(10, c) == pytest.approx(1e-3)
    assert learning_rate_at(60, c) == pytest.approx((1e-3 + 1e-4) / 2)
    assert learning_rate_at(110, c) == pytest.approx(1e-4)
    assert learning_rate_at(150, c) == pytest.approx(1e-4)
    rates = [learning_rate_at(s, c) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", 0.0, "learning_rate must be > 0"),
    ("learning_rate", -1e-3, "learning_rate must be > 0"),
    ("batch_size", 0, "batch_size must be a positive"),
    ("max_iters", -5, "max_iters must be a positive"),
    ("min_lr", 1.0, "min_lr must be between 0 and learning_rate"),
    ("beta2", 1.0, r"beta2 must be in \[0, 1\)"),
])
def test_train_config_rejects_impossible_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def brute_force_full_loss(model, data):
    """Predict each position from the start of its window, one prediction at a time."""
    block = model.config.block_size
    losses = []
    for t in range(1, len(data)):
        start = ((t - 1) // block) * block
        logits, _ = model(data[start:t].unsqueeze(0))
        losses.append(F.cross_entropy(logits[0, -1:], data[t : t + 1]).item())
    return sum(losses) / len(losses)


@pytest.mark.parametrize("length", [17, 25, 30])  # 16 and 24 targets fill whole windows; 29 does not
def test_full_loss_predicts_every_position_once_in_non_overlapping_windows(length):
    model = tiny_model().eval()
    data = torch.randint(7, (length,), generator=torch.Generator().manual_seed(length))
    assert full_loss(model, data, batch_size=2) == pytest.approx(
        brute_force_full_loss(model, data), rel=1e-5)


def test_estimate_loss_is_the_mean_over_random_batches():
    model = tiny_model()
    data = torch.randint(7, (500,), generator=torch.Generator().manual_seed(0))
    a = estimate_loss(model, data, 4, 10, torch.Generator().manual_seed(1))
    b = estimate_loss(model, data, 4, 10, torch.Generator().manual_seed(1))
    assert a == b and a == pytest.approx(math.log(7), abs=0.2)
    assert model.training  # left as it was


def test_training_learns_a_simple_pattern_and_records_history():
    # The sequence 0 1 2 3 4 5 6 0 1 2 ... is fully predictable.
    data = torch.arange(2000) % 7
    model = tiny_model()
    config = TrainConfig(batch_size=8, max_iters=150, learning_rate=1e-2, min_lr=1e-3,
                         warmup_iters=10, lr_decay_iters=150, eval_interval=50, eval_iters=4)
    seen = []
    history = train(model, data, data, config, progress=False,
                    on_eval=lambda step, h: seen.append(step)).history
    assert seen == [50, 100, 150]
    assert history["eval_step"] == [50, 100, 150]
    assert history["step"] == list(range(1, 151))
    assert len(history["loss"]) == len(history["lr"]) == 150
    assert history["val_loss"][-1] < 0.05
    assert full_loss(model, data[:200]) < 0.1


def test_an_interrupted_training_keeps_what_it_learned():
    # In a notebook, pressing stop raises KeyboardInterrupt inside train(); the model
    # object must hold the weights of the steps that finished.
    data = torch.arange(2000) % 7
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(batch_size=8, max_iters=1000, learning_rate=1e-2, min_lr=1e-3,
                         warmup_iters=10, lr_decay_iters=1000, eval_interval=40, eval_iters=2)

    def interrupt(step, history):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(model, data, data, config, progress=False, on_eval=interrupt)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert full_loss(model, data[:200]) < math.log(7) - 0.5  # 40 steps already help a lot


def test_an_interrupt_keeps_the_losses_of_the_steps_that_finished():
    # The losses wait on the device until every log_interval-th step; an interrupt in
    # between must still put the finished steps' losses into the history.
    data = torch.arange(2000) % 7
    config = TrainConfig(batch_size=4, max_iters=100, warmup_iters=2, eval_interval=100,
                         eval_iters=1, log_interval=10)
    state = TrainState.start(model := tiny_model(), config)

    def step_until_the_seventh(model, optimizer, x, y, grad_clip):
        if state.step == 6:
            raise KeyboardInterrupt
        return training_step(model, optimizer, x, y, grad_clip)

    with pytest.raises(KeyboardInterrupt):
        train(model, data, data, config, state, progress=False, step_fn=step_until_the_seventh)
    assert state.history["step"] == [1, 2, 3, 4, 5, 6] and len(state.history["loss"]) == 6


# --- precision and torch.compile ----------------------------------------------------------


def test_precision_auto_is_float32_off_cuda_and_bad_choices_are_refused():

    assert autocast_dtype(torch.device("cpu")) == torch.float32
    assert autocast_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="float16 training needs a CUDA GPU"):
        autocast_dtype(torch.device("cpu"), "float16")
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        autocast_dtype(torch.device("cpu"), "half")


PATTERN_CONFIG = TrainConfig(batch_size=8, max_iters=60, learning_rate=1e-2, min_lr=1e-3,
                             warmup_iters=10, lr_decay_iters=60, eval_interval=60, eval_iters=2)


def test_bfloat16_autocast_trains_like_float32():
    data = torch.arange(2000) % 7
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = tiny_model()
        runs[dtype] = Runtime(dtype=dtype).train(model, data, data, PATTERN_CONFIG,
                                                 progress=False).history
        assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    f32, bf16 = runs[torch.float32]["loss"], runs[torch.bfloat16]["loss"]
    assert bf16[-1] < 0.5 * bf16[0]  # it learns
    assert max(abs(a - b) for a, b in zip(f32, bf16)) < 0.05  # bf16 keeps about 3 digits


def test_float16_with_its_gradient_scaler_trains_like_float32(monkeypatch):
    # The command line allows float16 on CUDA only, but the same code runs on the CPU.
    # The scaler multiplies the loss by 65536 before backward; clipping must see the
    # true gradient, unscaled first (AdamW itself would hide the mistake: its update
    # does not change when every gradient is multiplied by the same number).
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(*args, **kwargs):
        norms.append(clip(*args, **kwargs).item())
        return norms[-1]

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    data = torch.arange(2000) % 7
    f32 = Runtime().train(tiny_model(), data, data, PATTERN_CONFIG, progress=False)
    f32_norms = norms.copy()
    norms.clear()
    f16 = Runtime(dtype=torch.float16).train(tiny_model(), data, data, PATTERN_CONFIG,
                                             progress=False)
    f32, f16 = f32.history["loss"], f16.history["loss"]
    assert f16[-1] < 0.1 * f16[0]
    assert max(abs(a - b) for a, b in zip(f32, f16)) < 0.05
    assert max(abs(a - b) / a for a, b in zip(f32_norms[:10], norms[:10])) < 0.05


@pytest.mark.skipif(not any(map(shutil.which, ("cc", "gcc", "clang"))),
                    reason="torch.compile on the CPU needs a C compiler")
def test_compiled_training_takes_the_same_steps():
    data = torch.arange(2000) % 7
    eager = train(tiny_model(), data, data, PATTERN_CONFIG, progress=False).history["loss"]
    compiled = Runtime(compile=True).train(tiny_model(), data, data, PATTERN_CONFIG,
                                           progress=False).history["loss"]
    assert max(abs(a - b) for a, b in zip(eager, compiled)) < 1e-3


# --- the loop trains any model; what it logs and when ----------------------------------


def test_the_cosine_follows_max_iters_unless_told_otherwise():
    config = TrainConfig(max_iters=100, learning_rate=1e-3, min_lr=1e-4, warmup_iters=10)
    assert config.lr_decay_iters is None and config.decay_iters == 100
    assert learning_rate_at(99, config) == pytest.approx(1e-4, rel=1e-2)  # the end of the cosine
    longer = TrainConfig(max_iters=100, learning_rate=1e-3, min_lr=1e-4, warmup_iters=10,
                         lr_decay_iters=1000)
    assert learning_rate_at(99, longer) > 9e-4


def test_the_loop_trains_the_bigram_and_the_attention_model_too():
    from gptlib.attention import AttentionLM
    from gptlib.bigram import BigramLanguageModel

    data = torch.arange(2000) % 7
    config = TrainConfig(batch_size=8, max_iters=100, learning_rate=1e-2, min_lr=1e-3,
                         warmup_iters=5, eval_interval=100, eval_iters=2)
    torch.manual_seed(0)
    bigram = BigramLanguageModel(7)
    fast = replace(config, learning_rate=0.3, min_lr=0.03)  # a table of logits: large steps
    state = train(bigram, data, data, fast, block_size=8, progress=False)
    assert state.step == 100 and state.history["val_loss"][-1] < 0.5  # each next token is certain
    torch.manual_seed(0)
    attention = AttentionLM(7, n_embd=16, n_head=2, block_size=8)
    assert train(attention, data, data, config, progress=False).history["val_loss"][-1] < 0.5
    with pytest.raises(ValueError, match="pass block_size="):
        train(BigramLanguageModel(7), data, data, config, progress=False)


def test_losses_are_read_off_the_device_only_every_log_interval_steps():
    data = torch.arange(2000) % 7
    config = TrainConfig(batch_size=4, max_iters=20, eval_interval=20, eval_iters=1,
                         log_interval=5, warmup_iters=2)
    model = tiny_model()
    logged = []
    state = TrainState.start(model, config)
    train(model, data, data, config, state, progress=False,
          should_stop=lambda: logged.append(len(state.history["loss"])) or False)
    # Asked during step k (1-based), before that step is logged: 5 * ((k - 1) // 5) losses.
    assert logged == [5 * ((k - 1) // 5) for k in range(1, 21)]
    assert len(state.history["loss"]) == len(state.history["step"]) == 20


def test_a_loss_that_is_not_finite_stops_training_and_names_the_step():
    data = torch.arange(2000) % 7
    config = TrainConfig(batch_size=4, max_iters=50, eval_interval=10, eval_iters=1,
                         log_interval=1, warmup_iters=0)
    steps = []

    def poisoned_step(model, optimizer, x, y, grad_clip):
        steps.append(len(steps) + 1)
        loss = torch.tensor(float("nan") if len(steps) == 13 else 1.0)
        return loss

    evaluations = []
    with pytest.raises(TrainingDiverged, match="the loss became nan at step 13"):
        train(tiny_model(), data, data, config, progress=False, step_fn=poisoned_step,
              on_eval=lambda step, h: evaluations.append(step))
    assert steps[-1] == 13 and evaluations == [10]  # no evaluation (no checkpoint) after it


def test_weights_that_became_nan_are_caught_before_on_eval():
    data = torch.arange(2000) % 7
    config = TrainConfig(batch_size=4, max_iters=10, eval_interval=5, eval_iters=1)
    model = tiny_model()
    steps = []

    def break_the_weights(model, optimizer, x, y, grad_clip):
        loss = training_step(model, optimizer, x, y, grad_clip)
        steps.append(loss)
        if len(steps) == 5:  # the step's own loss is finite; the weights after it are not
            with torch.no_grad():
                model.lm_head.weight.fill_(float("inf"))
        return loss

    with pytest.raises(TrainingDiverged, match="estimate became nan at step 5"):
        train(model, data, data, config, progress=False, step_fn=break_the_weights,
              on_eval=lambda step, h: pytest.fail("on_eval saw the diverged model"))


def test_training_in_two_halves_with_the_state_equals_training_straight_through():
    data = torch.arange(3000) % 7
    config = TrainConfig(batch_size=4, max_iters=12, lr_decay_iters=12, eval_interval=6,
                         eval_iters=1, warmup_iters=2)
    straight = tiny_model(seed=1)
    a = train(straight, data, data, config, progress=False)
    halves = tiny_model(seed=1)
    b = train(halves, data, data, replace(config, max_iters=6), progress=False)
    b = train(halves, data, data, config, b, progress=False)
    assert a.step == b.step == 12
    for (name, x), y in zip(straight.state_dict().items(), halves.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_the_runtime_step_in_float32_is_the_plain_step():
    data = torch.arange(2000) % 7
    plain = train(tiny_model(), data, data, PATTERN_CONFIG, progress=False).history
    wrapped = Runtime().train(tiny_model(), data, data, PATTERN_CONFIG, progress=False).history
    assert plain == wrapped


def test_estimates_before_training_are_the_recorded_ones_and_change_nothing():
    data = torch.randint(7, (400,))
    config = TrainConfig(batch_size=4, max_iters=6, eval_interval=3, eval_iters=2, warmup_iters=1)
    plain = tiny_model()
    plain_state = train(plain, data, data, config, progress=False)
    model = tiny_model()
    before = estimate_losses(model, data, data, config)  # what LiveLossPlot draws at step 0
    state = train(model, data, data, config, progress=False)
    assert state.history == plain_state.history  # the estimate drew none of the training batches
    assert before["val_loss"] != state.history["val_loss"][0]
    # Estimates at a step are exactly those training records there.
    assert estimate_losses(model, data, data, config) == {
        "train_loss": state.history["train_loss"][-1], "val_loss": state.history["val_loss"][-1]}


def test_the_shipped_learning_rate_sweep_is_the_cpu_preset_at_each_rate():
    # Chapter 07 draws assets/lr-sweep; its 3e-3 run must be the preset's own run.
    import json
    from pathlib import Path

    from gptlib.checkpoint import load_checkpoint
    from gptlib.presets import get_preset

    root = Path(__file__).resolve().parent.parent
    sweep = json.loads((root / "assets" / "lr-sweep" / "results.json").read_text())
    _, config = get_preset("cpu")
    assert sweep["max_iters"] == config.max_iters
    rates = [run["learning_rate"] for run in sweep["runs"]]
    assert rates == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    for run in sweep["runs"]:
        assert run["min_lr"] == pytest.approx(run["learning_rate"] / 10)
        assert run["step"] == list(range(1, config.max_iters + 1))  # every step's loss
    preset_run = sweep["runs"][rates.index(config.learning_rate)]
    shipped = load_checkpoint(root / "assets" / "shakespeare-cpu").history["loss"]
    assert preset_run["loss"][:20] == pytest.approx(shipped[:20], abs=1e-5)  # the same run
    assert preset_run["val"] == pytest.approx(1.8354, abs=0.01)
