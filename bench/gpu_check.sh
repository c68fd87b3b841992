#!/usr/bin/env bash
# The device check: on a machine with an NVIDIA GPU and no network, build dlib with CUDA
# from the sdist carried in .whl/, then run the reactor's detector on the sample photos
# and on phone-size photos at several batch sizes and pixel budgets (bench/gpu_check.py),
# printing images/s, GPU memory at peak and the out-of-memory count. One command meant to
# end within 10 minutes on a 16-core machine: the measurements get what the build left
# (GPU_CHECK_SECONDS). Not yet run on a GPU.
#
# Prepare here (with the registries), once:   bash bench/gpu_check.sh --prepare
#   fills .whl/ (git-ignored through .git/info/exclude) with the dlib sdist, the wheels
#   the detector needs that the device image lacks, and the three model files the engine
#   uses (not the 100 MB 68-point model: the engine never asks for it).
# Run there (the device tool, carry [".whl"]):  bash bench/gpu_check.sh
#
# The build: dlib's tools/python CMake project with DLIB_USE_CUDA=1 against the CUDA
# toolkit found by CMake and the cuDNN of the nvidia-cudnn wheel when there is no system
# one; compute capability from nvidia-smi. The result lands in /tmp/site with the wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
WHL=.whl
SITE=/tmp/site
PYTHON=${PYTHON:-python3}

prepare() {
    local venv=.venv/bin/python pyver=3.12
    mkdir -p "$WHL/models"
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    local plat=(--python-version "$pyver" --implementation cp --platform manylinux_2_28_x86_64
                --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    python3 -m pip download -q --no-deps --only-binary=:all: "${plat[@]}" -d "$WHL" \
        structlog face_recognition pillow-heif
    local version
    version=$("$venv" -c 'import dlib; print(dlib.__version__)')
    python3 -m pip install -q wheel
    python3 -m pip download -q --no-deps --no-binary dlib --no-build-isolation -d "$WHL" "dlib==$version"
    local models
    models=$("$venv" -W ignore -c 'import face_recognition_models, os; print(os.path.dirname(face_recognition_models.__file__))')/models
    cp "$models"/mmod_human_face_detector.dat "$models"/shape_predictor_5_face_landmarks.dat \
       "$models"/dlib_face_recognition_resnet_model_v1.dat "$WHL/models/"
    du -sh "$WHL"
}

build_dlib() {
    local src cap cudnn
    src=$(mktemp -d)
    tar -xzf "$WHL"/dlib-*.tar.gz -C "$src" --strip-components=1
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '.')
    cudnn=$("$PYTHON" -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))' 2>/dev/null || true)
    # CMAKE_LIBRARY_OUTPUT_DIRECTORY: the module lands in $SITE and dlib's CMake writes
    # $SITE/dlib/__init__.py itself (tools/python/CMakeLists.txt), as setup.py would.
    local args=(-DDLIB_USE_CUDA=1 -DCMAKE_BUILD_TYPE=Release -DPYTHON_EXECUTABLE="$(command -v "$PYTHON")"
                -DDLIB_USE_CUDA_COMPUTE_CAPABILITIES="${cap:-75}" -DUSE_AVX_INSTRUCTIONS=1
                -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$SITE")
    if [ -n "$cudnn" ] && [ -f "$cudnn/include/cudnn.h" ]; then
        # The cuDNN of the nvidia-cudnn wheel: FindCUDNN.cmake looks under CUDNN_ROOT for
        # libcudnn.so, which the wheel ships only with its soname version.
        [ -e "$cudnn/lib/libcudnn.so" ] || ln -s "$(ls "$cudnn"/lib/libcudnn.so.* | head -n 1)" "$cudnn/lib/libcudnn.so"
        args+=(-DCUDNN_ROOT="$cudnn" -DCUDNN_INCLUDE_DIR="$cudnn/include")
        export LD_LIBRARY_PATH="$cudnn/lib:${LD_LIBRARY_PATH:-}"
    fi
    echo "== dlib $(basename "$WHL"/dlib-*.tar.gz): cmake ${args[*]}"
    mkdir -p "$SITE"
    cmake -S "$src/tools/python" -B "$src/build" "${args[@]}" > /tmp/dlib-cmake.log 2>&1 \
        || { tail -n 40 /tmp/dlib-cmake.log; exit 1; }
    grep -E "DLIB WILL USE CUDA|DISABLING CUDA|CUDNN|cuDNN" /tmp/dlib-cmake.log || true
    cmake --build "$src/build" -j "$(nproc)" > /tmp/dlib-make.log 2>&1 || { tail -n 40 /tmp/dlib-make.log; exit 1; }
}

models_package() {
    # face_recognition imports face_recognition_models for the model paths; the 68-point
    # predictor it loads at import is never used by the engine, so the 5-point one stands in.
    mkdir -p "$SITE/face_recognition_models/models"
    cp "$WHL"/models/*.dat "$SITE/face_recognition_models/models/"
    cat > "$SITE/face_recognition_models/__init__.py" <<'PY'
import os
_here = os.path.join(os.path.dirname(__file__), "models")
def pose_predictor_model_location(): return os.path.join(_here, "shape_predictor_5_face_landmarks.dat")
def pose_predictor_five_point_model_location(): return os.path.join(_here, "shape_predictor_5_face_landmarks.dat")
def face_recognition_model_location(): return os.path.join(_here, "dlib_face_recognition_resnet_model_v1.dat")
def cnn_face_detector_model_location(): return os.path.join(_here, "mmod_human_face_detector.dat")
PY
}

if [ "${1:-}" = "--prepare" ]; then
    prepare
    exit 0
fi

started=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl
build_dlib
models_package
export PYTHONPATH="$SITE:$PWD"
echo "== dlib built in $(( $(date +%s) - started )) s"
"$PYTHON" -c 'import dlib; print("dlib", dlib.__version__, "CUDA", dlib.DLIB_USE_CUDA, "devices", dlib.cuda.get_num_devices())'
# What the build left of the whole command's time (GPU_CHECK_SECONDS, 540 by default, so
# that it ends inside the device tool's 600 s): runs that would not fit are skipped.
left=$(( ${GPU_CHECK_SECONDS:-540} - ( $(date +%s) - started ) - 30 ))
PYTHONUNBUFFERED=1 "$PYTHON" -m bench.gpu_check --max-seconds "$(( left > 60 ? left : 60 ))" "$@"
echo "== total $(( $(date +%s) - started )) s"
