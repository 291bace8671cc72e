# Two commands matter: `make run` (sandbox) and `make test`. Both set up what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-cluster lint bench install clean chromium espeak demo-agent test-typescript

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP) espeak
	$(BIN)/bridge sandbox $(ARGS)

# The demo voice agent (bridge/demo/agent.py) for the sandbox's default base URL; run it beside `make run`.
demo-agent: $(STAMP) espeak
	$(BIN)/bridge demo-agent $(ARGS)

# The demo agent speaks its greeting with Debian's espeak-ng when it is there (else a shipped WAV).
espeak:
	@if ! command -v espeak-ng >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y espeak-ng) \
	      || echo "could not install espeak-ng: the demo agent uses its shipped WAV"; \
	  else \
	    echo "espeak-ng missing and not root: the demo agent uses its shipped WAV (apt-get install espeak-ng)"; \
	  fi; \
	fi

# The console's browser test uses Debian's chromium; Playwright never downloads a browser here.
CHROMIUM := /usr/bin/chromium

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else \
	    echo "$(CHROMIUM) missing and not root: the browser test will be skipped (apt-get install chromium)"; \
	  fi; \
	fi

# make test builds the real switch first when its sources are there (a finished build is a no-op),
# so the real-switch tier (tests/freeswitch) runs; without sources or a build it skips, saying how
# to get one, except under CI=true, where it fails.
FREESWITCH_SRC ?= $(abspath ../shared/freeswitch-src)

test: $(STAMP) chromium espeak freeswitch-if-possible test-typescript
	$(BIN)/ruff check bridge tests $(wildcard bench)
	FREESWITCH_PREFIX=$(FREESWITCH_PREFIX) $(BIN)/pytest -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-cluster

# The same tests again on a real 3-master Redis Cluster (docs/redis-cluster.md): BRIDGE_TEST_REDIS=cluster
# makes the `redis_url` fixture (so `redis` and every sandbox) the `redis_cluster_url` one, a cluster
# started from the tests' redis-server (REDIS_CLUSTER_URL: use that one). Every module whose code
# reads or writes Redis beyond one key: the stores, the control endpoint (admission, idempotency,
# rate limit, verbs), webhooks, leads and campaigns, callbacks and their scheduler, supervision
# (pub/sub between two instances), monitors, conferences, tokens, session limits, the e2e flows,
# several bridges on one Redis (test_scale_out, and test_scale_out_kill: `bridge run` processes on a
# redis+cluster:// URL, one kill -9ed), the metrics' Redis counts,
# and the API fuzzed on real resources (schemathesis: every route, so any cross-slot command shows).
# Left out: what has no Redis in it (ESL, simulator, encoder, lab/conf files, TypeScript), the
# browser and demo-agent tests (their Redis use is the routes above), the embedded redis-server's
# own tests (a single server by design), and test_control_redis (single-server connection-pool
# checks; tests/test_redis_cluster.py, in the first run, has the cluster's own).
CLUSTER_TESTS := test_store test_leads_store test_control_units test_control_errors test_control_verbs \
  test_control_idempotency test_control_revoke_token test_control_sdk_verbs test_callbacks_e2e \
  test_callbacks_scheduler test_leads_api test_leads_e2e test_leads_verbs test_campaigns_update_bulk \
  test_webhooks_api test_webhooks_delivery test_foundation_e2e test_supervision test_monitor_verbs \
  test_conference_verbs test_session_timeout test_token_life test_transfer_outcomes test_recordings_api \
  test_voice_agents_api test_shutdown test_sdk_every_method test_hardening_fields test_hardening_injection \
  test_dtmf_relay test_request_bounds test_openapi test_schemathesis test_scale_out test_scale_out_kill \
  test_metrics test_store_batch

test-cluster: $(STAMP)
	BRIDGE_TEST_REDIS=cluster $(BIN)/pytest -q $(patsubst %,tests/%.py,$(CLUSTER_TESTS)) $(PYTEST_ARGS)

