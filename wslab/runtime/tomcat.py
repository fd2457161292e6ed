"""A real Tomcat 10 from Debian, running the lab's JSR-356 endpoints, as a child process.

The seed's bug lives in a Java server, so notebook 09 runs one: Debian's
``tomcat10-common`` (Tomcat itself, in ``/usr/share/tomcat10``) on Debian's
JDK. The lab never touches a system-wide Tomcat. :func:`launch_tomcat` does:

1. ``javac`` the endpoints' ``.java`` files against Tomcat's WebSocket API jars;
2. build a private ``CATALINA_BASE`` in a temporary directory: ``conf/`` from
   ``tomcat-base/`` next to this file, a TLS certificate from trustme, and the
   classes in ``webapps/ROOT/WEB-INF/classes``, where Tomcat finds every
   ``@ServerEndpoint``;
3. start Tomcat with one NIO TLS connector on 127.0.0.1 and a free port (the
   seed's ``https-jsse-nio`` connector), and wait until ``/ready.txt`` answers
   over HTTPS.

Tomcat logs to the console with its ``OneLineFormatter``, as in the seed's
log; the lab keeps it in ``catalina.out`` and :meth:`Tomcat.log` parses it
(see :mod:`wslab.runtime.javalog`). ``lab.close()`` stops Tomcat with SIGKILL:
the base is thrown away, and a graceful shutdown only adds warnings to the log.

Linux only (notebook 09 also needs network namespaces). Without Java or
Tomcat, tests and notebook 09 skip with the install command; in CI they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .childprocess import ChildProcess, free_port
from .errors import LabError
from .javalog import TomcatLog
from .lab import Lab
from .programs import JAVAC, TOMCAT, TOMCAT_INSTALL, TOMCAT_NOTEBOOK
from .timeline import EventKind
from .timing import scaled

__all__ = [
    "INSTALL", "JAVAC", "NOTEBOOK", "TOMCAT", "CompiledClasses", "Tomcat", "compile_endpoints", "compile_java",
    "launch_tomcat", "tomcat_skip_reason", "tomcat_version",
]

NOTEBOOK = TOMCAT_NOTEBOOK
INSTALL = TOMCAT_INSTALL["Debian/Ubuntu"]
# The configuration every private CATALINA_BASE starts from (shipped with wslab as package data).
BASE_TEMPLATE = Path(__file__).with_name("tomcat-base")
# Tomcat logs into this file of its base directory.
LOG_NAME = "catalina.out"


def tomcat_skip_reason() -> str | None:
    """Why Tomcat can't run here, in one line, or None (it can, or this is CI, where it must)."""
    return JAVAC.skip_reason() or TOMCAT.skip_reason()


def _java() -> str:
    javac = Path(os.path.realpath(JAVAC.require()))
    java = javac.with_name("java")
    if not java.is_file():
        raise LabError(f"no java next to {javac}: {INSTALL}")
    return str(java)


def _catalina_home() -> Path:
    return Path(TOMCAT.require()).parent.parent  # .../tomcat10/bin/catalina.sh -> .../tomcat10


def tomcat_version(timeout: float = 30.0) -> str:
    """Tomcat's and the JVM's versions, as Tomcat's own ``ServerInfo`` prints them: two lines.

    A notebook prints it next to anything it says about a version (line numbers, defaults).
    """
    lib = _catalina_home() / "lib"
    classpath = os.pathsep.join(str(lib / jar) for jar in ("catalina.jar", "tomcat-util.jar"))
    result = subprocess.run([_java(), "-cp", classpath, "org.apache.catalina.util.ServerInfo"],
                            capture_output=True, text=True, timeout=scaled(timeout))
    lines = [line for line in result.stdout.splitlines() if line.startswith(("Server version:", "JVM Version:"))]
    if result.returncode != 0 or len(lines) != 2:
        raise LabError(f"cannot read Tomcat's version: {(result.stderr or result.stdout).strip()[-200:]}")
    return "\n".join(lines)


