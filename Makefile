# The two commands of the README: `make up` (main job) and `make test`.
STACK ?= prod
REALPODS ?= onboarding-rp
SHELL := /bin/bash

.PHONY: setup toolchain kube nodes images realpods-images s3 ci-linters up preview test test-realpods lint kube-up kube-down realpods-up realpods-down

setup:
	scripts/setup.sh

toolchain:
	scripts/bootstrap-toolchain.sh >/dev/null

# The Kubernetes control plane the deploy test runs against (built once, cached).
kube:
	scripts/bootstrap-kube.sh >/dev/null

# The binaries of the real-pods cluster's nodes: kubelet, kube-proxy, containerd, runc, CNI
# plugins, crictl, CoreDNS, local-path-provisioner, pause (built once, cached; scripts/realpods/).
nodes:
	scripts/bootstrap-nodes.sh >/dev/null

# The images the repository owns (couchops, the web app stand-in), built without a registry into
# ${ONBOARDING_IMAGE_ARCHIVE:-~/.cache/onboarding-images} for the real-pods nodes (as root;
# skipped when up to date; see scripts/build-images.sh).
images:
	scripts/build-images.sh >/dev/null

# The S3-compatible server (SeaweedFS) the off-site backup tests run against (built once, cached).
s3:
	scripts/bootstrap-seaweedfs.sh >/dev/null

# Main job: a real `pulumi up` of $(STACK). Without a kubeconfig it renders every manifest
# into rendered/$(STACK)/ (no cluster needed); with one, it deploys to the stack's
# onboarding:kubeContext, with the team's passphrase, after showing the preview and asking
# (no terminal: CONFIRM=1). See docs/state-backend.md.
up: setup toolchain
	scripts/pulumi.sh up $(STACK)

preview: setup toolchain
	scripts/pulumi.sh preview $(STACK)

# The pipelines' checkers (actionlint, GitLab's CI schema, shellcheck), built once, cached.
ci-linters:
	scripts/bootstrap-ci-linters.sh >/dev/null

# What tests/realpods needs beyond the rest: the images built (as root, with Debian's docker.io
# and debootstrap); the node binaries, node image and add-ons are built by the tests' own
# scripts/realpods/up.sh. Not root: said, and the real-pods tests skip with that reason.
realpods-images:
	@if [ "$$(id -u)" = 0 ]; then scripts/build-images.sh >/dev/null; \
	else echo "make test: not root, so no images for tests/realpods (they skip)"; fi

test: setup toolchain kube s3 ci-linters realpods-images
	.venv/bin/pytest

# Only the real-pods tests (a cluster of their own, both stacks deployed, faults), verbose.
test-realpods: setup toolchain realpods-images
	.venv/bin/pytest -m realpods -s -v tests/realpods

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# A real local control plane (kube-apiserver, etcd, scheduler, controller-manager) with KWOK
# nodes, to deploy to: see scripts/kube/README.md (use a state of its own).
kube-up: setup kube
	scripts/kube-up.sh

kube-down:
	scripts/kube-down.sh

# The real-pods cluster: the same control plane with five real nodes (docker containers running
# containerd, kubelet, kube-proxy), pod network, DNS, volumes, cert-manager; the images of
# ${ONBOARDING_IMAGE_ARCHIVE:-~/.cache/onboarding-images} loaded (as root; see scripts/realpods/README.md).
realpods-up: setup
	scripts/realpods/up.sh $(REALPODS)

realpods-down:
	scripts/realpods/down.sh $(REALPODS)
