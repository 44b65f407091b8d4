# The two commands a newcomer needs:  make demo   and   make test
.PHONY: demo test setup crd lint cluster-up cluster-down

PY := .venv/bin/python

setup:
	bash e2e/setup.sh

demo: setup
	.venv/bin/inference-placement demo

test: setup
	bash e2e/run-tests.sh

crd: setup
	.venv/bin/inference-placement crd -o crds/inferenceworkloads.yaml

lint: setup
	.venv/bin/ruff check operator tests
	.venv/bin/mypy
	.venv/bin/lint-imports

cluster-up:
	bash e2e/local-cluster.sh up

cluster-down:
	bash e2e/local-cluster.sh down
