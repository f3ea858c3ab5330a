# mho: two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
MHO := $(VENV)/bin/mho
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages: synthesizers and voices for the corpus and the text sources (only for
# building corpora and for `make test`, whose tests run them), and what KenLM's lmplz needs
# to build (for `make lm` and `make test`).
DEBIAN_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k \
	festvox-us-slt-hts sox libsox-fmt-all wordnet-base fortunes
KENLM_BUILD_PACKAGES := cmake g++ libboost-program-options-dev libboost-system-dev \
	libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev

CORPUS := data/corpus
HOURS := 20

.PHONY: setup demo test test-slow browser lint debian debian-text corpus features waveforms \
	lpa-models lpa-conformer lpa-conformer-models kenlm lm lm-general lm-pocketsphinx lm-report testsets models models-diverse models-finetune models-finetuned models-rescore clean

# Evaluating, simulating and exporting need only the Python environment.
setup: $(VENV)/.installed

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

# The peer recognizer, the paper's baseline Conformer (sinusoidal+linear PE, 8- and 4-bit
# weights) and the baseline fine-tuned on every English voice (8 and 4 bits), on both
# shipped test sets.
DEMO_MODELS := $(patsubst mho/assets/models/%.pt,%,$(wildcard \
	mho/assets/models/conformer-sinusoidal-linear-w8.pt mho/assets/models/conformer-sinusoidal-linear-w4.pt \
	mho/assets/models/conformer-sinusoidal-linear-w8-diverse.pt \
	mho/assets/models/conformer-sinusoidal-linear-w4-diverse.pt))
demo: setup
	$(MHO) eval pocketsphinx $(DEMO_MODELS) --data flite-slt --data festival-slt

# kenlm: the LM-building tests run lmplz for real (compiled once, about 1-2 minutes); the
# corpus tests run the synthesizers. lint-imports keeps the layers (pyproject.toml).
test: setup debian kenlm
	$(VENV)/bin/lint-imports
	MHO_KENLM_BIN=$(CURDIR)/$(KENLM_BIN) $(PY) -m pytest

# The slow tests: the web page in a real headless browser (Debian's chromium and its driver,
# installed when missing), the baseline exported and served, SIGTERM on a server process.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@missing=$$(for p in $(BROWSER_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi

test-slow: setup debian kenlm browser
	MHO_KENLM_BIN=$(CURDIR)/$(KENLM_BIN) $(PY) -m pytest -m slow

lint: setup
	$(VENV)/bin/ruff check mho tests recipes
	$(VENV)/bin/lint-imports

# ---- recipes: rebuild the shipped assets from scratch (not part of setup) ----

corpus: setup debian
	$(MHO) data build $(CORPUS) --hours $(HOURS)

KENLM_BIN := tools/kenlm/bin

# KenLM's lmplz + build_binary, compiled once from the PyPI kenlm sdist (only for `make lm`).
kenlm: $(KENLM_BIN)/lmplz
$(KENLM_BIN)/lmplz:
	@missing=$$(for p in $(KENLM_BUILD_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; fi
	recipes/build_kenlm.sh

# The shipped word LM: 4-gram on the TRAIN sentences only -> mho/assets/lm.
lm: setup debian kenlm
	$(MHO) data lm --out mho/assets/lm

# General English text for the LM (mho/data/general_text.py): GCIDE's literary quotations
# (dict-gcide, GPL-2+) and the Jargon File (jargon-text, public domain). docs/lm.md.
DEBIAN_TEXT_PACKAGES := dict-gcide jargon-text
debian-text:
	@missing=$$(for p in $(DEBIAN_TEXT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The corpus TRAIN split plus the general text, as an LM directory for `mho eval --lm`.
LM_GENERAL := data/lm-general
lm-general: setup debian debian-text kenlm
	$(MHO) data lm --sources corpus,gcide,jargon --unk held-out --out $(LM_GENERAL)

# PocketSphinx's own English trigram LM (from the pocketsphinx package) as an LM directory:
# mho's models decoded with the LM the peer decodes with (docs/lm.md).
LM_POCKETSPHINX := data/lm-pocketsphinx
lm-pocketsphinx: setup kenlm
	$(MHO) data lm-pocketsphinx --out $(LM_POCKETSPHINX)

# Perplexities of the shipped and the general LM, and the 50-sentence general test sets
# read by the held-out voices (docs/lm.md).
lm-report: lm-general
	$(PY) recipes/lm_perplexity.py shipped $(LM_GENERAL)
	$(PY) recipes/general_text_set.py data/general-text 50

# The shipped test sets: 50 utterances of each held-out voice, cut from the corpus.
TESTSETS := mho/assets/testsets
testsets: corpus
	$(MHO) data subset $(CORPUS)/test-flite-slt.jsonl --count 50 -o $(TESTSETS)/flite-slt.jsonl
	$(MHO) data subset $(CORPUS)/test-festival-slt.jsonl --count 50 -o $(TESTSETS)/festival-slt.jsonl

# Every shipped model's card scored again with the current decoders and LM, the model files
# kept byte for byte (needs the corpus's 400-utterance test sets: `make corpus`).
models-rescore: setup
	MHO=$(MHO) CORPUS=$(CORPUS) recipes/rescore_models.sh

# Feature archives (8-bit log-mel + labels, 0.6 GB) to train from without the audio, e.g.
# on a GPU machine that has no synthesizers (see recipes/train_models.sh).
features: corpus
	$(MHO) data features $(CORPUS)/train.jsonl -o data/features/train.pt
	$(MHO) data features $(CORPUS)/dev.jsonl --count 200 -o data/features/dev.pt

# The shipped Conformer-CTC models: 5 positional-encoding variants x {8, 4}-bit QAT, with
# the -gpu presets (device = "auto": a GPU when torch sees one; 15 min on one H100, days
# on 2 CPU cores). LANES variants train side by side.
LANES ?= 5
# Waveform archives for the wav2vec2-style LPA host: 7 h to train it, another 1.2 h to
# convert it, 200 dev utterances (8-bit mu-law; 410, 70 and 8 MB).
waveforms: corpus
	$(MHO) data waveforms $(CORPUS)/train.jsonl --hours 7 --seed 0 -o data/waveforms/train.pt
	$(MHO) data waveforms $(CORPUS)/train.jsonl --hours 1.2 --seed 1 -o data/waveforms/convert.pt
	$(MHO) data waveforms $(CORPUS)/dev.jsonl --count 200 -o data/waveforms/dev.pt

# The LPA study (docs/lpa.md): teacher, MSE diagnostic, conversions in both orders, scores.
# On one H100: 7 min training, 2 min diagnostic, 2.6 min per conversion.
lpa-models: waveforms
	MHO="$(MHO)" recipes/lpa.sh train
	MHO="$(MHO)" recipes/lpa.sh convert
	MHO="$(MHO)" recipes/lpa.sh report

# LPA inside the Conformer (docs/lpa.md): features, sweep, conversions in both orders, scores.
lpa-conformer: corpus
	for stage in data sweep convert eval; do \
	  MHO="$(MHO)" CORPUS="$(CORPUS)" recipes/lpa_conformer.sh $$stage || exit 1; done

# The shipped LPA Conformers conformer-sinusoidal-linear-w8-lpa{3,6} (docs/lpa.md): a 2 h
# corpus (seed 0: the shipped test sentences stay out), 2,400 of its utterances, 60 fit,
# 60 co-adaptation and 90 fine-tuning steps per block, all 6 blocks in MSE order and 3 in
# naive order, every depth scored; MSE depths 3 and 6 packed into mho/assets/models.
LPA_CONFORMER := CORPUS=data/corpus-2h RUNS=runs/lpa-conformer-2h COUNT=2400 STEPS=60 \
	COADAPT=60 FINETUNE=90 MSE_DEPTH=6 NAIVE_DEPTH=3 SHIP="3 6"
lpa-conformer-models: setup debian
	[ -f data/corpus-2h/train.jsonl ] || $(MHO) data build data/corpus-2h --hours 2 --seed 0 --set train
	for stage in data sweep convert eval ship; do \
	  $(LPA_CONFORMER) MHO="$(MHO)" recipes/lpa_conformer.sh $$stage || exit 1; done

# Issue 18: diverse voices + augmentation, an ablation of data recipes side by side, then
# QAT of the full recipe (recipes/gpu/lanes.py; docs/diverse-training.md). GPU: MODE=full
# (sized for a 9-minute session); 2-core CPU: MODE=cpu in resumable steps of STOP seconds.
MODE ?= cpu
STOP ?= 3600
models-diverse: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) recipes/gpu/lanes.py --mode $(MODE) \
		--work runs/issue18-work --out runs/issue18-out --stop-after $(STOP)
	$(PY) recipes/gpu/score.py runs/issue18-out -o runs/issue18

# A shipped Conformer fine-tuned on every English voice, half of it voice-converted
# (recipes/finetune_diverse.sh, docs/diverse-training.md); BASE=... picks the model.
models-finetune: setup debian lm-general
	BASE="$(BASE)" MHO="$(MHO)" recipes/finetune_diverse.sh data
	BASE="$(BASE)" MHO="$(MHO)" recipes/finetune_diverse.sh train
	BASE="$(BASE)" MHO="$(MHO)" recipes/finetune_diverse.sh score

# The shipped fine-tuned family (docs/diverse-training.md, docs/lpa.md): the 8-bit baseline
# fine-tuned on every English voice (3 epochs), the 4-bit model trained on from it (6 epochs
# at 4 bits, peak LR 2e-4), and its LPA Conformer (3 blocks in MSE order: 60 sweep, 120 fit,
# 120 co-adaptation and 240 fine-tuning steps per block on all 8,132 training utterances,
# then 2 epochs as the fine-tuning trained, peak LR 1e-4), and the no-PE variant fine-tuned
# like the 8-bit baseline and then at 4 bits like it. Cards are also scored on the
# 400-utterance test sets of `make corpus`. About 4.3 h on one CPU core; every step resumes.
DIVERSE := conformer-sinusoidal-linear-w8-diverse
models-finetuned: setup debian lm-general corpus
	for stage in data train ship; do \
	  BASE=conformer-sinusoidal-linear-w8 MHO="$(MHO)" recipes/finetune_diverse.sh $$stage \
	  || exit 1; done
	for stage in train ship; do \
	  BASE=$(DIVERSE) BITS=4 EPOCHS=6 LR=2e-4 NAME=conformer-sinusoidal-linear-w4-diverse \
	  MHO="$(MHO)" recipes/finetune_diverse.sh $$stage || exit 1; done
	for stage in data sweep convert tune ship; do \
	  BASE=$(DIVERSE) CORPUS=data/diverse DEV=data/diverse/all-1/dev.jsonl \
	  RUNS=runs/lpa-diverse COUNT=8132 SWEEP_STEPS=60 STEPS=120 COADAPT=120 FINETUNE=240 \
	  MSE_DEPTH=3 NAIVE_DEPTH=0 SHIP=3 TESTS=data/corpus MHO="$(MHO)" \
	  recipes/lpa_conformer.sh $$stage || exit 1; done
	for stage in train ship; do \
	  BASE=conformer-none-w8 MHO="$(MHO)" recipes/finetune_diverse.sh $$stage || exit 1; done
	for stage in train ship; do \
	  BASE=conformer-none-w8-diverse BITS=4 EPOCHS=6 LR=2e-4 NAME=conformer-none-w4-diverse \
	  MHO="$(MHO)" recipes/finetune_diverse.sh $$stage || exit 1; done

models: features
	FLOAT_PRESET=conformer-small-gpu QAT_PRESET=conformer-small-qat-gpu LANES=$(LANES) \
		recipes/train_models.sh runs/models
	recipes/pack_models.sh runs/models

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
