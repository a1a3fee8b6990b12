# Two commands on a fresh machine:  `make demo` (main job on the embedded defaults), `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all test-slow system-deps clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0            # local CPU wheel; pinned so pip never pulls CUDA builds
	$(PIP) install -e '.[test]'
	$(PIP) install --no-deps aisfx           # its declared deps pin old librosa/essentia we do not use
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/sonalign demo

test: install
	$(PY) -m pytest -q

# Slow and real-data tests too (CI runs these when time allows).
test-all: install
	$(PY) -m pytest -q -m "slow or not slow"

# Only the tests marked slow (what .ci/run adds after `make test`).
test-slow: install
	$(PY) -m pytest -q -m slow

# Optional system tools some tests use (they skip cleanly without them): espeak-ng makes speech,
# Debian's chromium is the browser the web-page test drives (Playwright never downloads one).
system-deps:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  missing=""; command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	else echo "system-deps: not root or no apt-get; tests needing espeak-ng/chromium will skip"; fi

clean:
	rm -rf $(VENV) build *.egg-info
