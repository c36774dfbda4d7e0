# Two commands on a fresh machine with only python3 and pip (plus make):
#   make demo   runs an example pipeline on the embedded emulator
#   make test   runs the test suite
# uv is installed into .tools/ when it is not on PATH; it then builds .venv from uv.lock.

UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN = $(UV) run --frozen
# Trust the platform's certificate store (networks with their own CA), as pip does.
export UV_SYSTEM_CERTS ?= 1

.PHONY: demo test check lint typecheck layers bench sync clean

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv>=0.9"

sync: $(UV)
	$(UV) sync --frozen --quiet

demo: sync
	$(RUN) llmflow validate pipelines/support-triage.yaml --policy policies/default.yaml
	$(RUN) llmflow plan pipelines/support-triage.yaml --policy policies/default.yaml
	$(RUN) llmflow run pipelines/support-triage.yaml --policy policies/default.yaml \
		--backend emulator --state-dir .llmflow/demo
	$(RUN) llmflow report --last --state-dir .llmflow/demo

test: sync
	$(RUN) pytest

lint: sync
	$(RUN) ruff check llmflow tests bench
	$(RUN) ruff format --check llmflow tests bench

typecheck: sync
	$(RUN) mypy

layers: sync
	$(RUN) lint-imports

check: lint typecheck layers

bench: sync
	$(RUN) python bench/plan_scale.py
	$(RUN) python bench/emulator_throughput.py

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache .hypothesis .llmflow
