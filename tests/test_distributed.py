"""The one training loop under `accelerate launch` with two CPU processes (gloo): the same loss curve as one
process with the same global batch."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = '''
import json, sys
from functools import partial

from datasets import Dataset

from seqnb.papers import resolve_config
from seqnb.papers.self_generated_tokens import experiment as ex
from seqnb.papers.self_generated_tokens.method import SelfGenStep, collate
from seqnb.train import TrainArgs, train

out, batch_size = sys.argv[1], int(sys.argv[2])
# notebook 04's sort toy: every row has the same number of target tokens, so a mean over each process's share
# of the batch, averaged over processes, is the mean over the whole batch
cfg = resolve_config("04_self_generated_tokens", "tiny", output_dir=out, length=6, n_train=256, n_eval=8,
                     max_steps=12, batch_size=batch_size, grad_accum=2, lr=3e-3, warmup_steps=3, log_every=1,
                     eval_every=100, ckpt_every=100, n_layer=1, d_model=32, n_head=2, log_with="none")
model, _ = ex.build_model(cfg, 0)
task = ex.build_task(cfg)
result = train(model, Dataset.from_list(task.train_rows), TrainArgs.from_config(cfg, device="cpu"),
               collate_fn=partial(collate, pad_id=task.pad), step_fn=SelfGenStep(arm="tf", eps_start=0,
               total_steps=cfg.max_steps, pad_id=task.pad))
import torch.distributed as dist
if not dist.is_initialized() or dist.get_rank() == 0:
    history = {k: result.history.series(k, "train")[1] for k in ("loss", "lr")}
    open(out + "/history.json", "w").write(json.dumps(history))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_give_the_loss_curve_of_one_with_the_same_global_batch(tmp_path):
    script = tmp_path / "train_sort.py"
    script.write_text(SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": root, "OMP_NUM_THREADS": "1", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(script), str(one), "16"], check=True, env=env, capture_output=True)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), str(script), str(two), "8"]  # 2 x 8 = one process's 16
    done = subprocess.run(launch, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (json.loads((d / "history.json").read_text()) for d in (one, two))
    assert len(a["loss"]) == 12 and a["lr"] == b["lr"]  # the schedule counts optimizer steps, not processes
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
    assert a["loss"][-1] < a["loss"][0] - 0.2
