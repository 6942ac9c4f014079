"""Every bad parameter is refused before any training, with an error that names the parameter and says the fix:
one table over the notebooks' configs (what a parameters cell passes to resolve_config) and the CLI."""

import pytest

from seqnb.cli import main
from seqnb.config import ConfigError
from seqnb.papers import resolve_config

QS, WG, PL, SM, SG, GE = ("00_quickstart", "01_warmup_generations", "02_end_to_end_planner", "03_sequencematch",
                          "04_self_generated_tokens", "05_gemma_encoder")

# (notebook, preset, overrides, the parameter the error must name)
BAD_CONFIGS = [
    (QS, "tiny", dict(max_steps=-1), "max_steps"),
    (QS, "tiny", dict(batch_size=0), "batch_size"),
    (QS, "tiny", dict(lr=-1e-3), "lr"),
    (QS, "tiny", dict(dropout=1.5), "dropout"),
    (QS, "tiny", dict(d_model=130), "d_model"),  # not divisible by n_head = 4
    (QS, "tiny", dict(test_digits=2), "test_digits"),  # below train_digits = 3
    (QS, "tiny", dict(device="tpu"), "device"),
    (QS, "tiny", dict(precision="fp8"), "precision"),
    (QS, "tiny", dict(max_steps=2.5), "max_steps"),
    (QS, "tiny", dict(max_steps="many"), "max_steps"),
    (QS, "tiny", dict(reverse_answer="yes"), "reverse_answer"),
    (QS, "tiny", dict(seed=-1), "seed"),
    (QS, "tiny", dict(grad_accum=0), "grad_accum"),
    (QS, "tiny", dict(n_trian=64), "n_trian"),
    (QS, "huge", dict(), "preset"),
    (QS, "paper", dict(device="cpu", precision="fp16"), "precision"),  # fp16 needs a GPU
    (WG, "tiny", dict(task="poetry"), "task"),
    (WG, "tiny", dict(weights="softmax"), "weights"),
    (WG, "tiny", dict(n_warmups=0), "n_warmups"),
    (WG, "tiny", dict(weight_temperature=0.0), "weight_temperature"),
    (WG, "tiny", dict(n_sweep=(0, 2)), "n_sweep"),
    (WG, "tiny", dict(probe_steps=(-5,)), "probe_steps"),
    (WG, "tiny", dict(arch="rnn"), "arch"),
    (PL, "tiny", dict(p_first=1.2), "p_first"),
    (PL, "tiny", dict(mix_ratios=(0.25, 1.5)), "mix_ratios"),
    (PL, "tiny", dict(mix_ratios=("half",)), "mix_ratios"),
    (PL, "tiny", dict(arms=("e2e_soft", "gumbel")), "arms"),
    (PL, "tiny", dict(arms=()), "arms"),
    (PL, "tiny", dict(k=1), "k"),
    (PL, "tiny", dict(cond_from_layer=2), "cond_from_layer"),  # the tiny LM has 2 layers
    (PL, "tiny", dict(mix_schedule="cosine"), "mix_schedule"),
    (SM, "tiny", dict(p_noise=1.5), "p_noise"),
    (SM, "tiny", dict(beta=-0.1), "beta"),
    (SM, "tiny", dict(gamma=1.01), "gamma"),
    (SM, "tiny", dict(lam=2.0), "lam"),
    (SM, "tiny", dict(min_k=9, max_k=5), "min_k"),
    (SM, "tiny", dict(max_k=12), "max_k"),
    (SM, "tiny", dict(alpha=0.0), "alpha"),
    (SG, "tiny", dict(p_max=1.5), "p_max"),
    (SG, "tiny", dict(arms=("ss", "bash")), "arms"),
    (SG, "tiny", dict(arms=("tf", "dagger")), "arms"),
    (SG, "tiny", dict(schedule="cosine"), "schedule"),
    (SG, "tiny", dict(rac_alignment="dtw"), "rac_alignment"),
    (SG, "tiny", dict(gen_every_epochs=0.0), "gen_every_epochs"),
    (GE, "tiny", dict(dropout_grid=(0.1, 1.2)), "dropout_grid"),
    (GE, "tiny", dict(pooling_grid=("first_k1", "max")), "pooling_grid"),
    (GE, "tiny", dict(pooling_grid=("first_k",)), "pooling_grid"),
    (GE, "tiny", dict(seeds=(0, -1)), "seeds"),
    (GE, "tiny", dict(min_len=100), "min_len"),  # above max_len = 64
    (GE, "tiny", dict(num_kv_heads=3), "num_kv_heads"),
    (GE, "tiny", dict(padding_side="middle"), "padding_side"),
    (GE, "tiny", dict(task="imdb"), "task"),
    (GE, "tiny", dict(group_size=1), "group_size"),
]


@pytest.mark.parametrize("notebook,preset,overrides,param", BAD_CONFIGS,
                         ids=[f"{n[:2]}-{p}" for n, _, _, p in BAD_CONFIGS])
def test_bad_config_names_the_parameter_and_the_fix(notebook, preset, overrides, param):
    with pytest.raises(ConfigError) as err:
        resolve_config(notebook, preset, **overrides)
    assert err.value.param == param and f"parameter {param!r}" in str(err.value) and "Fix: " in str(err.value)


# the CLI: each refused before a kernel starts (exit 2, the error on stderr)
BAD_RUNS = [
    (["run", QS, "-p", "seed", "5"], "'seed'", "--seed"),  # papermill would let --seed win, silently
    (["run", QS, "-p", "preset", "paper"], "'preset'", "--preset"),
    (["run", QS, "-p", "output_dir", "/tmp/x"], "'output_dir'", "--output-root"),
    (["run", SM, "-p", "p_noise", "1.5"], "'p_noise'", "in [0.0, 1.0]"),
    (["run", QS, "-p", "max_steps", "-3"], "'max_steps'", ">= 0"),
    (["run", QS, "-p", "n_trian", "64"], "'n_trian'", "use one of"),
    (["run", QS, "-p", "config", "{'dropout': 2.0}"], "'dropout'", "in [0.0, 1.0]"),
    (["run", QS, "-p", "config", "{'max_steps': 3}", "-p", "max_steps", "4"], "'max_steps'", "give it once"),
    (["run", "99_nothing"], "'notebook'", "use one of"),
]


@pytest.mark.parametrize("argv,param,fix", BAD_RUNS, ids=[" ".join(a[2:]) or a[1] for a, _, _ in BAD_RUNS])
def test_bad_cli_input_is_refused_before_any_run(argv, param, fix, capsys, tmp_path, monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a notebook was started"))
    assert main([*argv[:2], "--output-root", str(tmp_path), *argv[2:]]) == 2
    err = capsys.readouterr().err
    assert f"parameter {param}" in err and fix in err


def test_the_table_is_large():
    assert len(BAD_CONFIGS) + len(BAD_RUNS) >= 40
