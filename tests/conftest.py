import os

# No test may reach the network: the hub libraries read these when they are first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def char_tok():
    from seqnb.tokenizers import char_tokenizer

    return char_tokenizer("0123456789+=")


@pytest.fixture
def tiny_cfg(tmp_path):
    """A quickstart config small enough to train in a few seconds."""
    from seqnb.papers import resolve_config

    def make(**overrides):
        values = dict(output_dir=str(tmp_path / "run"), max_steps=40, batch_size=16, n_train=640,
                      n_layer=1, d_model=32, n_head=2, lr=3e-3, warmup_steps=0, eval_every=20, ckpt_every=10,
                      log_every=5, train_digits=2, test_digits=3, n_test_per_length=8)
        values.update(overrides)
        return resolve_config("00_quickstart", "tiny", **values)

    return make
