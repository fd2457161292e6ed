"""The nginx config the lab writes: the settings it exposes, the ``nginx.conf`` they make, and ``nginx -t``.

:mod:`wslab.runtime.nginx` starts nginx with this config and reloads it.
Seconds may be fractions here; nginx reads none, so ``0.5`` is written ``500ms``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LabError
from .timing import scaled

__all__ = ["LEVELS", "READY_PATH", "NginxSettings", "check_config", "render_config", "settings_with"]


# nginx's error.log levels, least severe first.
LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")

# A location nginx answers itself: the lab asks it which config generation the workers run.
READY_PATH = "/.wslab/ready"


@dataclass(frozen=True)
class NginxSettings:
    """What the lab's nginx config says. Seconds may be fractions: ``0.5`` is written ``500ms``.

    Attributes:
        read_timeout: ``proxy_read_timeout``: a tunnel that carries no bytes, either way, for this long is cut.
        send_timeout: ``proxy_send_timeout``: a write to the server that makes no progress for this long is cut.
        forward_upgrade: Pass the ``Upgrade`` and ``Connection`` headers on. Without them the server sees a plain GET.
        http_version: ``proxy_http_version``. WebSocket needs ``"1.1"``: HTTP/1.0 has no Upgrade.
        worker_shutdown_timeout: After a reload, old workers cut the tunnels they still carry after
            this many seconds. None: they wait for every tunnel to end, however long that takes.
        worker_processes: How many workers accept connections.
        backups: How many of the upstreams, counted from the last, are ``backup`` servers: nginx sends
            them connections only while every other one refuses them. A blue/green deploy: the old
            server stops accepting, and reconnections land on the new one, in the backup's place.
        log_level: The least severe level error.log records. The idle cut is logged at ``"info"``.
        extra: More directives for the ``location /`` block, written as they are.
    """

    read_timeout: float = 60.0
    send_timeout: float = 60.0
    forward_upgrade: bool = True
    http_version: str = "1.1"
    worker_shutdown_timeout: float | None = None
    worker_processes: int = 1
    backups: int = 0
    log_level: str = "info"
    extra: str = ""


def settings_with(base: NginxSettings, changes: dict[str, Any]) -> NginxSettings:
    """``base`` with ``changes``, or a LabError that names the settings there are."""
    known = [f.name for f in dataclasses.fields(NginxSettings)]
    for key in changes:
        if key not in known:
            raise LabError(f"unknown nginx setting {key!r}: the settings are {', '.join(known)}")
    return dataclasses.replace(base, **changes)


def _time(seconds: float | str) -> str:
    """nginx's spelling of a duration: ``2s``, or ``500ms`` (nginx reads no fractions)."""
    if isinstance(seconds, str):
        return seconds
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def render_config(port: int, upstreams: Sequence[tuple[str, int]], settings: NginxSettings, generation: int = 1) -> str:
    """The nginx.conf the lab writes. Paths are relative to nginx's private directory (``nginx -p DIR``)."""
    s = settings
    main = [f"worker_processes {s.worker_processes};"]
    if s.worker_shutdown_timeout is not None:
        main.append(f"worker_shutdown_timeout {_time(s.worker_shutdown_timeout)};"
                    "  # after a reload, old workers cut their tunnels after this")
    if not 0 <= s.backups < len(upstreams):
        raise LabError(f"backups={s.backups}: nginx needs at least one upstream that is not a backup, "
                       f"and there are {len(upstreams)}")
    primary = len(upstreams) - s.backups
    servers = [f"        server {host}:{up_port}{' backup' if i >= primary else ''};"
               for i, (host, up_port) in enumerate(upstreams)]
    if s.worker_processes != 1:
        # Shared memory, so that all workers take turns together instead of each from the first server.
        servers.insert(0, "        zone websocket_servers 64k;")
    # (directive, comment) pairs for "location /": the comments say why each line is there.
    proxy = [(f"proxy_http_version {s.http_version};", "WebSocket needs 1.1: HTTP/1.0 has no Upgrade")]
    if s.forward_upgrade:
        proxy += [
            ("proxy_set_header Upgrade $http_upgrade;", "hop-by-hop headers: nginx drops them"),
            ('proxy_set_header Connection "upgrade";', "unless told to pass them on"),
        ]
    else:
        proxy.append(("", "Upgrade and Connection are not passed on: the server sees a plain GET"))
    proxy += [
        ("proxy_set_header Host $http_host;", "the host and port the client asked for"),
        ("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;", ""),
        (f"proxy_read_timeout {_time(s.read_timeout)};", "no bytes either way for this long: cut"),
        (f"proxy_send_timeout {_time(s.send_timeout)};", "a write to the server stuck this long: cut"),
        *((line.strip(), "") for line in s.extra.strip().splitlines()),
    ]
    location = [f"{directive:<41} # {comment}".strip() if comment else directive for directive, comment in proxy]
    indent = "\n" + " " * 12
    return f"""\
# nginx in front of the lab's WebSocket servers, written by wslab (generation {generation}).
# Relative paths are in nginx's private directory (nginx -p DIR).
daemon off;  # the lab is its parent: it stays in the foreground
{chr(10).join(main)}
pid nginx.pid;
error_log error.log {s.log_level};

events {{
    worker_connections 1024;
}}

http {{
    access_log access.log;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

    upstream websocket_servers {{  # round robin, when there are several; a backup only when the others refuse
{chr(10).join(servers)}
    }}

    server {{
        listen 127.0.0.1:{port};  # the lab opened this socket and passed it on (NGINX="fd;")

        location = {READY_PATH} {{  # the lab asks which config the workers run
            access_log off;
            return 200 "generation {generation}, worker $pid\\n";
        }}

        location / {{
            proxy_pass http://websocket_servers;
            {indent.join(location)}
        }}
    }}
}}
"""


async def check_config(executable: str, config: str, timeout: float = 10.0) -> None:
    """Run ``nginx -t`` on ``config`` in a scratch directory.

    Raises:
        LabError: nginx rejected it; the message is nginx's own ``[emerg]`` line.
    """
    with tempfile.TemporaryDirectory(prefix="wslab-nginx-check-") as scratch:
        path = Path(scratch) / "nginx.conf"
        path.write_text(config)
        process = await asyncio.create_subprocess_exec(
            executable, "-t", "-q", "-p", scratch, "-c", str(path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), scaled(timeout))
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise LabError(f"nginx -t did not finish within {scaled(timeout):g} s") from None
    if process.returncode == 0:
        return
    text = output.decode(errors="replace").replace(str(path), "nginx.conf")
    # nginx prints "[emerg] <what> in nginx.conf:<line>" after a timestamp and its pid (or "nginx: "),
    # then "test failed".
    emerg = re.search(r"\[emerg\] (?:\d+#\d+: )?(.*)", text)
    first = (text.strip().splitlines() or ["nginx -t failed"])[0]
    message = f"nginx: [emerg] {emerg.group(1).strip()}" if emerg else first
    if where := re.search(r"in nginx\.conf:(\d+)$", message):
        message += f" (that line: {config.splitlines()[int(where.group(1)) - 1].strip()!r})"
    raise LabError(f"nginx rejected the config: {message}")
