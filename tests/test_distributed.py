"""Data-parallel training with torchrun: two CPU processes (gloo) against one.

Both runs see the same global batch at every step: each of the two processes
draws the same 8 rows and trains on its 4, and DDP averages the two gradients,
which is the gradient of the mean loss over all 8 rows, as in the one-process
run. Only the order of the floating-point sums differs, so the losses agree to
within LOSS_TOLERANCE (measured: about 1e-6).
"""

import signal
import subprocess
import sys
import time

import pytest
import torch

from gptlib.checkpoint import load_checkpoint
from gptlib.runtime import Distributed

LOSS_TOLERANCE = 1e-4
SETTINGS = ["--device", "cpu", "--quiet", "--n_layer", "2", "--n_head", "2", "--n_embd", "32",
            "--block_size", "16", "--batch_size", "8", "--max_iters", "30",
            "--warmup_iters", "5", "--eval_interval", "15",
            "--eval_iters", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "gptlib", "train", "--out", str(root / "two"), *SETTINGS],
        capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "gptlib", "train", "--out", str(root / "one"),
                          *SETTINGS], capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    return root, two, one


def test_two_processes_train_like_one_with_the_same_global_batch(runs):
    root, _, _ = runs
    two, one = load_checkpoint(root / "two"), load_checkpoint(root / "one")
    assert two.history["step"] == one.history["step"] == list(range(1, 31))
    assert max(abs(a - b) for a, b in zip(two.history["loss"], one.history["loss"])) < LOSS_TOLERANCE
    assert one.history["loss"][-1] < one.history["loss"][0] - 0.5  # it did learn something
    two_weights = two.model.state_dict()
    for name, weight in one.model.state_dict().items():
        torch.testing.assert_close(two_weights[name], weight, atol=1e-4, rtol=1e-3)


def test_only_process_zero_writes_and_reports(runs):
    root, two, _ = runs
    assert sorted(p.name for p in (root / "two").iterdir()) == ["checkpoint.safetensors"]
    assert two.stdout.count("trained to step 30") == 1
    assert two.stdout.count("checkpoint saved") == 2  # evaluations at steps 15 and 30
    assert "2 processes, 4 of the 8 rows of each batch apiece" in two.stdout


def test_each_process_takes_an_equal_share_of_the_batch():
    shares = [Distributed(rank=r, local_rank=r, world_size=4).shard(12) for r in range(4)]
    assert [(s.start, s.stop) for s in shares] == [(0, 3), (3, 6), (6, 9), (9, 12)]
    assert Distributed().shard(12) == slice(0, 12)
    with pytest.raises(ValueError, match="batch_size 10 must be divisible by the number of processes"):
        Distributed(rank=0, local_rank=0, world_size=4).shard(10)


def test_ctrl_c_stops_every_process_at_the_same_step_and_the_run_resumes(tmp_path,
                                                                        wait_for_checkpoint):
    # torchrun passes the signal on to its workers; they must agree on the step to stop
    # at (or the others would wait for ever in the next gradient exchange), and process
    # 0 must save. torchrun itself then reports the signal and exits non-zero.
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "gptlib", "train", "--out", str(out), *SETTINGS]
    long_run = ["--max_iters", "1000000", "--eval_interval", "20"]
    process = subprocess.Popen(command + long_run, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(out, process)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert stderr.count("stopped after step") == 1  # said once, by process 0
    step = load_checkpoint(out).step
    assert 20 <= step < 1_000_000 and f"stopped after step {step} " in stderr
    assert step % 10 == 0  # the processes vote on stopping every log_interval (10) steps
    resumed = subprocess.run(command + ["--resume", "--max_iters", str(step + 4),
                                        "--lr_decay_iters", "1000000"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(out).history["step"] == list(range(1, step + 5))
