# make run   : set up .venv and execute every notebook at the tiny preset into runs/
# make test  : set up .venv, run the unit tests, then execute every notebook with nbmake
# make lab   : set up .venv (with JupyterLab) and open the notebooks
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
# nothing may reach the Hugging Face hub in tests or tiny runs
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1

.PHONY: setup run test lab clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # the CPU build where it lies on local disk; pins the version elsewhere
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: setup
	$(VENV)/bin/seqnb run all

test: setup
	$(PY) -m pytest tests -q --durations=5
	SEQNB_RUNS=$$(mktemp -d) SEQNB_PRESET=tiny $(PY) -m pytest --nbmake notebooks --nbmake-kernel=python3 \
		--nbmake-timeout=900 -q --durations=10 -p no:cacheprovider

lab: setup
	$(PY) -m pip install -q -e ".[dev,lab]"
	$(VENV)/bin/jupyter lab notebooks/00_quickstart.ipynb

clean:
	rm -rf runs $(VENV)
