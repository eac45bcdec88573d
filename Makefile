# Two commands set everything up on a fresh machine:
#   make demo   venv + install + embedded PostgreSQL + ingest the example audio + summary
#   make test   venv + install with the test and clap extras + Chromium and Citus (root) + lint +
#               mypy + the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TESTSTAMP := $(VENV)/.installed-test

.PHONY: install demo test test-fast system-deps hoplite-venv check lint typecheck docs bench bench-peer bench-peers soak soak-tests format clean db-stop

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The test suite also runs the CLAP code path (msclap + torch, ~6 GB) with a tiny random model,
# Whisper, Resemblyzer and MusiCNN (their weights ship in their wheels) and the web page.
# Resemblyzer and musicnn declare dependencies that cannot install here (webrtcvad, TensorFlow
# and numpy<1.17): they go in without them; the extras list what they really need.
$(TESTSTAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,clap,speech,voice,music,web,hoplite]'
	$(BIN)/python -m pip install --quiet --no-deps resemblyzer==0.1.4 musicnn==0.1.0
	touch $(TESTSTAMP)

install: $(STAMP)

demo: install
	$(BIN)/soundscape db start
	$(BIN)/soundscape sensors add demo-forest --site "Example Reserve" --quadrant N \
		--lat 35.4244 --lon -120.7463 --timezone America/Los_Angeles --update > /dev/null
	$(BIN)/soundscape ingest examples/audio/xc563936.mp3 --sensor demo-forest \
		--model birdnet,spectral --start-time 2024-05-01T05:30:00-07:00
	$(BIN)/soundscape ingest examples/audio --sensor demo-forest --model birdnet,spectral
	$(BIN)/soundscape stats
	$(BIN)/soundscape recordings list
	$(BIN)/soundscape labels top --limit 10
	@echo "--- search by text (BirdNET labels), merged into events"
	$(BIN)/soundscape search "dark-eyed junco" --events -n 5
	@echo "--- search by an audio example (a fire-truck siren)"
	$(BIN)/soundscape search --audio examples/audio/firetruck.ogg -n 5
	@echo "--- search within a local time window"
	$(BIN)/soundscape search birdsong --time 05:30-05:31 --events -n 5
	$(BIN)/soundscape concepts add siren --text siren --replace > /dev/null
	$(BIN)/soundscape concepts list

# Everything CI runs: the system parts the tests need (Chromium, the Citus build: root,
# idempotent), perch-hoplite's own venv, lint, type check of the library, the whole test suite.
test: $(TESTSTAMP) system-deps hoplite-venv check
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

system-deps:
	bash scripts/test-system-deps.sh

# The inner loop: everything but the tests marked slow (3.6 minutes on 2 cores at load 8 under
# a soak and other sessions, down from 6.4; the reserve is ingested once per session, the test
# server's data is in /dev/shm when it has room, collecting skips importing torch).
test-fast: $(TESTSTAMP)
	$(BIN)/python -m pytest -q -m "not slow"

check: lint typecheck

# docs/cli.md, the CLI reference, from the commands' --help (tests/test_docs_cli.py checks it).
docs: install
	$(BIN)/python scripts/cli_docs.py --write

typecheck: install
	$(BIN)/mypy

# Benchmarks (about two hours; not part of CI). Results: bench/results/*.json, docs/benchmarks.md.
bench: install
	$(BIN)/python bench/ingest.py --minutes 60 --repeat 3 --memory
	$(BIN)/python bench/search.py --n 1000000 --sets realistic --index halfvec,vector
	$(BIN)/python bench/search.py --n 100000 --sets uniform
	$(BIN)/python bench/month_partitions.py --n 1000000

