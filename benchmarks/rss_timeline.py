"""Where a command's memory peak is: its resident memory sampled every 0.1 s beside its log lines.

    python benchmarks/rss_timeline.py python -m bertfit train --train ../shared/datasets/glue/SST-2/train.tsv.gz \
        --dev ../shared/datasets/glue/SST-2/dev.tsv --text-column sentence --label-column label \
        --train-limit 8000 --epochs 1 --batch-size 32 --output /tmp/run --overwrite --no-progress

Prints the peak and when it happened, then one RSS sample a second interleaved with the
command's stderr lines (what phase it was in). Linux only (reads /proc).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time


def sample_rss(process: subprocess.Popen, start: float, samples: list[tuple[float, int]]) -> None:
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS"):
                        samples.append((time.time() - start, int(line.split()[1]) // 1024))
        except OSError:  # the process just ended
            pass
        time.sleep(0.1)


def main(command: list[str]) -> int:
    start = time.time()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, int]] = []
    threading.Thread(target=sample_rss, args=(process, start, samples), daemon=True).start()
    lines = [(time.time() - start, line.rstrip()) for line in process.stderr]
    process.wait()
    if samples:
        at, peak = max(samples, key=lambda s: s[1])
        print(f"peak {peak:,} MB at {at:.1f} s")
    events = [(t, f"log {text}") for t, text in lines] + [
        (t, f"rss {mb} MB") for t, mb in samples[::10]
    ]
    for t, event in sorted(events):
        print(f"{t:7.1f} s  {event}")
    return process.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