async def compile_java(sources: Sequence[str | Path], classes: str | Path, *, timeout: float = 60.0) -> float:
    """``javac`` the endpoints into the directory ``classes``; return how long it took, in seconds.

    The classpath is Tomcat's two WebSocket API jars: ``jakarta.websocket.server``
    (``@ServerEndpoint``) is in one, ``Session`` and ``@OnOpen`` are in the other.

    Raises:
        LabError: a source is missing, or javac failed (its first error line,
            e.g. ``Broken.java:31: error: ';' expected``).
    """
    missing = [str(s) for s in sources if not Path(s).is_file()]
    if missing or not sources:
        raise LabError(f"no Java source to compile: {', '.join(missing) or 'none given'}")
    lib = _catalina_home() / "lib"
    classpath = os.pathsep.join(str(lib / jar) for jar in ("websocket-api.jar", "websocket-client-api.jar"))
    argv = [
        JAVAC.require(),
        # javac's JVM lives a second: the optimizing compiler and the parallel GC only slow its start.
        "-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC",
        "-encoding", "UTF-8", "-cp", classpath, "-d", str(classes), *map(str, sources),
    ]
    Path(classes).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), scaled(timeout))
    except BaseException:  # the deadline, or the notebook's "interrupt": never leave javac behind
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        lines = output.decode(errors="replace").splitlines()
        first = next((line for line in lines if ": error: " in line), lines[0] if lines else "no message")
        for source in sources:  # "/tmp/.../Broken.java:31: error: ..." -> "Broken.java:31: error: ..."
            first = first.replace(str(Path(source).parent) + os.sep, "")
        raise LabError(f"javac failed: {first}")
    return time.monotonic() - started


class CompiledClasses:
    """Compiled endpoints, in a temporary directory of their own. ``close()`` (the lab's) deletes it.

    Attributes:
        path: The directory: give it to ``launch_tomcat(classes=...)`` or ``run_vanish(classes=...)``.
        javac_s: Seconds ``javac`` took.
    """

    def __init__(self, directory: tempfile.TemporaryDirectory[str], javac_s: float) -> None:
        self._directory = directory
        self.path = Path(directory.name)
        self.javac_s = javac_s

    def close(self) -> None:
        self._directory.cleanup()

    def __repr__(self) -> str:
        return f"<CompiledClasses {sorted(p.name for p in self.path.rglob('*.class'))}>"


async def compile_endpoints(lab: Lab, sources: Sequence[str | Path], *, name: str = "classes") -> CompiledClasses:
    """``javac`` the endpoints once, into a directory the lab tracks under ``name``: every Tomcat of a
    notebook can then start from the same classes. Re-running closes (deletes) the old directory first."""
    await lab.close(name)
    directory = tempfile.TemporaryDirectory(prefix="wslab-classes-")
    os.chmod(directory.name, 0o755)  # readable by the root of a user namespace too (run_vanish without root)
    try:
        javac_s = await compile_java(sources, directory.name)
    except BaseException:
        directory.cleanup()
        raise
    return await lab.track(name, CompiledClasses(directory, javac_s))


def _make_base(base: Path, classes: Path, fine: bool) -> None:
    """Fill the empty directory ``base`` with a CATALINA_BASE: conf, TLS files, the webapp."""
    import trustme  # only here: importing wslab must not need it

    shutil.copytree(BASE_TEMPLATE, base, dirs_exist_ok=True)
    for name in ("logs", "temp", "work", "tls"):
        (base / name).mkdir(exist_ok=True)
    root = base / "webapps" / "ROOT"
    shutil.copytree(classes, root / "WEB-INF" / "classes")
    (root / "ready.txt").write_text("ok\n")
    if fine:  # NioEndpoint at FINE: the close path's "Broken pipe", which 10.1 logs only then
        with open(base / "conf" / "logging.properties", "a") as config:
            config.write("org.apache.tomcat.util.net.NioEndpoint.level = FINE\n")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(base / "tls" / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(str(base / "tls" / "server-key.pem"))
    with open(base / "tls" / "server-chain.pem", "wb") as chain:  # the server's certificate, then the CA's
        for blob in server.cert_chain_pems:
            chain.write(blob.bytes())


def tomcat_command(
    java: str, home: Path, base: Path, port: int, properties: Mapping[str, object] | None = None,
) -> list[str]:
    """The ``java`` command line that runs Tomcat: what ``catalina.sh run`` would, minus its extras."""
    return [
        java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",  # starts faster; this Tomcat lives seconds
        # what catalina.sh adds on Java 9+, so Tomcat's memory-leak checks don't warn at start-up
        "--add-opens=java.base/java.lang=ALL-UNNAMED", "--add-opens=java.base/java.io=ALL-UNNAMED",
        "--add-opens=java.base/java.util=ALL-UNNAMED", "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
        "--add-opens=java.rmi/sun.rmi.transport=ALL-UNNAMED",
        "-cp", f"{home}/bin/bootstrap.jar{os.pathsep}{home}/bin/tomcat-juli.jar",
        f"-Dcatalina.home={home}", f"-Dcatalina.base={base}", f"-Djava.io.tmpdir={base}/temp",
        "-Djava.util.logging.manager=org.apache.juli.ClassLoaderLogManager",
        f"-Djava.util.logging.config.file={base}/conf/logging.properties",
        # log times in UTC with English month names, so javalog can read them back exactly
        "-Duser.timezone=UTC", "-Duser.language=en", "-Duser.country=US",
        # a port that someone took meanwhile: exit (the lab says why) instead of running without a connector
        "-Dorg.apache.catalina.startup.EXIT_ON_INIT_FAILURE=true",
        f"-Dlab.port={port}", f"-Dlab.cert={base}/tls/server-chain.pem", f"-Dlab.key={base}/tls/server-key.pem",
        *(f"-D{key}={value}" for key, value in (properties or {}).items()),
        "org.apache.catalina.startup.Bootstrap", "start",
    ]


async def _serves(port: int, context: ssl.SSLContext, path: str = "/ready.txt") -> bool:
    """True if an HTTPS GET of ``path`` answers 200: the connector is up and the webapp deployed."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), 2.0)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readline(), 2.0)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    return status.startswith(b"HTTP/1.1 200")


class Tomcat(ChildProcess):
    """Tomcat, running the lab's endpoints. Start it with :func:`launch_tomcat`.

    Attributes:
        port: Its TLS connector's port on 127.0.0.1.
        base: Its private CATALINA_BASE (:attr:`directory`); deleted by ``lab.close()``.
        ca_file: The CA certificate that signed its certificate: clients trust this one.
        javac_s: Seconds ``javac`` took (0 when given compiled classes).
        start_s: Seconds from starting the JVM to ``/ready.txt`` answering.
        properties: The ``-D`` system properties it was started with, e.g. ``{"lab.payloadBytes": 65536}``.
    """

    port: int = 0
    javac_s: float = 0.0
    start_s: float = 0.0
    properties: Mapping[str, object] = {}

    @property
    def base(self) -> Path:
        return self.directory

    @property
    def ca_file(self) -> Path:
        return self.directory / "tls" / "ca.pem"

    def url(self, path: str = "/") -> str:
        """``wss://127.0.0.1:PORT/broken`` for ``path="/broken"``."""
        return f"wss://127.0.0.1:{self.port}{path}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this Tomcat's certificate (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def log_text(self) -> str:
        """Everything Tomcat logged so far (its console: ``catalina.out``)."""
        with contextlib.suppress(FileNotFoundError):
            return (self.directory / LOG_NAME).read_text(encoding="utf-8", errors="replace")
        return ""

    def log(self) -> TomcatLog:
        """Tomcat's log so far, parsed into timestamped records with their stack traces."""
        return TomcatLog(self.log_text())

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.process.returncode}"
        return f"<Tomcat {self.name} {self.url()} pid {self.pid} {state}>"


