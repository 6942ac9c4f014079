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
