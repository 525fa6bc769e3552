# bombom-pipe: `make demo` shows the delivery path on a throwaway database; `make test` tests it.
# Debian's own python3 builds the venvs: the Postfix pipe user must be able to run them.

PYTHON  ?= /usr/bin/python3
VENV    ?= .venv
PIP      = $(VENV)/bin/pip
PYTEST_ARGS ?=

APT_PACKAGES = postgresql python3-venv util-linux

.PHONY: demo test lint bench fuzz deps clean

demo: $(VENV)/.installed
	$(VENV)/bin/bombom demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check bombom_pipe tests benchmarks
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check bombom_pipe tests benchmarks

# Longer fuzzing of the whole delivery than CI's bounded run.
FUZZ_EXAMPLES ?= 5000
fuzz: $(VENV)/.installed
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest tests/test_fuzz.py -k never_raises -q

bench: $(VENV)/.installed
	$(VENV)/bin/pytest benchmarks -s

# Install what is missing from Debian's packages (needs root; skipped when all is there).
deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v setpriv >/dev/null || missing="$$missing util-linux"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache
