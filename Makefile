# The two commands of README.md. Both run tools/setup.sh first, so a fresh Debian machine
# needs nothing else (run them as root: the lab and the netns tests create namespaces).
# `make lint` and `make unit` need neither root nor apt: they set up the venv alone.
.PHONY: demo test setup venv lint unit fuzz bench bench-core bench-lrt bench-inspect bench-snat

setup:
	@tools/setup.sh

venv:
	@tools/setup.sh --venv-only

demo: setup
	.venv/bin/python netns-lab/demo.py $(ARGS)

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

unit: venv
	.venv/bin/python -m pytest -p no:cacheprovider tests/unit $(ARGS)

# FUZZ_SECONDS bounds the fuzzing run that ends `make test` (0 skips it: for quick local runs)
FUZZ_SECONDS ?= 60

test: setup lint
	.venv/bin/python -m pytest -p no:cacheprovider $(ARGS)
	@if [ "$(FUZZ_SECONDS)" != 0 ]; then tools/fuzz.sh $(FUZZ_SECONDS); fi

fuzz:
	tools/fuzz.sh $(FUZZ_SECONDS)

bench: setup
	.venv/bin/python netns-lab/bench.py $(ARGS)

bench-core: setup
	.venv/bin/python netns-lab/bench_core.py $(ARGS)

bench-lrt: setup
	.venv/bin/python netns-lab/bench_lrt.py $(ARGS)

bench-inspect: setup
	.venv/bin/python netns-lab/bench_inspect.py $(ARGS)

bench-snat: setup
	.venv/bin/python netns-lab/bench_snat.py $(ARGS)
