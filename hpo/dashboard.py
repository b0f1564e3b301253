"""``hpo dashboard``: optuna-dashboard on a study storage, loopback unless told otherwise.

optuna-dashboard has no authentication: anyone who reaches the port can read and change every
study. Binding to another interface therefore needs an explicit flag. The storage is opened the
way workers open it (SQLite in WAL mode with a busy timeout), so the dashboard's reads do not
make running trials fail with "database is locked".
"""

import ipaddress
import socket
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import optuna_dashboard

from hpo.errors import UsageError
from hpo.urls import artifact_dir, mask_password


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def make_dashboard_server(
    storage: optuna.storages.BaseStorage,
    storage_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    allow_remote: bool = False,
) -> WSGIServer:
    """A WSGI server for optuna-dashboard on ``storage``, not yet serving (port 0: any free)."""
    if not is_loopback(host) and not allow_remote:
        raise UsageError(
            f"--host {host}: the dashboard has no authentication (allowed: 127.0.0.1, ::1 or "
            "localhost; pass --i-understand-there-is-no-authentication to bind elsewhere)"
        )
    directory = artifact_dir(storage_url)
    directory.mkdir(parents=True, exist_ok=True)
    app = optuna_dashboard.wsgi(
        storage, artifact_store=optuna.artifacts.FileSystemArtifactStore(directory)
    )
    try:
        return make_server(host, port, app, handler_class=_QuietHandler)
    except (OSError, socket.gaierror) as e:
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({e})") from None


def serve_dashboard(
    storage: optuna.storages.BaseStorage,
    storage_url: str,
    *,
    host: str,
    port: int,
    allow_remote: bool,
) -> None:
    """Serve until Ctrl-C."""
    server = make_dashboard_server(
        storage, storage_url, host=host, port=port, allow_remote=allow_remote
    )
    if not is_loopback(host):
        print(
            f"warning: serving {mask_password(storage_url)} on {host} without authentication",
            file=sys.stderr,
        )
    shown_host = f"[{host}]" if ":" in host else host
    print(
        f"optuna-dashboard for {mask_password(storage_url)} at "
        f"http://{shown_host}:{server.server_port}/dashboard (Ctrl-C stops it)",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
