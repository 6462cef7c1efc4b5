"""Tiny things for fast tests: a randomly initialised 2-layer BERT with a 60-word WordPiece vocab,
small generated data files, and a local HTTP file server. Nothing here touches the network
(beyond 127.0.0.1) or ../shared."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = (
    "the a movie film plot actor story scene music ending song cast script one it was is and "
    "of to very quite rather really but this that with for great awful long short new old"
).split()
MARKER = "great"
FILLER = [w for w in WORDS if w not in (MARKER, "awful")]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A Hugging Face-format folder: config.json, model.safetensors, vocab.txt, tokenizer files."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *WORDS,
        *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
    ]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(folder)
    # built from vocab.txt + config.json, as for a downloaded bert-base-uncased folder
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)
    return folder


def marker_rows(n: int, seed: int, pair: bool = False) -> list[dict]:
    """Learnable synthetic task: label pos iff the marker word occurs (in the pair text, for pairs)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = rng.choices(FILLER, k=rng.randint(3, 12))
        if positive:
            words.insert(rng.randrange(len(words) + 1), MARKER)
        text = " ".join(words)
        if pair:
            rows.append(
                {
                    "premise": " ".join(rng.choices(FILLER, k=rng.randint(3, 8))),
                    "hypothesis": text,
                    "label": "yes" if positive else "no",
                }
            )
        else:
            rows.append({"text": text, "label": "pos" if positive else "neg"})
    rng.shuffle(rows)
    return rows


def train_argv(train: Path, model: Path, output: Path) -> list[str]:
    """``bertfit train`` on a data file, an encoder folder and a run directory."""
    return ["train", "--train", str(train), "--model", str(model), "--output", str(output)]


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write rows as .jsonl, .csv or .tsv by extension (gzip for .gz)."""
    import csv
    import gzip
    import io

    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    buffer = io.StringIO()
    if name.endswith(".jsonl"):
        for row in rows:
            buffer.write(json.dumps(row) + "\n")
    else:
        writer = csv.DictWriter(
            buffer,
            fieldnames=list(rows[0]),
            delimiter="\t" if name.endswith(".tsv") else ",",
            lineterminator="\n",
        )
        writer.writeheader()
        writer.writerows(rows)
    data = buffer.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Iterator[Path]:
    """Every test's tokenisation and download cache, unless it names its own: never the user's
    ~/.cache, and ``$BERTFIT_CACHE`` is as it was once the session ends.

    Module- and session-scoped fixtures that need another cache set it with
    ``pytest.MonkeyPatch.context()`` (monkeypatch is function-scoped); tests use ``cache_env``.
    """
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("session-cache")
        patch.setenv("BERTFIT_CACHE", str(cache))
        yield cache


@pytest.fixture
def offline_env(tmp_path, monkeypatch) -> None:
    """No download can leave the machine; no data dir or mirror from the environment applies;
    the cache is in the test's own folder."""
    monkeypatch.setenv("BERTFIT_OFFLINE", "1")
    monkeypatch.setenv("BERTFIT_CACHE", str(tmp_path / "cache"))
    for name in ("BERTFIT_DATA_DIR", "BERTFIT_DATA_MIRROR", "BERTFIT_DEBUG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cache_env(tmp_path, monkeypatch) -> Path:
    """Keep the tokenisation cache inside the test's own folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BERTFIT_CACHE", str(cache))
    return cache


# A local HTTP server for download tests (test_download.py, test_tasks.py).


class FileServer:
    """Serves ``files`` by path, honours ``Range`` unless ``ignore_range``, and records requests.

    ``cut_after[path] = K`` sends only K bytes of the first response for ``path``, then drops the
    connection; ``delay`` slows every body so concurrent clients overlap.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}
        self.ignore_range = False
        self.delay = 0.0
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def bodies(self, path: str) -> int:
        """How many requests for ``path`` were answered with (part of) its body."""
        return sum(1 for p, _ in self.requests if p == path)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.requests.append((path, self.headers.get("Range")))
                    cut = server.cut_after.pop(path, None)
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted and not server.ignore_range:
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                time.sleep(server.delay)
                if cut is not None:
                    self.wfile.write(body[start : start + cut])
                    self.close_connection = True  # the client sees EOF before Content-Length
                    return
                self.wfile.write(body[start:])

        return Handler


@pytest.fixture
def server(monkeypatch):
    """A FileServer on 127.0.0.1 for the test; no proxy, no mirror in the environment."""
    from bertfit.data.download import MIRROR_ENV

    # A proxy in the environment must not intercept 127.0.0.1.
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    srv = FileServer()
    thread = threading.Thread(target=srv.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    thread.join()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)  # writestr keeps names as given, unlike write()
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz", symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
    return buffer.getvalue()


def multi_rows(n: int, seed: int) -> list[dict]:
    """Learnable multi-label: 'great' -> good, 'awful' -> bad, independently."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = [name for name in ("good", "bad") if rng.random() < 0.5]
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        words += ["great"] * ("good" in labels) + ["awful"] * ("bad" in labels)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": labels})
    return rows


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers and torchrun's rendezvous in tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_losses(run: Path) -> list[float]:
    """The loss of every optimizer step a run recorded (steps.jsonl)."""
    return [json.loads(line)["loss"] for line in (run / "steps.jsonl").read_text().splitlines()]


def train_in_one_and_two_processes(args: list[str], folder: Path):
    """The same ``bertfit train ARGS`` in one process (one thread) as ``folder/one`` and under
    torchrun in two (gloo, one thread each) as ``folder/two``; both must succeed. Returns the
    two finished processes (their stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = run_bounded(
        [sys.executable, "-m", "bertfit", *args, "--output", str(folder / "one"), "--threads", "1"],
        env, 300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = run_bounded(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
         "-m", "bertfit", *args, "--output", str(folder / "two")],
        env, 300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    return one, two


def run_bounded(command: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run a command (a torchrun job) in a session of its own; past ``timeout`` seconds the
    whole session is killed (the agent and every worker it started, none left behind) and the
    test fails rather than hangs."""
    job = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        out, err = job.communicate()
        pytest.fail(f"the job did not end in {timeout} s (a hang):\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, job.returncode, out, err)
