"""Tomcat's own code, read from Debian's jars: its log messages, and with ``javap``, what a method catches.

Why does Tomcat 10.1 no longer log the seed's INFO line "Failed to close the
ServletOutputStream connection cleanly"? The answer is in three methods of the
close path. Rather than quote a source tree that may not be the one installed,
the lab reads the bytecode of the jars Tomcat really runs from
(``/usr/share/tomcat10/lib``) with the JDK's ``javap -c -l -p``:

- :func:`javap` runs it on some classes; :func:`parse_javap` splits its output
  into :class:`MethodCode` objects (instructions, exception table, line numbers);
- :meth:`MethodCode.call` finds the call to a method, its source line, and the
  ``catch`` that guards it (:class:`Guarded`): which exception type it catches,
  what it logs, and whether only when debug logging is on;
- :func:`tomcat_message` looks up the English text of a log message key
  (``wsRemoteEndpointServer.closeFailed``) in the jars' ``LocalStrings.properties``;
  :func:`constant` and :meth:`MethodCode.property_default` read a default value.

Everything except :func:`javap` and :func:`tomcat_message` is pure text parsing.
"""

from __future__ import annotations

import asyncio
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LabError
from .programs import JAVAC, TOMCAT
from .timing import scaled

__all__ = ["Guarded", "MethodCode", "constant", "javap", "parse_javap", "tomcat_message"]

# "      16: invokevirtual #246   // Method org/apache/tomcat/util/net/SocketWrapperBase.close:()V"
_INSTRUCTION = re.compile(r"^\s+(?P<offset>\d+): (?P<op>\w+)\s*(?P<rest>.*)$")
# "          12    19    22   Class java/lang/Exception" (or "any": a finally block)
_HANDLER = re.compile(r"^\s+(?P<start>\d+)\s+(?P<end>\d+)\s+(?P<target>\d+)\s+(?:Class )?(?P<type>\S+)$")
# "      line 352: 12"
_LINE = re.compile(r"^\s+line (?P<line>\d+): (?P<offset>\d+)$")
# A method's (or a class's) first line: two spaces, a declaration, ";" or " {".
_DECLARATION = re.compile(r"^  (?P<declaration>[^ ].*\))(?: throws (?P<throws>[^;]+))?;$")
_CLASS = re.compile(r"^(?:public |protected |private |abstract |final |static )*(?:class|interface) (?P<name>\S+)")
_LOG_CALL = re.compile(r"org/apache/juli/logging/Log\.(?P<level>trace|debug|info|warn|error|fatal):")
_ENABLED = re.compile(r"org/apache/juli/logging/Log\.is(?P<level>\w+)Enabled:")


@dataclass(frozen=True)
class Guarded:
    """A call inside a ``try``, and what its ``catch`` does.

    Attributes:
        catches: The exception type caught, e.g. ``java.lang.Throwable``.
        lines: The catch block's source lines (first, last).
        logs: What it logs: ``(level, message key)``, e.g. ``("info", "wsRemoteEndpointServer.closeFailed")``.
        only_if: The level the logging is conditional on, e.g. ``"Debug"`` for ``if (log.isDebugEnabled())``.
    """

    catches: str
    lines: tuple[int, int]
    logs: list[tuple[str, str]]
    only_if: str | None


