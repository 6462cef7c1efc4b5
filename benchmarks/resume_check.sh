#!/usr/bin/env bash
# Kill and resume the real default encoder on the bundled SST-2 sample (one epoch, 188 steps),
# with external signals at arbitrary moments, and compare with an uninterrupted run bit for bit.
#
#   bash benchmarks/resume_check.sh [WORK_DIR] [extra train flags, e.g. --deterministic]
#
# Prints one line per run and, at the end, whether the final weights are bit-identical.
set -euo pipefail
work=${1:-/tmp/bertfit-resume-check}
shift || true
samples=$(python -c "import bertfit, pathlib; print(pathlib.Path(bertfit.__file__).parent / 'samples')")
common=(--train "$samples/sst2_train.tsv.gz" --dev "$samples/sst2_dev.tsv" --text-column sentence
        --epochs 1 --save-steps 40 --no-progress "$@")
rm -rf "$work" && mkdir -p "$work" && cd "$work"

wait_for() { while [ ! -d "$1" ]; do sleep 0.5; done; }

bertfit train "${common[@]}" --output whole 2> whole.log
echo "uninterrupted: done"

bertfit train "${common[@]}" --output killed 2> killed.log & pid=$!
wait_for killed/checkpoint-80; sleep 7; kill -KILL "$pid"; wait "$pid" || echo "SIGKILL: exit $?, kept $(ls -d killed/checkpoint-*)"
bertfit train --resume killed --no-progress 2> killed-resume.log && echo "resumed after SIGKILL"

bertfit train "${common[@]}" --output stopped 2> stopped.log & pid=$!
wait_for stopped/checkpoint-40; sleep 3; kill -INT "$pid"; wait "$pid" || echo "SIGINT: exit $?: $(tail -1 stopped.log)"
bertfit train "${common[@]}" --output stopped --resume auto 2> stopped-resume.log && echo "resumed after SIGINT (--resume auto)"

python - <<'PY'
import json
from safetensors.torch import load_file

whole = load_file("whole/model.safetensors")
for run in ("killed", "stopped"):
    other = load_file(f"{run}/model.safetensors")
    same = all(whole[k].equal(other[k]) for k in whole)
    accuracy = [json.load(open(f"{r}/results.json"))["dev"]["accuracy"] for r in ("whole", run)]
    print(f"{run}: bit-identical weights {same}; dev accuracy {accuracy[0]:.4f} vs {accuracy[1]:.4f}")
PY
