#!/usr/bin/env bash
# The GPU run, in under 8 minutes, on a Linux machine with an NVIDIA GPU that has PyTorch or
# JAX (TensorFlow is optional). It installs what the project needs and is missing from
# benchmarks/wheels/ when that folder exists (a machine without network: fill it beforehand
# with `pip download -d benchmarks/wheels keras tqdm`), else from PyPI, and runs the project
# from this checkout without installing it. Then, on each installed backend, it extracts a
# few hundred synthetic clips at float32 and mixed_bfloat16 for batch sizes 32, 64, 128 and
# 256 (benchmarks/gpu.py), and prints one JSON line: clips/s of the model alone and of the
# whole pipeline, their ratio, decode clips/s with all cores and peak GPU memory.
#
#   bash benchmarks/gpu.sh                 # every installed backend
#   BACKENDS="torch" bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true

missing=()
for module in keras h5py cv2 pandas tqdm sklearn; do
  "$PYTHON" -c "import $module" 2>/dev/null || missing+=("$module")
done
if ((${#missing[@]})); then
  declare -A package=([keras]=keras [h5py]=h5py [cv2]=opencv-python-headless [pandas]=pandas
                      [tqdm]=tqdm [sklearn]=scikit-learn)
  wanted=()
  for module in "${missing[@]}"; do wanted+=("${package[$module]}"); done
  if [[ -d benchmarks/wheels ]]; then
    from=(--no-index --find-links benchmarks/wheels)
  else
    from=()
  fi
  echo "installing ${wanted[*]}" >&2
  "$PYTHON" -m pip install --quiet "${from[@]}" "${wanted[@]}" >&2
fi

if [[ -z "${BACKENDS:-}" ]]; then
  BACKENDS=""
  for backend in torch jax tensorflow; do
    "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$backend') is None)" \
      && BACKENDS+="$backend "
  done
fi
[[ -n "$BACKENDS" ]] || { echo "none of torch, jax, tensorflow is installed" >&2; exit 1; }

log=$(mktemp)
for backend in $BACKENDS; do
  # each backend in its own process (Keras picks one per process), 5.5 minutes at most each (JAX compiles each batch shape)
  KERAS_BACKEND=$backend timeout 330 "$PYTHON" benchmarks/gpu.py "$@" | tee -a "$log" >&2 \
    || echo "{\"backend\": \"$backend\", \"error\": \"failed or over 330 s (see above)\"}" >>"$log"
done
# one JSON line: the last line of each backend's run
"$PYTHON" - "$log" <<'EOF'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
finals = [r for r in runs if "results" in r or "error" in r]
print(json.dumps({"backends": finals}))
EOF
