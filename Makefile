# Two commands do all the set-up (virtualenv, packages, WordNet, photo stamps) and then their job:
#   make run    run the default benchmark (the offline synthetic world)
#   make test   run the test suite
# Both are idempotent: a second call skips the installs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

TEX_PACKAGES := texlive-latex-base texlive-latex-recommended poppler-utils
BROWSER_PACKAGES := chromium chromium-driver

.PHONY: setup wordnet photos tex browser run test bench clean-venv

# pip unpacks and builds in $(PIP_TMP), on the project's disk: a small /tmp (a tmpfs) cannot
# hold the torch wheels (the venv is about 6 GB, 4 GB of it CUDA libraries torch links to even
# on the CPU); the folder is removed after the install.
PIP_TMP := $(abspath $(VENV))/.pip-tmp

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@mkdir -p $(PIP_TMP)
	TMPDIR=$(PIP_TMP) $(PY) -m pip install --quiet --no-cache-dir --upgrade pip
	TMPDIR=$(PIP_TMP) $(PY) -m pip install --quiet --no-cache-dir -e '.[dev]'
	# zennit-crp (the PURE authors' attribution library: the reference of tests/engine/test_crp_reference.py
	# and of `polysemy bench`) declares zennit<=0.4.6; the project uses zennit 0.5.1, on which it runs
	TMPDIR=$(PIP_TMP) $(PY) -m pip install --quiet --no-cache-dir --no-deps zennit-crp==0.6.0
	@rm -rf $(PIP_TMP)
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

wordnet: $(STAMP)
	@$(PY) -m benchmark.sources.wordnet_setup

photos: $(STAMP)
	@$(PY) -m benchmark.sources.photos.setup

setup: $(STAMP) wordnet photos

# pdflatex and pdftoppm for the test that compiles the LaTeX leaderboard (Debian packages)
tex:
	@command -v pdflatex >/dev/null 2>&1 && command -v pdftoppm >/dev/null 2>&1 || \
	  apt-get install -y -q --no-install-recommends $(TEX_PACKAGES) >/dev/null || \
	  (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(TEX_PACKAGES) >/dev/null)

run: setup
	$(VENV)/bin/polysemy run $(ARGS)

# headless Chromium and its driver for the HTML report's browser test (Debian packages)
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null || \
	  (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null)

test: setup tex browser
	$(VENV)/bin/pytest -q $(ARGS)

bench: setup
	$(VENV)/bin/polysemy bench $(ARGS)

clean-venv:
	rm -rf $(VENV)