@dataclass
class MethodCode:
    """One method, as ``javap -c -l -p`` shows it.

    Attributes:
        owner: The class, e.g. ``org.apache.tomcat.util.net.NioEndpoint$NioSocketWrapper``.
        declaration: Its declaration, e.g. ``protected void doClose()``.
        throws: The checked exceptions it declares (``throws ...``); empty if none.
        instructions: ``(offset, opcode, the rest of the line)``.
        handlers: The exception table: ``(start, end, target, type)``; type ``any`` is a ``finally``.
        line_numbers: ``(source line, first offset)``.
    """

    owner: str
    declaration: str
    throws: list[str] = field(default_factory=list)
    instructions: list[tuple[int, str, str]] = field(default_factory=list)
    handlers: list[tuple[int, int, int, str]] = field(default_factory=list)
    line_numbers: list[tuple[int, int]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``doClose``; ``<clinit>`` for a class's ``static {}`` block."""
        if self.declaration == "static {}":
            return "<clinit>"
        return self.declaration.partition("(")[0].rpartition(" ")[2]

    def property_default(self, name: str) -> int | None:
        """The default of ``Integer.getInteger(name, default)`` in this method: the int pushed right
        after the property's name, e.g. 10 for ``org.apache.tomcat.websocket.DEFAULT_PROCESS_PERIOD``."""
        for (_, op, rest), (_, push, value) in zip(self.instructions, self.instructions[1:], strict=False):
            if op.startswith("ldc") and rest.endswith(f"// String {name}") and push in ("bipush", "sipush"):
                return int(value.split()[0])
        return None

    def line_at(self, offset: int) -> int | None:
        """The source line of the instruction at ``offset``."""
        starts = [(start, line) for line, start in self.line_numbers if start <= offset]
        return max(starts)[1] if starts else None

    def _catch_block(self, try_end: int, target: int) -> list[tuple[int, str, str]]:
        """The instructions of the catch block at ``target``, for a try block that ends at ``try_end``.

        After the try block, javac jumps over the catch block (``goto``) to the code after both:
        the catch block ends there. Without such a jump, it ends at its first goto, return or athrow.
        """
        after = next((int(rest.split()[0]) for o, op, rest in self.instructions if o == try_end and op == "goto"), None)
        block = []
        for instruction in self.instructions:
            offset, op, _ = instruction
            if offset < target or (after is not None and offset >= after):
                continue
            block.append(instruction)
            if after is None and (op in ("goto", "athrow") or op.endswith("return")):
                break
        return block

    def call(self, target: str) -> tuple[int | None, Guarded | None]:
        """The source line of the first call whose target contains ``target`` (e.g.
        ``SocketWrapperBase.close:``), and the ``catch`` that guards it (None: none does)."""
        found = next(((o, rest) for o, op, rest in self.instructions if op.startswith("invoke") and target in rest),
                     None)
        if found is None:
            raise LabError(f"{self.owner}.{self.name} has no call to {target}")
        offset = found[0]
        for start, end, handler, kind in self.handlers:
            if start <= offset < end and kind != "any":
                block = self._catch_block(end, handler)
                strings = [rest.rpartition("// String ")[2] for _, op, rest in block if op.startswith("ldc")]
                logs = [(m["level"], strings[-1] if strings else "") for _, _, rest in block
                        if (m := _LOG_CALL.search(rest))]
                only_if = next((m["level"] for _, _, rest in block if (m := _ENABLED.search(rest))), None)
                lines = [line for o, _, _ in block if (line := self.line_at(o)) is not None]
                return self.line_at(offset), Guarded(kind.replace("/", "."), (min(lines), max(lines)), logs, only_if)
        return self.line_at(offset), None


def parse_javap(text: str) -> dict[str, MethodCode]:
    """``javap -c -l -p`` output as ``{"Class.method": MethodCode}`` (the first of any overloads)."""
    methods: dict[str, MethodCode] = {}
    owner, current, section = "", None, ""
    for line in text.splitlines():
        if (klass := _CLASS.match(line)) is not None:
            owner, current = re.sub(r"<.*>", "", klass["name"]), None  # SocketWrapperBase<E> -> SocketWrapperBase
        elif line == "  static {};":  # the class's static initializer
            current = MethodCode(owner, "static {}")
            methods.setdefault(f"{owner.rpartition('.')[2]}.<clinit>", current)
        elif (declared := _DECLARATION.match(line)) is not None:
            throws = [t.strip() for t in (declared["throws"] or "").split(",") if t.strip()]
            current = MethodCode(owner, declared["declaration"], throws)
            methods.setdefault(f"{owner.rpartition('.')[2]}.{current.name}", current)
        elif current is not None and line.strip() in ("Code:", "Exception table:", "LineNumberTable:",
                                                      "LocalVariableTable:"):
            section = line.strip()
        elif current is not None and section == "Code:" and (m := _INSTRUCTION.match(line)):
            current.instructions.append((int(m["offset"]), m["op"], m["rest"]))
        elif current is not None and section == "Exception table:" and (m := _HANDLER.match(line)):
            current.handlers.append((int(m["start"]), int(m["end"]), int(m["target"]), m["type"]))
        elif current is not None and section == "LineNumberTable:" and (m := _LINE.match(line)):
            current.line_numbers.append((int(m["line"]), int(m["offset"])))
    return methods


def constant(text: str, name: str) -> str | None:
    """The value of a ``static final`` constant field, as ``javap -constants`` prints it (``20000l`` -> ``20000``)."""
    match = re.search(rf"^  .* {re.escape(name)} = (?P<value>.+);$", text, re.MULTILINE)
    return match["value"].rstrip("lLfFdD") if match else None


def _lib() -> Path:
    return Path(TOMCAT.require()).parent.parent / "lib"


async def javap(*classes: str, timeout: float = 30.0) -> str:
    """``javap -c -l -p -constants`` on classes of Tomcat's jars (``org.apache.tomcat.util.net.SocketWrapperBase``)."""
    javap_path = Path(JAVAC.require()).resolve().with_name("javap")
    classpath = ":".join(str(jar) for jar in sorted(_lib().glob("*.jar")))
    process = await asyncio.create_subprocess_exec(
        str(javap_path), "-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC", "-c", "-l", "-p", "-constants",
        "-cp", classpath,
        *classes, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        output, errors = await asyncio.wait_for(process.communicate(), scaled(timeout))
    except BaseException:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        first = (errors.decode(errors="replace").strip().splitlines() or ["no message"])[0]
        raise LabError(f"javap failed: {first}")
    return output.decode()


def tomcat_message(key: str) -> str:
    """The English text of one of Tomcat's log message keys, from its jars' ``LocalStrings.properties``."""
    for jar in sorted(_lib().glob("*.jar")):
        with zipfile.ZipFile(jar) as archive:
            for name in archive.namelist():
                if name.endswith("/LocalStrings.properties"):
                    for line in archive.read(name).decode("utf-8", errors="replace").splitlines():
                        if line.startswith(f"{key}="):
                            return line.partition("=")[2].strip()
    raise LabError(f"no message {key!r} in Tomcat's jars")
