# Smart Tuner: `make demo` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
STATE := .state
CORPUS := $(STATE)/demo_corpus

.PHONY: demo test lint venv clean

venv: $(INSTALLED)

$(INSTALLED): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

$(CORPUS)/metadata.csv: $(INSTALLED)
	$(BIN)/python -m train.corpus --out $(CORPUS) --n 100

demo: $(CORPUS)/metadata.csv
	$(BIN)/python -m tuner_core tune --config config/demo.yaml

lint: $(INSTALLED)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(STATE)
