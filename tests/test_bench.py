"""A seconds-long smoke run of the benchmark: it checks that the code runs and reports sane numbers, not a speed."""

import json

from seqnb.bench import main, peak_bf16_flops, table, write_readme


def test_quick_benchmark_runs_and_writes_a_table(tmp_path, capsys):
    path = main(tmp_path, quick=True)
    results = json.loads(path.read_text())
    assert path.name == "results-cpu-quick.json" and results["quick"] is True
    assert not (tmp_path / "README.md").exists()  # a smoke run never replaces the published table
    t = results["training"]
    assert t["seqnb_tokens_per_s"] > 0 and t["trainer_tokens_per_s"] > 0
    assert t["ratio_seqnb_over_trainer"] == t["seqnb_tokens_per_s"] / t["trainer_tokens_per_s"]
    assert t["seqnb_mfu"] is None  # no GPU peak to divide by
    cost = results["loop_cost"]  # the loops' own work: a model a hundredth of the size, the same comparison
    assert cost["parameters"] < t["parameters"] / 100
    assert cost["seqnb_tokens_per_s"] > 0 and cost["trainer_tokens_per_s"] > 0
    methods = {m["method"]: m for m in results["methods"]}
    assert methods["SFT / teacher forcing (baseline)"]["ratio_to_sft"] == 1.0
    assert methods["BC + backspace augmentation (03)"]["arithmetic_minimum"] > 1.0  # longer sequences
    sm = methods["SequenceMatch (03)"]["arithmetic_minimum"]
    assert sm > methods["BC + backspace augmentation (03)"]["arithmetic_minimum"]  # plus a rollout batch
    assert methods["scheduled sampling, two-pass (04)"]["arithmetic_minimum"] == 4 / 3
    assert {"batch-scheduled sampling (BASH) (04)", "reference-answer correction (RAC) (04)"} <= set(methods)
    assert results["generation"]["tokens_per_s_cache"] > 0
    assert table(results) in capsys.readouterr().out

    (tmp_path / "results-cpu.json").write_text(json.dumps({**results, "quick": False}))
    readme = write_readme(tmp_path).read_text()
    assert table(results) in readme and "No GPU result yet" in readme
    assert readme.count("## ") == 2  # the full CPU result and the GPU placeholder, not the quick file


def test_mfu_peak_matches_the_device_name():
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("cpu (2 threads)") is None
