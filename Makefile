# mho: two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
MHO := $(VENV)/bin/mho
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages: synthesizers and voices for the corpus, the text sources, and what
# KenLM's lmplz needs to build (only for `make lm`).
DEBIAN_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k \
	festvox-us-slt-hts sox libsox-fmt-all wordnet-base fortunes
KENLM_BUILD_PACKAGES := cmake g++ libboost-program-options-dev libboost-system-dev \
	libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev

CORPUS := data/corpus
HOURS := 20

.PHONY: setup demo test lint debian corpus kenlm lm testsets models clean

setup: $(VENV)/.installed debian

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Installs only what is missing, so repeated runs cost one dpkg query.
debian:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The peer recognizer and the shipped 8-bit Conformers, on both shipped test sets.
DEMO_MODELS := $(sort $(patsubst mho/assets/models/%.pt,%,$(wildcard mho/assets/models/*-w8.pt)))
demo: setup
	$(MHO) eval pocketsphinx $(DEMO_MODELS) --data flite-slt --data festival-slt

# kenlm: the LM-building tests run lmplz for real (compiled once, about 1-2 minutes).
test: setup kenlm
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check mho tests

# ---- recipes: rebuild the shipped assets from scratch (not part of setup) ----

corpus: setup
	$(MHO) data build $(CORPUS) --hours $(HOURS)

KENLM_BIN := tools/kenlm/bin

# KenLM's lmplz + build_binary, compiled once from the PyPI kenlm sdist (only for `make lm`).
kenlm: $(KENLM_BIN)/lmplz
$(KENLM_BIN)/lmplz:
	@missing=$$(for p in $(KENLM_BUILD_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; fi
	recipes/build_kenlm.sh

# The shipped word LM: 4-gram on the TRAIN sentences only -> mho/assets/lm.
lm: setup kenlm
	$(MHO) data lm --out mho/assets/lm

# The shipped test sets: 50 utterances of each held-out voice, cut from the corpus.
TESTSETS := mho/assets/testsets
testsets: corpus
	$(MHO) data subset $(CORPUS)/test-flite-slt.jsonl --count 50 -o $(TESTSETS)/flite-slt.jsonl
	$(MHO) data subset $(CORPUS)/test-festival-slt.jsonl --count 50 -o $(TESTSETS)/festival-slt.jsonl

# The shipped Conformer-CTC models: 5 positional-encoding variants x {8, 4}-bit QAT.
models: corpus
	recipes/train_models.sh runs/models
	recipes/pack_models.sh runs/models

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
