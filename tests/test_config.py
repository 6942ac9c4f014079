import dataclasses

import pytest
import torch

from seqnb.config import ConfigError
from seqnb.papers import resolve_config


def test_tiny_preset_resolves_with_defaults(tmp_path):
    cfg = resolve_config("00_quickstart", "tiny", output_dir=str(tmp_path))
    assert cfg.preset == "tiny" and cfg.device == "auto" and cfg.max_steps > 0
    assert dataclasses.is_dataclass(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3


def test_none_keeps_preset_value_and_overrides_apply(tmp_path):
    base = resolve_config("00_quickstart", "tiny", output_dir=str(tmp_path))
    cfg = resolve_config("00_quickstart", "tiny", output_dir=str(tmp_path), max_steps=None, d_model=64, lr=1)
    assert cfg.max_steps == base.max_steps and cfg.d_model == 64 and cfg.lr == 1


def test_default_output_dir_names_notebook_preset_and_seed():
    cfg = resolve_config("00_quickstart", "tiny", seed=3)
    assert cfg.run_dir.parts[-3:] == ("runs", "00_quickstart", "tiny-seed3")


@pytest.mark.parametrize(
    "kwargs, param, hint",
    [
        ({"preset": "huge"}, "preset", "'tiny'"),
        ({"max_steps": -5}, "max_steps", ">= 0"),
        ({"max_steps": "100"}, "max_steps", "expected int"),
        ({"max_steps": 2.5}, "max_steps", "expected int"),
        ({"batch_size": True}, "batch_size", "expected int"),
        ({"lr": "fast"}, "lr", "expected float"),
        ({"device": "tpu"}, "device", "'cuda'"),
        ({"d_modle": 64}, "d_modle", "d_model"),
    ],
)
def test_bad_parameters_name_the_parameter_and_the_fix(kwargs, param, hint):
    with pytest.raises(ConfigError) as err:
        resolve_config("00_quickstart", **kwargs)
    assert err.value.param == param
    assert f"parameter {param!r}" in str(err.value) and "Fix:" in str(err.value) and hint in str(err.value)


def test_unknown_notebook():
    with pytest.raises(ConfigError, match="00_quickstart"):
        resolve_config("99_nope")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown on CPU-only machines")
def test_paper_preset_without_gpu_says_what_to_do():
    with pytest.raises(ConfigError) as err:
        resolve_config("00_quickstart", "paper")
    assert err.value.param == "device" and "device='cpu'" in str(err.value)
    cfg = resolve_config("00_quickstart", "paper", device="cpu", precision="bf16")
    assert cfg.n_layer > resolve_config("00_quickstart", "tiny").n_layer


def test_fingerprint_ignores_where_but_not_what(tmp_path):
    from seqnb.train import TrainArgs

    def fingerprint(notebook, **kw):
        return TrainArgs.from_config(resolve_config(notebook, output_dir=str(tmp_path / "a"), **kw)).fingerprint()

    assert fingerprint("00_quickstart") == fingerprint("00_quickstart", resume=False, num_threads=1)
    assert fingerprint("00_quickstart") != fingerprint("00_quickstart", lr=0.5)
    assert fingerprint("00_quickstart") != fingerprint("00_quickstart", n_layer=3)  # a notebook field, in settings
    # fields that only choose which arms and seeds run leave every finished arm reusable
    assert fingerprint("04_self_generated_tokens") == fingerprint("04_self_generated_tokens", n_seeds=3,
                                                                  arms=("tf", "bash"))
    assert fingerprint("04_self_generated_tokens") != fingerprint("04_self_generated_tokens", p_max=0.25)
    assert fingerprint("02_end_to_end_planner") == fingerprint("02_end_to_end_planner", n_seeds=2)
    assert fingerprint("05_gemma_encoder") == fingerprint("05_gemma_encoder", seeds=(0, 1), full_grid=True)


def test_a_list_for_a_tuple_field_becomes_a_tuple(tmp_path):
    cfg = resolve_config("01_warmup_generations", output_dir=str(tmp_path), n_sweep=[1, 2], probe_steps=[0, 5])
    assert cfg.n_sweep == (1, 2) and cfg.probe_steps == (0, 5)
    hash(cfg)  # still frozen and hashable


def test_config_parameter_sets_any_field_once():
    cfg = resolve_config("00_quickstart", overrides={"n_train": 64, "dropout": 0.1}, max_steps=5)
    assert (cfg.n_train, cfg.dropout, cfg.max_steps) == (64, 0.1, 5)
    with pytest.raises(ConfigError, match="'max_steps': given both"):
        resolve_config("00_quickstart", overrides={"max_steps": 3}, max_steps=5)
    with pytest.raises(ConfigError, match="'config': expected a dict"):
        resolve_config("00_quickstart", overrides="n_train=64")
    with pytest.raises(ConfigError, match="'n_trian': not a parameter"):
        resolve_config("00_quickstart", overrides={"n_trian": 64})


def test_notebook_config_takes_the_parameters_cell(tmp_path):
    from seqnb.papers import notebook_config

    namespace = {"preset": "tiny", "seed": 3, "output_dir": str(tmp_path), "max_steps": None, "d_model": 64,
                 "config": {"n_layer": 3}, "os": object(), "unrelated": 1}  # a notebook's globals()
    cfg = notebook_config("00_quickstart", namespace)
    assert (cfg.seed, cfg.d_model, cfg.n_layer, cfg.output_dir) == (3, 64, 3, str(tmp_path))
    assert cfg.max_steps == resolve_config("00_quickstart", "tiny").max_steps  # None keeps the preset's value
    with pytest.raises(ConfigError, match="'d_model'"):
        notebook_config("00_quickstart", {**namespace, "d_model": 65, "config": None})
