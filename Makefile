# The two commands a newcomer needs:  make demo   and   make test
.PHONY: demo test setup crd lint fmt cluster-up cluster-down lambda-runtime

setup:
	bash e2e/setup.sh

demo: setup lambda-runtime
	.venv/bin/inference-placement demo

test: setup
	bash e2e/run-tests.sh

# Regenerate everything derived from the API models (tests fail when these drift).
crd: setup
	.venv/bin/inference-placement crd -o crds/inferenceworkloads.yaml
	.venv/bin/inference-placement crd --kind ServerlessTarget -o crds/serverlesstargets.yaml
	cp crds/inferenceworkloads.yaml crds/serverlesstargets.yaml charts/inference-placement/files/crds/
	.venv/bin/python docs/generate.py

lint: setup
	.venv/bin/ruff check operator tests
	.venv/bin/ruff format --check operator tests
	.venv/bin/mypy
	.venv/bin/lint-imports

# Format the code in place (the test run checks it with `ruff format --check operator tests`).
fmt: setup
	.venv/bin/ruff format operator tests

# AWS's Lambda Runtime Interface Emulator and Lambda Web Adapter, built once and cached (docs/lambda.md);
# `make test` builds them in a step of its own.
lambda-runtime:
	bash e2e/lambda-runtime.sh

cluster-up:
	bash e2e/local-cluster.sh up --with-node

cluster-down:
	bash e2e/local-cluster.sh down
