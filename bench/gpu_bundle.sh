#!/usr/bin/env bash
# Build .gpu/site.tar.xz: the packages hmpc needs that a lent GPU machine lacks, for its Python 3.12
# (x86-64), small enough to travel with the working tree (the device tool carries <= 64 MiB).
#
#   PY312=/path/to/python3.12 bench/gpu_bundle.sh      # then: bench/gpu_check.sh there (carry .gpu)
#
# The machine's image has torch (CUDA), numpy 2, opencv-python-headless, pyarrow, safetensors, tqdm,
# matplotlib, tensorboard, pytest and Ray's small dependencies, and no package index. This adds
# pybullet (no cp312 wheel exists: built here from the sdist with PY312, 17 min on 2 cores, once),
# Ray (its Java jars, source maps, Serve and LLM left out, binaries stripped), av, Hydra, OmegaConf,
# gymnasium, jsonschema and pytest-rerunfailures, at the versions CI tests. Wheels are cached in
# ${HMPC_GPU_CACHE:-~/.cache/hmpc-gpu}; .gpu/ is git-ignored through .git/info/exclude.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PY312=${PY312:-python3.12}
cache=${HMPC_GPU_CACHE:-$HOME/.cache/hmpc-gpu}
mkdir -p "$cache" "$root/.gpu"
exclude=$(git -C "$root" rev-parse --git-common-dir)/info/exclude
[[ $exclude = /* ]] || exclude=$root/$exclude
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
"$PY312" -c 'import sys, numpy, setuptools, wheel; assert sys.version_info[:2] == (3, 12) and int(numpy.__version__.split(".")[0]) >= 2' \
  || { echo "PY312=$PY312 must be a Python 3.12 (the GPU machine's) with numpy >= 2, setuptools and wheel" \
            "(pybullet builds its numpy camera images against it)" >&2; exit 1; }

binary=(ray==2.60.0 av==18.1.0 rpds-py==2026.9.1)
pure=(hydra-core==1.3.8 omegaconf==2.3.1 gymnasium==1.2.2 farama-notifications==0.0.6
      jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
      pytest-rerunfailures==16.7)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$cache" "${binary[@]}" "${pure[@]}"
# sdists only: antlr4 (pure Python, for OmegaConf), pybullet (C++)
ls "$cache"/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1 \
  || "$PY312" -m pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w "$cache"
ls "$cache"/pybullet-3.2.7-cp312-*.whl >/dev/null 2>&1 || {
  echo "building pybullet 3.2.7 for Python 3.12 (long; once)"
  "$PY312" -m pip wheel --no-deps --no-build-isolation pybullet==3.2.7 -w "$cache"
}

site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
: > "$root/.gpu/MANIFEST"
for req in "${binary[@]}" "${pure[@]}" antlr4-python3-runtime==4.9.3 pybullet==3.2.7; do
  name=${req%%==*} version=${req##*==}
  # the wheel of exactly this version (file names spell - as _); abi3 wheels serve 3.12 too
  wheel=$(ls "$cache"/"${name//-/_}"-"$version"-*.whl | grep -E -- '-(cp312-cp312|cp3[0-9]+-abi3|py3-none)-' | head -n 1)
  python3 -m zipfile -e "$wheel" "$site"  # a wheel is a zip of its installed files
  basename "$wheel" >> "$root/.gpu/MANIFEST"
done
# trim what a GPU check never loads, and strip debug symbols (not auditwheel-patched libraries)
rm -rf "$site"/ray/jars "$site"/ray/serve "$site"/ray/llm "$site"/pybullet_envs "$site"/pybullet_examples \
       "$site"/pybullet_robots
find "$site"/ray/dashboard -name '*.map' -delete
find "$site"/pybullet_data -mindepth 1 -maxdepth 1 ! -name franka_panda ! -name '__init__.py' -exec rm -rf {} +
strip --strip-unneeded "$site"/ray/_raylet.so "$site"/ray/core/src/ray/raylet/raylet \
      "$site"/ray/core/src/ray/gcs/gcs_server "$site"/pybullet*.so
chmod +x "$site"/ray/core/src/ray/raylet/raylet "$site"/ray/core/src/ray/gcs/gcs_server
tar -C "$site" -cf - . | xz -T0 -6 > "$root/.gpu/site.tar.xz"
# what travels: the tracked and untracked-not-ignored files, and .gpu
tree=$(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
bundle=$(du -cb "$root"/.gpu/* | tail -n 1 | cut -f1)
echo "bundle $((bundle / 1048576)) MiB + working tree $((tree / 1048576)) MiB; the device tool carries 64 MiB"
[ $((bundle + tree)) -le $((64 * 1048576)) ] || { echo "too large to carry: trim more in bench/gpu_bundle.sh" >&2; exit 1; }
