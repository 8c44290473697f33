#!/usr/bin/env bash
# On a machine with a CUDA GPU (the `device` tool's, when a session is lent one): does a wider toy
# prior trained far longer than this 2-core CPU allows learn the azimuth? Neither shipped prior
# does: the toy SD ignores its camera's azimuth (bench_toy_prior.py: azimuth gain < 0.4 %), which
# leaves the text-to-3D cube's yaw to the backdrop, and the toy Zero123 ignores the relative azimuth
# (bench_toy_zero123_pose.py: < 0.2 %) and reads the cube's yaw from the backdrop too, which a cube
# photographed at another yaw does not follow. PRIOR picks which one to train (the toy Zero123 as
# shipped: its targets over the backdrop). PRIOR=stable_zero123 trains a wider toy Stable Zero123
# (the shipped one's recipe, `assets/toy-stable-zero123`): does a bigger prior put toy photos'
# elevation within 10°, where the shipped one is 14° off? It measures the estimate on renders
# here; the held-out photos are measured back on a CPU (the line printed at the end). Checks CUDA
# training against the CPU first, trains with checkpoints (an interrupted run still leaves a usable
# prior), then measures the gains of the result.
#
#   bash benchmarks/gpu_toy_prior.sh [OUT_DIR]     # env: PRIOR (sd | zero123 | stable_zero123),
#                                                  #      STEPS (20000), CHANNELS ("24 48 96"), BATCH (128),
#                                                  #      N_IMAGES (24000 for sd, 12000 for the others),
#                                                  #      DEVICE (cuda), TRAIN_ARGS (more train_zero123 flags),
#                                                  #      ELEVATION_ARGS (more bench_elevation.py flags)
#   DEVICE=cpu STEPS=2 BATCH=4 N_IMAGES=96 bash benchmarks/gpu_toy_prior.sh /tmp/x   # smoke run, no GPU
#   (PRIOR=stable_zero123's smoke: also ELEVATION_ARGS="--shapes cube --elevations 30")
#
# Then, back on a CPU: python launch.py models.sd=OUT_DIR/toy-sd prompt="a red cube" seed=N
# (or models.zero123=OUT_DIR/toy-zero123 with experiment=toy_gaussians_image or toy_zero123).
set -euo pipefail
prior=${PRIOR:-sd}
if [[ $prior != sd && $prior != zero123 && $prior != stable_zero123 ]]; then
  echo "PRIOR must be sd, zero123 or stable_zero123, got '$prior'" >&2
  exit 2
fi
out=${1:-/tmp/toy-$prior-gpu}
steps=${STEPS:-20000}
channels=${CHANNELS:-"24 48 96"}
batch=${BATCH:-128}
device=${DEVICE:-cuda}
mkdir -p "$out"
python -m pytest -q -p no:cacheprovider tests/test_toyworld_priors.py -k cuda
case $prior in
  sd)
    # shellcheck disable=SC2086  # CHANNELS is three words
    python -m threestudio_like.toyworld.train_sd --device "$device" --threads 8 --work-dir "$out/work" \
        --out "$out/toy-sd" --steps "$steps" --batch-size "$batch" --unet-channels $channels \
        --n-images "${N_IMAGES:-24000}" --checkpoint-every 2000 --log-every 500
    python benchmarks/bench_toy_prior.py --model "$out/toy-sd" --threads 8 | tee "$out/prior.json"
    ;;
  zero123)
    # shellcheck disable=SC2086
    python -m threestudio_like.toyworld.train_zero123 --device "$device" --threads 8 --work-dir "$out/work" \
        --out "$out/toy-zero123" --steps "$steps" --batch-size "$batch" --unet-channels $channels \
        --n-images "${N_IMAGES:-12000}" --checkpoint-every 2000 --log-every 500 --target-backdrop
    python benchmarks/bench_toy_zero123_pose.py --model "$out/toy-zero123" --pairs 32 --threads 8 --target-backdrop \
        | tee "$out/prior.json"
    ;;
  stable_zero123)
    # shellcheck disable=SC2086  # CHANNELS, TRAIN_ARGS and ELEVATION_ARGS are several words
    python -m threestudio_like.toyworld.train_zero123 --device "$device" --threads 8 --work-dir "$out/work" \
        --out "$out/toy-stable-zero123" --steps "$steps" --batch-size "$batch" --unet-channels $channels \
        --n-images "${N_IMAGES:-12000}" --checkpoint-every 2000 --log-every 500 --target-backdrop \
        --pose-embedding stable_zero123 ${TRAIN_ARGS:-}
    # toy_anything3d's estimator settings on the 20 renders framed as photos at random yaws
    # (docs/preprocess.md, Elevation: the shipped prior 9.75°)
    python benchmarks/bench_elevation.py --model "$out/toy-stable-zero123" --samples 1 --steps 20 --threads 8 \
        --fill 0.6 --random-azimuth --estimator 'views=[[0,90],[0,-90],[10,0],[-10,0],[10,90],[10,-90]]' \
        'elevation_range=[-10,60]' align_input=true "device=$device" ${ELEVATION_ARGS:-} | tee "$out/elevation.json"
    echo "then, on a CPU: python benchmarks/bench_toy_preprocess.py --photos 60 --seed 1 --zero123 $out/toy-stable-zero123 --threads 2"
    ;;
esac
