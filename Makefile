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

# hard.csv is written last, so a corpus from before hard sentences is made again.
$(CORPUS)/hard.csv: $(INSTALLED)
	$(BIN)/python -m train.corpus --out $(CORPUS) --n 100

# The study, then its best model speaks three sentences it never heard, against the
# corpus's own renderings of them: does it stop by itself, and at the right length?
demo: $(CORPUS)/hard.csv
	$(BIN)/python -m tuner_core tune --config config/demo.yaml --devices cpu:2
	@echo "The study's best model (its latest registered version) on held-out sentences:"
	$(BIN)/python -m train.synthesize --checkpoint models:/tacotron2_demo/latest \
		--tracking-uri sqlite:///$(CURDIR)/$(STATE)/demo/mlflow.db \
		--held-out $(CORPUS) --out $(STATE)/demo/held_out
	@echo "The same model judged as a listener would (gate, length, CER, MCD, skips, repeats):"
	$(BIN)/python -m train.evaluate --checkpoint models:/tacotron2_demo/latest \
		--tracking-uri sqlite:///$(CURDIR)/$(STATE)/demo/mlflow.db --held-out $(CORPUS)

lint: $(INSTALLED)
	$(BIN)/ruff check .

# Two test processes at once: most tests wait on servers, heartbeats and outages rather than
# compute, so two share the two cores of a small machine (tests/conftest.py gives torch one
# thread each). A file's tests stay together, as they share its fixtures.
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(STATE)
