#!/usr/bin/env bash
# Create the optional MXNet virtualenv (.venv-mxnet) beside the default one, never touching it.
#
# MXNet 1.9.1 was retired in 2023 and needs numpy < 1.24, so it cannot share .venv (numpy 2).
# Its wheel is tagged py3-none-manylinux2014 and works on Python 3.11 with numpy 1.23.5.
# It bundles libopenblas and libgfortran.so.3, but links the system libgomp.so.1 and
# libquadmath.so.0 (Debian/Ubuntu: libgomp1, libquadmath0).
#
# Idempotent: does nothing when the venv already matches requirements-mxnet.txt.
# Environment: PYTHON (interpreter to build the venv from, default python3.11 or python3),
#              VENV (default .venv-mxnet), FORCE=1 to rebuild from scratch.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-mxnet}"
REQS="requirements-mxnet.txt"
STAMP="$VENV/.requirements-mxnet.sha256"

if [[ -z "${PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

# 1. System libraries the mxnet wheel links against but does not bundle.
missing=()
for pair in "libgomp.so.1:libgomp1" "libquadmath.so.0:libquadmath0"; do
    lib="${pair%%:*}"
    pkg="${pair##*:}"
    if ! ldconfig -p 2>/dev/null | grep -q "$lib"; then missing+=("$pkg"); fi
done
if ((${#missing[@]})); then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        echo "setup_mxnet: installing system libraries: ${missing[*]}"
        apt-get update -qq && apt-get install -y -qq "${missing[@]}"
    else
        echo "setup_mxnet: mxnet needs system libraries that are missing: ${missing[*]}" >&2
        echo "  fix: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

# 2. The virtualenv, skipped when complete and up to date.
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ "${FORCE:-0}" != "1" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] &&
    "$VENV/bin/python" -c "import mxnet, onnx, onnxruntime, PIL, pytest" >/dev/null 2>&1; then
    echo "setup_mxnet: $VENV is complete (mxnet $("$VENV/bin/python" -c \
        'import mxnet; print(mxnet.__version__)')); nothing to do"
    exit 0
fi

if [[ "${FORCE:-0}" == "1" ]]; then rm -rf "$VENV"; fi
pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$pyver" in
    3.8 | 3.9 | 3.10 | 3.11) ;;
    *)
        echo "setup_mxnet: $PYTHON is Python $pyver; numpy 1.23.5 (needed by mxnet 1.9.1) has" \
            "wheels for 3.8-3.11 only. Set PYTHON=python3.11." >&2
        exit 1
        ;;
esac
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup_mxnet: creating $VENV with $PYTHON (Python $pyver)"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet -r "$REQS"
"$VENV/bin/python" -c "
import mxnet as mx, numpy as np
assert np.__version__.startswith('1.23'), np.__version__
x = mx.nd.ones((2, 2)) * 2
assert x.asnumpy().sum() == 8
print('setup_mxnet: mxnet', mx.__version__, 'numpy', np.__version__, 'GPUs', mx.context.num_gpus())
"
echo "$want" >"$STAMP"
echo "setup_mxnet: $VENV ready"
