#!/usr/bin/env bash
# The GPU run (each step bounded by a timeout), on a Linux machine with an NVIDIA GPU that
# has PyTorch or JAX (TensorFlow is optional). It installs what the project needs and is
# missing from benchmarks/wheels/ when that folder exists (a machine without network: fill it
# beforehand with `pip download -d benchmarks/wheels keras tqdm`), else from PyPI, and runs
# the project from this checkout without installing it. Then:
#   - on each installed backend, benchmarks/gpu.py: a few hundred synthetic clips at float32
#     and mixed_bfloat16 for batch sizes 32, 64, 128 and 256 (model alone, whole pipeline,
#     their ratio, decode clips/s with all cores, peak GPU memory);
#   - benchmarks/gpu_parity.py: float32 features of the GPU against the same machine's CPU;
#   - benchmarks/pipeline.py: the pipeline with a backbone that costs nothing against
#     decoding alone on every core, 320x240 and 640x480 H.264 (MPEG-4 without ffmpeg),
#     decoding with OpenCV, then (where PyNvVideoCodec loads) with NVDEC after
#     tests/video/test_nvdec.py has compared its frames with OpenCV's;
# and prints one JSON line with all of it: {"backends": [...], "parity": {...},
# "pipeline_free_backbone": {...}, "pipeline_free_backbone_nvdec": {...}}.
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

# optional, when their wheels were carried: NVDEC decoding, and pytest for its tests
for optional in PyNvVideoCodec pytest; do
  if ! "$PYTHON" -c "import $optional" 2>/dev/null && [[ -d benchmarks/wheels ]] \
     && ls benchmarks/wheels | grep -qi "^$optional-"; then
    "$PYTHON" -m pip install --quiet --no-index --find-links benchmarks/wheels "$optional" >&2 \
      || echo "$optional could not be installed from benchmarks/wheels" >&2
  fi
done

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
parity=$(mktemp)
backends_csv=$(echo $BACKENDS | tr ' ' '\n' | grep -v tensorflow | paste -sd, -)
timeout 300 "$PYTHON" benchmarks/gpu_parity.py --backends "$backends_csv" | tee "$parity" >&2 \
  || echo '{"error": "gpu_parity.py failed or ran over 300 s (see above)"}' >>"$parity"
pipeline=$(mktemp)
timeout 300 "$PYTHON" benchmarks/pipeline.py --repeats 2 --decoder opencv | tee "$pipeline" >&2 \
  || echo '{"error": "pipeline.py failed or ran over 300 s (see above)"}' >>"$pipeline"
# NVDEC (video/nvdec.py) where PyNvVideoCodec loads: its frames against OpenCV's (the tests,
# when pytest is here), then the same pipeline decoding on the GPU
nvdec=$(mktemp)
if "$PYTHON" -c "import PyNvVideoCodec" >/dev/null 2>&1; then
  "$PYTHON" -m pytest -q -rs tests/video/test_nvdec.py -p no:cacheprovider >&2 \
    || echo "tests/video/test_nvdec.py failed or pytest is missing (see above)" >&2
  timeout 300 "$PYTHON" benchmarks/pipeline.py --repeats 2 --decoder nvdec | tee "$nvdec" >&2 \
    || echo '{"error": "pipeline.py --decoder nvdec failed or ran over 300 s"}' >>"$nvdec"
else
  echo '{"error": "PyNvVideoCodec does not load here (not installed, or no driver video)"}' >"$nvdec"
fi
# one JSON line: the last line of each backend's run, the parity and the pipeline figures
"$PYTHON" - "$log" "$parity" "$pipeline" "$nvdec" <<'EOF'
import json, sys
def last_json(path):
    lines = [line for line in open(path) if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": "no figures (see above)"}
runs = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
finals = [r for r in runs if "results" in r or "error" in r]
print(json.dumps({
    "backends": finals,
    "parity": last_json(sys.argv[2]),
    "pipeline_free_backbone": last_json(sys.argv[3]),
    "pipeline_free_backbone_nvdec": last_json(sys.argv[4]),
}))
EOF
