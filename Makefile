# SAMRS for QGIS. `make setup` once (as root on Debian 12), then `make demo`, `make test`.
VENV        ?= $(CURDIR)/.venv
PYTHON      := $(VENV)/bin/python
CHECKPOINT  ?=
DEMO_OUT    ?= $(CURDIR)/demo-output
PROFILE_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default
VERSION     := $(shell sed -n 's/^version=//p' metadata.txt)

.PHONY: setup demo test checkpoints deploy package bench figures clean

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh "$(DEMO_OUT)" "$(CHECKPOINT)"

# pytest from the venv's script, not `python -m pytest`: the repo root must stay off sys.path
# (its processing/ folder would shadow QGIS's processing package).
test:
	$(VENV)/bin/pytest -c tests/pytest.ini tests

checkpoints:
	cd $(CURDIR) && $(PYTHON) -m samrs_qgis download-checkpoints $(or $(MODELS),vit_b) --dir checkpoints

deploy:
	mkdir -p "$(PROFILE_DIR)/python/plugins"
	ln -sfn "$(CURDIR)" "$(PROFILE_DIR)/python/plugins/samrs"
	QT_QPA_PLATFORM=offscreen QGIS_CUSTOM_CONFIG_PATH="$(abspath $(PROFILE_DIR)/../..)" \
	  /usr/bin/qgis_process.bin plugins enable samrs >/dev/null 2>&1 || true
	@grep -qs '^samrs=true' "$(PROFILE_DIR)/QGIS/QGIS3.ini" || { echo "deploy: QGIS did not enable the plugin"; exit 1; }
	@echo "Plugin linked into $(PROFILE_DIR)/python/plugins/samrs and enabled; restart QGIS."

package:
	bash scripts/package.sh dist/samrs-$(VERSION).zip

# Engine benchmark (about 24 minutes on 2 cores); builds its own rasters and random-weight SAM models.
# bench.py reaches samrs_qgis through a temporary link, so the repo root stays off sys.path here too.
# The README's before/after figures of the polygon options (docs/figures/), drawn with QGIS.
figures:
	$(PYTHON) scripts/shaping_figures.py

bench:
	$(PYTHON) bench/bench.py

clean:
	rm -rf build dist demo-output .pytest_cache
