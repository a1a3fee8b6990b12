# Two commands on a fresh machine:  `make demo` (main job on the embedded defaults), `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all system-deps bench clean

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

# Optional system tools some tests use (they skip cleanly without them).
system-deps:
	command -v espeak-ng >/dev/null || (apt-get update -qq && apt-get install -y -qq espeak-ng) || true

clean:
	rm -rf $(VENV) build *.egg-info
