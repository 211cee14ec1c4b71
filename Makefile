# The two commands a fresh machine needs: `make run` and `make test`.
# Both create the virtual environment on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean lock

# The versions the container image ships (requirements.lock), so the tests run what ships.
$(STAMP): pyproject.toml requirements.lock
	@./scripts/system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint requirements.lock -e '.[test,dev]'
	@# swagger-ui-bundle (Swagger UI 4, in venvs made before) and its successor swagger-ui-bundle-v2 share
	@# one import name: removing the old one removes shared files, so the new one is installed again.
	@if $(BIN)/python -m pip show --quiet swagger-ui-bundle >/dev/null 2>&1; then \
		$(BIN)/python -m pip uninstall --quiet --yes swagger-ui-bundle && \
		$(BIN)/python -m pip install --quiet --force-reinstall --no-deps --constraint requirements.lock swagger-ui-bundle-v2; \
	fi
	@touch $(STAMP)

# Real WhatsApp (neonize) by default; `WA_ENGINE=sim make run` for the simulated network.
run: $(STAMP)
	$(BIN)/wa-worker serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Figures come from here, never from timed assertions in tests.
# bench/run.py prints one table and writes bench/results/bench.json (it also runs bench/failover.py).
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The versions the container image installs (Containerfile: pip install --constraint requirements.lock).
# Direct-URL installs (" @ ") cannot be pinned portably and are left out; the packaging test checks
# that every run-time dependency is pinned.
lock: $(STAMP)
	( echo "# pip freeze of the tested environment: \`make lock\` regenerates it."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v ' @ ' ) > requirements.lock

# What CI checks before the tests (.ci/run): lint, formatting, types (tests included).
LINTED := supervisor session_proc transport common tests bench
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