# The TypeScript SDK (sdk/typescript): npm ci (typescript, pinned, is its only dev dependency
# besides @types/node), npm pack (prepack builds with tsc; the tarball must carry dist/*.d.ts),
# then node --test, whose tests spawn their own bridge sandboxes. make test runs it when node is
# there; Debian's nodejs and npm are installed when root and missing; under CI=true they must be there.
test-typescript: $(STAMP)
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; \
	  fi; \
	fi; \
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  if [ "$$CI" = true ]; then echo "CI=true: node and npm are needed for sdk/typescript's tests"; exit 1; fi; \
	  echo "node/npm missing and not root: sdk/typescript's tests skipped (apt-get install nodejs npm)"; exit 0; \
	fi; \
	cd sdk/typescript && npm ci --no-audit --no-fund && \
	  pack=$$(mktemp -d) && npm pack --silent --pack-destination "$$pack" >/dev/null && \
	  tar -tzf "$$pack"/yotel-bridge-*.tgz | grep -qx 'package/dist/index.d.ts' && rm -rf "$$pack" && \
	  node --test test/*.test.mjs

freeswitch-if-possible:
	@if [ -d "$(FREESWITCH_SRC)" ]; then \
	  FREESWITCH_PREFIX=$(FREESWITCH_PREFIX) FREESWITCH_SRC=$(FREESWITCH_SRC) scripts/build-freeswitch.sh; \
	else \
	  echo "no FreeSWITCH sources at $(FREESWITCH_SRC): the real-switch tier uses a build at $(FREESWITCH_PREFIX) if there is one"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check bridge tests $(wildcard bench)

# Every phase of bench/ (python -m bench --help); ARGS=--phase=events,webhooks --runs=1 selects.
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) var

# A real FreeSWITCH 1.10.12 (+ sofia-sip, spandsp, mod_audio_fork) built from ../shared/freeswitch-src
# (or FREESWITCH_SRC) into FREESWITCH_PREFIX; a finished build is not redone. See docs/freeswitch.md.
FREESWITCH_PREFIX ?= /opt/bridge-freeswitch

.PHONY: freeswitch test-freeswitch freeswitch-if-possible

freeswitch:
	FREESWITCH_PREFIX=$(FREESWITCH_PREFIX) FREESWITCH_SRC=$(FREESWITCH_SRC) scripts/build-freeswitch.sh

test-freeswitch: $(STAMP)
	FREESWITCH_PREFIX=$(FREESWITCH_PREFIX) $(BIN)/pytest -m freeswitch tests/freeswitch $(PYTEST_ARGS)

# The lab natively on loopback (scripts/lab.sh, docs/lab.md): the FreeSWITCH from `make freeswitch`
# with freeswitch-conf/, Redis, `bridge run`, the demo agent, a key and the default voice agent;
# prints how to call it (baresip, SIPp) and stops everything on Ctrl-C. LAB_CALL=1 places one call.
.PHONY: lab

lab: $(STAMP) espeak freeswitch-if-possible
	FREESWITCH_PREFIX=$(FREESWITCH_PREFIX) scripts/lab.sh

# Fresh ESL captures from the real switch (tests/freeswitch/test_captures.py, which also compares
# them with the simulator) into CAPTURES_DIR, in ../shared/esl-captures' format and file names, with
# the host's name and addresses sanitized the same way: diff -r $(CAPTURES_DIR) ../shared/esl-captures
CAPTURES_DIR ?= var/captures
.PHONY: captures

captures: $(STAMP)
	mkdir -p $(CAPTURES_DIR)
	CAPTURES_OUT=$(abspath $(CAPTURES_DIR)) FREESWITCH_PREFIX=$(FREESWITCH_PREFIX) \
	  $(BIN)/pytest -m freeswitch tests/freeswitch/test_captures.py $(PYTEST_ARGS)
	@echo "fresh captures in $(CAPTURES_DIR): diff them with ../shared/esl-captures"
