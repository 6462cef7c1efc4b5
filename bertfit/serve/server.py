"""``bertfit serve RUN``: load the model, bind the port, run the app under uvicorn until SIGTERM
or Ctrl-C, then finish the queued requests and exit 0."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys

from bertfit.config.serve import API_KEY_VARIABLE, ServeConfig
from bertfit.errors import ConfigError

log = logging.getLogger("bertfit.serve")


def serve(config: ServeConfig, ready=None) -> None:
    """Serve ``config.run_dir`` until stopped; ``ready(port)`` is called once it listens."""
    require_server_packages()
    import uvicorn

    from bertfit.runtime import cpu_threads
    from bertfit.serve.app import create_app
    from bertfit.serve.served import load_served

    config.validate()
    if config.api_key is None and os.environ.get(API_KEY_VARIABLE):
        config.api_key = os.environ[API_KEY_VARIABLE]
    with cpu_threads(config.threads) if config.threads else contextlib.nullcontext():
        served = load_served(config)  # a bad run fails here, before the port is bound
        sock = bind(config.host, config.port)
        port = sock.getsockname()[1]
        app = create_app(config, served)
        _log_to_stderr()
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=30)
        )
        where = f"http://{config.host}:{port}"
        log.info(f"serving {config.run_dir} on {where} (page: {where}/, API: {where}/docs)")
        if ready is not None:
            ready(port)
        with _quiet_resignal():
            server.run(sockets=[sock])
        log.info("stopped")


def require_server_packages() -> None:
    """A one-line error naming the extra when FastAPI, uvicorn or prometheus-client is missing."""
    import importlib.util

    missing = [
        name
        for name, module in (
            ("fastapi", "fastapi"),
            ("uvicorn", "uvicorn"),
            ("prometheus-client", "prometheus_client"),
        )
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ConfigError(f"bertfit serve needs {', '.join(missing)}: pip install 'bertfit[serve]'")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line error (port in use, address not on this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are
    # TCP, and with Nagle on, each answer's body waits ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there ({err.strerror})"
        ) from None
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _quiet_resignal():
    """uvicorn raises the signal that stopped it again once it has shut down gracefully; with
    a no-op handler meanwhile, a clean SIGTERM shutdown exits 0 instead of dying of it."""
    if sys.platform == "win32":
        yield
        return
    before = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _log_to_stderr() -> None:
    """The serve and access-log lines on stderr, once."""
    logger = logging.getLogger("bertfit.serve")
    if not any(getattr(h, "_bertfit_serve", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler._bertfit_serve = True
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