# perch-hoplite in a venv of its own (it pins numpy>=2, librosa>=0.11, which clash with the
# clap extra): the peer of bench-peer and of tests/test_hoplite.py (tests/hoplite_peer.py runs
# in it; without it those tests skip). Made once, from the registry (~1.3 GB, ~2 min). Beside
# it, perch-hoplite 0.1.3 (what BirdNET-Analyzer's embeddings command writes with) in a folder
# of its own, for the test of databases made before hoplite 1.0.
HOPLITE       ?= .venv-hoplite
HOPLITESTAMP  := $(HOPLITE)/.installed
$(HOPLITESTAMP):
	test -x $(HOPLITE)/bin/python || $(PYTHON) -m venv $(HOPLITE)
	$(HOPLITE)/bin/python -m pip install --quiet 'perch-hoplite>=1.0.2,<2'
	touch $(HOPLITESTAMP)

$(HOPLITE)/hoplite-0.1/.installed: $(HOPLITESTAMP)
	$(HOPLITE)/bin/python -m pip install --quiet --no-deps --target $(HOPLITE)/hoplite-0.1 \
		'perch-hoplite==0.1.3'
	touch $@

hoplite-venv: $(HOPLITESTAMP) $(HOPLITE)/hoplite-0.1/.installed

# soundscape against perch-hoplite in one interleaved run at 100k realistic windows, with the
# ratio table (issue 15).
BENCH_DB ?= /tmp/soundscape-bench-peer-db
bench-peer: install hoplite-venv
	$(BIN)/python bench/search_peer.py --n 100000 --queries 40 --home $(BENCH_DB) --hoplite $(HOPLITE)/bin/python
	$(BIN)/python bench/search_profile.py --n 100000 --home $(BENCH_DB)

# soundscape against LanceDB, qdrant-edge, DuckDB+vss and perch-hoplite in one run on the real-audio
# BirdNET set tiled to PEERS_N windows (issue 28; docs/benchmarks.md "Peers side by side"). Each
# store gets its own venv under PEERS_VENVS (they pin other numpy/pyarrow versions than ours).
PEERS_VENVS ?= /work/venvs
PEERS_N     ?= 100000
$(PEERS_VENVS)/%/.installed:
	test -x $(PEERS_VENVS)/$*/bin/python || $(PYTHON) -m venv $(PEERS_VENVS)/$*
	$(PEERS_VENVS)/$*/bin/pip install --quiet $(PEERS_PKGS_$*)
	touch $@
PEERS_PKGS_lancedb := lancedb==0.40.0 numpy pyarrow
PEERS_PKGS_qdrant  := qdrant-edge-py==0.9.0 numpy
PEERS_PKGS_duckdb  := duckdb==1.5.5 duckdb-extension-vss==1.5.5 numpy pyarrow
PEERS_PKGS_hoplite := perch-hoplite==1.0.2
bench-peers: install $(foreach v,lancedb qdrant duckdb hoplite,$(PEERS_VENVS)/$(v)/.installed)
	nice -n 19 $(BIN)/python bench/peers.py --n $(PEERS_N) --venvs $(PEERS_VENVS)

# The soak under faults (issue 24; not part of CI, a short version is tests/test_soak.py, slow):
# SOAK_HOURS of field audio through `watch` and 3 workers while faults are injected and 20
# clients search; the ledger goes to bench/results/soak-*.json (docs/soak.md). Runs as root
# for the disk-full fault (a tmpfs tablespace); needs the web extra (serve); about 2.5 min of
# drops per hour of audio.
SOAK_HOURS ?= 24
soak: $(TESTSTAMP)
	$(BIN)/python bench/soak.py --hours $(SOAK_HOURS)

# The hour-long soak and the Citus soak as tests (tests/test_soak_long.py; ~30 min)
soak-tests: $(TESTSTAMP) system-deps
	SOUNDSCAPE_SOAK=1 $(BIN)/python -m pytest -q tests/test_soak_long.py

lint: install
	$(BIN)/ruff check src tests migrations bench scripts
	$(BIN)/ruff format --check src tests migrations bench scripts

format: install
	$(BIN)/ruff format src tests migrations bench scripts
	$(BIN)/ruff check --fix src tests migrations bench scripts

db-stop:
	-$(BIN)/soundscape db stop

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache src/*.egg-info
