#!/usr/bin/env bash
# Prepares the SMTP server tests/tests/notifications.rs sends e-mail to: PyPI
# aiosmtpd (pinned in tests/smtp-requirements.txt) in a virtualenv inside the
# clone (.venv-smtp/, git-ignored), created on first run and re-created when
# the requirements change. The test runs .venv-smtp/bin/python tests/smtp_sink.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

venv=.venv-smtp
requirements=tests/smtp-requirements.txt
stamp=$venv/requirements.installed

if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
    echo "Creating $venv (pinned packages from $requirements)"
    rm -rf "$venv"
    python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
    python3 -m venv "$venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install --quiet --no-cache-dir --require-virtualenv \
        -r "$requirements"
    cp "$requirements" "$stamp"
fi
