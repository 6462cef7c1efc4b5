#!/usr/bin/env bash
# The accuracy runs of the issues' acceptance, on the shared real data (never copied here).
# Usage: bash benchmarks/acceptance.sh [sst2-8k|sst2-full|snli|imdb|mrpc|rte|stsb|sick] ...
#   (default: sst2-8k sst2-full snli). imdb needs IMDB_DIR: a folder holding the extracted
#   aclImdb/ (tar xzf ../shared/datasets/imdb/aclImdb_train.tar.gz -C "$IMDB_DIR").
# Each run prints its epoch lines; the figures land in runs/acceptance/<name>/results.json.
set -euo pipefail
data=${BERTFIT_DATA:-../shared/datasets}
sst=$data/glue/SST-2
runs=${RUNS:-runs/acceptance}
for job in "${@:-sst2-8k sst2-full snli}"; do
  for name in $job; do
    case $name in
      sst2-8k)   bertfit train --train "$sst/train.tsv.gz" --dev "$sst/dev.tsv" --text-column sentence \
                   --train-limit 8000 --epochs 1 --output "$runs/$name" --overwrite --no-progress ;;
      sst2-full) bertfit train --train "$sst/train.tsv.gz" --dev "$sst/dev.tsv" --text-column sentence \
                   --epochs 1 --output "$runs/$name" --overwrite --no-progress ;;
      snli)      bertfit train --train "$data/snli/validation.tsv" --text-column premise --pair-column hypothesis \
                   --epochs 2 --dev-fraction 0.1 --output "$runs/$name" --overwrite --no-progress ;;
      imdb)      bertfit train --task imdb --data-dir "$IMDB_DIR" --max-length 256 --truncation head-tail \
                   --train-limit 5000 --dev-fraction 0.1 --epochs 1 --output "$runs/$name" --overwrite --no-progress ;;
      mrpc|rte|stsb) bertfit train --task "$name" --data-dir "$data/glue" --output "$runs/$name" --overwrite --no-progress ;;
      sick)      bertfit train --task sick --data-dir "$data/sick" --output "$runs/$name" --overwrite --no-progress ;;
      *) echo "unknown run $name" >&2; exit 2 ;;
    esac
    python - "$runs/$name/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
shown = lambda m: ", ".join(f"{k} {v:.4f}" for k, v in m.items() if k in ("accuracy", "f1", "mcc", "pearson", "spearman"))
line = f"{sys.argv[1]}: dev {shown(r['dev'])}"
if "test" in r:
    line += f"; {r['test_split']} {shown(r['test'])}"
print(f"{line}; {r['train_examples_per_second']} train examples/s, {r['train_seconds']} s")
PY
  done
done
