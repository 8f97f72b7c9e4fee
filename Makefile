# The course kit's commands. `make help` lists them.
# Every target that needs Python sets up .venv first (fast when nothing changed).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 7860
ENGINE ?= preview
# The preview engine waits per step so progress can be watched; a real engine needs no delay.
STEP_DELAY ?= $(if $(filter preview,$(ENGINE)),0.05,0)

.PHONY: help setup lab demo test test-fast test-real serve doctor models models-sd student submission grade bench clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# The stamp is newer than pyproject.toml once the install succeeded, so a second `make setup`
# does nothing; editing the dependencies re-runs pip.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found. Install Python 3.11 (python.org, pyenv or conda), or run: make setup PYTHON=python3.12"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,course,diffusers,openvino]'
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the kit with its test and course tools
	@echo "Set up: $(VENV) ($$($(PY) --version))"

lab: $(STAMP)  ## open JupyterLab on notebooks/ with the kit's kernel
	$(VENV)/bin/jupyter lab notebooks/

demo: $(STAMP)  ## run the pipeline on an example; starts the kit's server if no A1111 answers
	$(PY) -m course demo

# The lanes: markers registered in pyproject.toml, given in tests/conftest.py and on the tests themselves.
SLOW_LANES := notebook or browser or subprocess or diffusers or grading

test: $(STAMP)  ## run the linter (ruff) and the whole test suite (unit, HTTP, engines, notebooks, browser, grading)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest --durations=10

test-real: $(STAMP)  ## the conformance lane: the client against the real AUTOMATIC1111 v1.10.1 (builds its venv once, minutes)
	KIT_REAL=1 $(PY) -m pytest -m real --durations=5

test-fast: $(STAMP)  ## the quick tests before a commit (no notebook, browser, subprocess, diffusers or grading tests)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not ($(SLOW_LANES) or real)" --durations=5

serve: $(STAMP)  ## start the kit's A1111-compatible server (ENGINE=preview|diffusers, BACKEND=auto|pytorch|openvino, MODEL=, CONFIG=, PORT=7860)
	$(PY) -m sdserver --host 127.0.0.1 --port $(PORT) --engine $(ENGINE) --step-delay $(STEP_DELAY) $(if $(MODEL),--model "$(MODEL)") $(if $(CONFIG),--config "$(CONFIG)") $(if $(BACKEND),--backend $(BACKEND))

doctor: $(STAMP)  ## preflight checks with a fix for each failure
	$(PY) -m course doctor

models: $(STAMP)  ## download the CLIP weights once, ahead of a class (needs internet)
	$(PY) -m course models

student: $(STAMP)  ## student versions of the notebooks (solutions stubbed) in dist/student/
	$(PY) -m course student

submission: $(STAMP)  ## one Moodle zip of all your notebooks: make submission NAME=ann [DIR=dist/student] [EXECUTE=1]; one notebook: NB=...
	$(PY) -m course submit $(if $(NB),"$(NB)") $(if $(DIR),--dir "$(DIR)") $(if $(NAME),--name "$(NAME)") $(if $(EXECUTE),--execute)

grade: $(STAMP)  ## grade a Moodle download: make grade SUBMISSIONS=download.zip WORKSHEET=worksheet.csv [OUT=outputs/grading] [POINTS=file] [NO_ISOLATION=1]
	$(PY) -m course grade --submissions "$(SUBMISSIONS)" --worksheet "$(WORKSHEET)" $(if $(OUT),--out "$(OUT)") $(if $(POINTS),--points "$(POINTS)") $(if $(KIT_DIR),--kit-dir "$(KIT_DIR)") $(if $(NO_ISOLATION),--no-isolation)

models-sd: $(STAMP)  ## download sd-turbo and its tiny decoder for `make serve ENGINE=diffusers` (~2.6 GB, needs internet); OPENVINO=1 [INT8=1]: then convert it to OpenVINO (faster on a CPU)
	$(PY) -m sdserver --engine diffusers --download $(if $(MODEL),--model "$(MODEL)") $(if $(CONFIG),--config "$(CONFIG)")
	$(if $(OPENVINO),$(PY) -m sdserver --engine diffusers --convert-openvino $(if $(INT8),--int8) $(if $(MODEL),--model "$(MODEL)") $(if $(CONFIG),--config "$(CONFIG)"))

bench: $(STAMP)  ## benchmarks: print ratios measured side by side
	$(PY) -m bench

clean:  ## remove .venv, caches and generated outputs (keeps .env)
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info outputs dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
