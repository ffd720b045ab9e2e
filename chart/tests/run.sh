#!/usr/bin/env bash
# Offline checks of the Helm chart (lint, render, Kubernetes schema validation, assertions):
# no cluster, no Docker, no helm binary. Needs python3 with venv/pip and access to PyPI the first
# time. Arguments are passed to check_chart.py (e.g. --print-metrics).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${TMPDIR:-/tmp}/flowlet-chart-venv"
py="$venv/bin/python"

if [ ! -x "$py" ]; then
  echo "==> creating $venv" >&2
  python3 -m venv "$venv"
fi
if ! "$py" -c 'import helm_python, kubernetes_validate, yaml' >/dev/null 2>&1 \
   || [ "$("$py" -c 'import helm_python; print(helm_python.__version__)' 2>/dev/null)" != "0.2.2" ] \
   || [ "$("$py" -c 'import kubernetes_validate; print(kubernetes_validate.__version__)' 2>/dev/null)" != "1.37.0" ]; then
  echo "==> installing helm-python-sdk and kubernetes-validate into $venv" >&2
  "$py" -m pip install --quiet --disable-pip-version-check \
    'helm-python-sdk==0.2.2' 'kubernetes-validate==1.37.0' >&2
fi
exec "$py" "$here/check_chart.py" "$@"
