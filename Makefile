# bombom-pipe: `make demo` shows the delivery path on a throwaway database; `make test` tests it.
# Debian's own python3 builds the venvs: the Postfix pipe user must be able to run them.

PYTHON  ?= /usr/bin/python3
VENV    ?= .venv
PIP      = $(VENV)/bin/pip
PYTEST_ARGS ?=

.PHONY: demo test lint bench fuzz deps clean

demo: $(VENV)/.installed
	$(VENV)/bin/python -m tests.demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check bombom_pipe tests benchmarks
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check bombom_pipe tests benchmarks

# Longer fuzzing of the whole delivery than CI's bounded run.
FUZZ_EXAMPLES ?= 5000
fuzz: $(VENV)/.installed
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest tests/test_fuzz.py -k never_raises -q

# The delivery routes through a real Postfix and a throwaway PostgreSQL (as root), one table;
# then the parser's and one delivery's numbers. Numbers, not assertions.
bench: $(VENV)/.installed
	$(VENV)/bin/python -m benchmarks.modes
	$(VENV)/bin/python -m benchmarks.raw_store
	$(VENV)/bin/pytest benchmarks -s -q

# Install what is missing from Debian's packages (needs root; skipped when all is there). As root
# also Postfix with its pgsql tables, for the tests' private instance (the host's own Postfix stays
# unconfigured: "No configuration"), logrotate, which checks the installed snippet, and
# Prometheus (promtool checks the alert rules; the tests run their own server on 127.0.0.1),
# without its recommended node exporter and with its own service neither started nor enabled.
deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v setpriv >/dev/null || missing="$$missing util-linux"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ "$$(id -u)" = 0 ]; then \
	  [ -x /usr/sbin/postconf ] || missing="$$missing postfix"; \
	  [ -e /usr/lib/postfix/postfix-pgsql.so ] || missing="$$missing postfix-pgsql"; \
	  command -v logrotate >/dev/null || [ -x /usr/sbin/logrotate ] || missing="$$missing logrotate"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  [ -x /usr/sbin/opendkim ] || missing="$$missing opendkim"; \
	  [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing="$$missing iproute2"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi; \
	if [ "$$(id -u)" = 0 ] && ! command -v promtool >/dev/null; then \
	  echo "installing: prometheus (its service stays off: the tests start their own on 127.0.0.1)"; \
	  rc=/usr/sbin/policy-rc.d; made=""; \
	  [ -e $$rc ] || { printf '#!/bin/sh\nexit 101\n' > $$rc; chmod 755 $$rc; made=1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends prometheus; status=$$?; \
	  [ -z "$$made" ] || rm -f $$rc; \
	  systemctl disable --now prometheus.service >/dev/null 2>&1 || \
	    rm -f /etc/systemd/system/multi-user.target.wants/prometheus.service; \
	  [ $$status = 0 ]; \
	fi

$(VENV)/.installed: pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# -- Postfix in front (as root): docs/postfix.md --------------------------------------------------
# make install   venv in PREFIX/venv, bombom on PATH, user PIPE_USER, spool, CONFIG_FILE,
#                Postfix settings; MODE=push (default: bombom-deliver alone), worker (+ the
#                bombom-worker service), pull (virtual(8) writes a Maildir bombom-worker drains),
#                lmtp (lmtp(8) hands mail to bombom-worker)
# make db        the database, its owner role, schema and the two roles (as the local postgres
#                superuser), root's admin config; checks the recipient lookup ("lookup OK")
# make uninstall put back the Postfix settings install changed; refused while mail for the
#                service domains is queued, unless FORCE=1 (docs/postfix.md)
# Settings: `make install DOMAINS=bombom.news MODE=worker ...`; every install saves them in
# /etc/bombom/install.env, and a later install, db or uninstall without a variable uses the saved
# value (defaults: postfix-config/install.sh). make passes on only what is given: nothing here
# sets a default that would override a saved one. Passwords: BOMBOM_DELIVERY_PASSWORD and
# BOMBOM_LOOKUP_PASSWORD (and BOMBOM_ADMIN_PASSWORD) in the environment, never here; a later
# install keeps them.
.PHONY: install uninstall db

install:
	postfix-config/install.sh install

uninstall:
	postfix-config/install.sh uninstall

db:
	postfix-config/install.sh init-db
