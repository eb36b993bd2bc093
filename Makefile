# The two commands of the README: `make up` (main job) and `make test`.
STACK ?= prod
SHELL := /bin/bash

.PHONY: setup toolchain up preview destroy test lint check-rules

setup:
	scripts/setup.sh

toolchain:
	scripts/bootstrap-toolchain.sh >/dev/null

# Main job: a real `pulumi up` of $(STACK). Without a kubeconfig it renders every manifest
# into rendered/$(STACK)/ (no cluster needed); with one, it deploys.
up: setup toolchain
	scripts/pulumi.sh up $(STACK)

preview: setup toolchain
	scripts/pulumi.sh preview $(STACK)

test: setup toolchain
	.venv/bin/pytest

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