async def launch_tomcat(
    lab: Lab,
    sources: Sequence[str | Path] = (),
    *,
    classes: str | Path | None = None,
    name: str = "tomcat",
    fine: bool = False,
    properties: Mapping[str, object] | None = None,
    timeout: float = 30.0,
) -> Tomcat:
    """Compile ``sources`` (or take compiled ``classes``), start Tomcat with them, wait until it serves.

    Args:
        lab: Tracks it under ``name``: re-running closes the old Tomcat first; ``lab.close()`` kills it.
        sources: The endpoints' ``.java`` files.
        classes: Or a directory of compiled classes (from :func:`compile_java`): no javac.
        fine: Log ``org.apache.tomcat.util.net.NioEndpoint`` at FINE (debug).
        properties: Java system properties, e.g. ``{"lab.sendTimeoutMs": 2000}``.
        timeout: Seconds (scaled) for Tomcat to serve ``/ready.txt``.

    Raises:
        LabError: Java or Tomcat is missing (with the install command), javac failed, or Tomcat
            did not start (with the last line it logged).
    """
    if (classes is None) == (not sources):
        raise LabError("give launch_tomcat either Java sources or a directory of compiled classes")
    java, home = _java(), _catalina_home()
    await lab.close(name)
    with tempfile.TemporaryDirectory(prefix="wslab-javac-") as scratch:
        javac_s = 0.0
        if classes is None:
            classes = Path(scratch)
            javac_s = await compile_java(sources, classes)
        port = free_port()
        context: list[ssl.SSLContext] = []  # made once the CA exists, then reused by every poll

        async def ready(base: Path) -> bool:
            if not context:
                context.append(ssl.create_default_context(cafile=str(base / "tls" / "ca.pem")))
            return await _serves(port, context[0])

        started = time.monotonic()
        tomcat = await Tomcat.start(
            lab, name, lambda base: tomcat_command(java, home, base, port, properties),
            ready=ready, timeout=timeout, prepare=lambda base: _make_base(base, Path(classes), fine),
            stop_signal=signal.SIGKILL, log_name=LOG_NAME,
        )
    assert isinstance(tomcat, Tomcat)
    tomcat.port, tomcat.javac_s, tomcat.start_s = port, javac_s, time.monotonic() - started
    tomcat.properties = dict(properties or {})
    lab.timeline.record(name, EventKind.LISTENING, detail=tomcat.url())
    return tomcat
