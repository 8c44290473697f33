#!/usr/bin/env bash
# The one prepared check for a machine with a CUDA GPU (one H100: ≤ 8 minutes). Prints one JSON:
#   parity    — the CUDA parity tests (tcnn, nvdiffrast raster and bake, nerfacc, gsplat, fp16 SDS/VSD):
#               passed / skipped / failed and the names of the failures;
#   real_size — benchmarks/bench_real_size.py on the device: per experiment and stage, s/step, peak
#               CUDA memory, the memory estimate (random-weight real architectures; built if missing);
#   toy       — the embedded default (python launch.py) on the device: its toy-world score (IoU);
#   make_test — `make test` on this machine: exit status and its last line.
# Each part gets what is left of TIME_LIMIT (480 s) at most; a part cut short says "timed out".
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]     # env: DEVICE (cuda), TIME_LIMIT (480), EXPERIMENTS
#                                              # (every experiment with random checkpoints; not the IF ones)
#   DEVICE=cpu bash benchmarks/gpu_check.sh /tmp/gpu-check   # dry run: tiny sizes, `make -n test`
set -uo pipefail
out=${1:-/tmp/gpu-check}
device=${DEVICE:-cuda}
limit=${TIME_LIMIT:-480}
experiments=${EXPERIMENTS:-"dreamfusion magic3d prolificdreamer zero123 makeit3d dreamgaussian dreamgaussian_image mvdream anything3d"}
py=${PYTHON:-python}
mkdir -p "$out"
start=$SECONDS
left() { echo $((limit - (SECONDS - start) > 10 ? limit - (SECONDS - start) : 10)); }

timeout "$(left)" "$py" -m pytest -q -p no:cacheprovider --junitxml="$out/parity.xml" \
    tests/test_hash_encoding.py::test_tcnn_matches_torch_twin \
    tests/test_rasterize.py::test_parity_with_nvdiffrast \
    tests/test_export_bake.py::test_bake_nvdiffrast_matches_torch \
    tests/test_volume_renderer.py::test_nerfacc_matches_torch_twin \
    tests/test_splat.py::test_parity_with_gsplat \
    tests/test_sds.py::test_cuda_half_precision_matches_fp32 \
    tests/test_vsd.py::test_cuda_half_precision_keeps_trainable_weights_fp32 >"$out/parity.log" 2>&1
echo $? >"$out/parity.rc"

if [ "$device" = cpu ]; then
    bench_args=(--tiny --experiments dreamfusion)
    toy_args=(debug=smoke)
    make_args=(-n test)
else
    # shellcheck disable=SC2206  # EXPERIMENTS is a list of words
    # one process per experiment: on CUDA each stage's peak is torch's, reset at the stage's start
    bench_args=(--same-process --experiments $experiments)
    toy_args=()
    make_args=(test)
fi
timeout "$(left)" "$py" benchmarks/bench_real_size.py --device "$device" "${bench_args[@]}" \
    >"$out/real_size.json" 2>"$out/real_size.log"
echo $? >"$out/real_size.rc"
rm -rf "$out/toy"
timeout "$(left)" "$py" launch.py trainer.device="$device" trainer.progress=false "${toy_args[@]}" \
    output_dir="$out/toy" >"$out/toy.log" 2>&1
echo $? >"$out/toy.rc"
timeout "$(left)" make "${make_args[@]}" >"$out/make_test.log" 2>&1
echo $? >"$out/make_test.rc"

"$py" - "$out" "$device" $((SECONDS - start)) <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, device, seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rc = lambda name: int((out / f"{name}.rc").read_text())  # noqa: E731
status = lambda name: "timed out" if rc(name) == 124 else rc(name)  # noqa: E731
result = {"device": device, "seconds": seconds}
cases = ET.parse(out / "parity.xml").getroot().iter("testcase") if (out / "parity.xml").is_file() else []
parity = {"passed": 0, "skipped": 0, "failed": [], "rc": status("parity")}
for case in cases:
    if case.find("skipped") is not None:
        parity["skipped"] += 1
    elif case.find("failure") is not None or case.find("error") is not None:
        parity["failed"].append(case.get("name"))
    else:
        parity["passed"] += 1
result["parity"] = parity
try:
    result["real_size"] = json.loads((out / "real_size.json").read_text())
except (OSError, ValueError):
    result["real_size"] = {"rc": status("real_size"), "log": (out / "real_size.log").read_text()[-500:]}
toy = {"rc": status("toy")}
metrics = out / "toy" / "metrics.jsonl"
if metrics.is_file():
    evals = [r for r in map(json.loads, metrics.read_text().splitlines()) if r.get("stage") == "eval"]
    if evals:
        toy.update({k: evals[-1][k] for k in ("toy_shape", "iou", "color") if k in evals[-1]})
result["toy"] = toy
log = (out / "make_test.log").read_text().strip().splitlines()
result["make_test"] = {"rc": status("make_test"), "last_line": log[-1] if log else ""}
print(json.dumps(result))
EOF
