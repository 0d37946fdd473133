# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv (or use the active virtualenv) and install what is missing.
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.detptq-installed

.PHONY: install demo test
install: $(STAMP)

$(STAMP): requirements.txt setup.py tools/install_deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	PYTHON=$(PY) bash tools/install_deps.sh
	touch $@

demo: install
	$(PY) tools/quantize.py configs/demo/yolov6n_demo_detptq_w4a8.py

test: install
	$(PY) -m pytest -q -n auto --dist loadfile tests
