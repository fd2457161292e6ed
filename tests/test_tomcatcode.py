"""Reading Tomcat's bytecode: why 10.1 no longer logs the seed's INFO line.

tests/data/tomcat/javap-close-path.txt is ``javap -c -l -p -constants`` of Debian's Tomcat 10.1.60
jars, trimmed to the methods notebook 09 reads. The pure tests read it; the last ones run javap
on the jars installed here (and skip without Tomcat, as the notebook does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wslab import LabError
from wslab.runtime.tomcat import tomcat_skip_reason
from wslab.runtime.tomcatcode import Guarded, constant, javap, parse_javap, tomcat_message

JAVAP = (Path(__file__).resolve().parent / "data" / "tomcat" / "javap-close-path.txt").read_text()
CLOSE_PATH = ("org.apache.tomcat.websocket.server.WsRemoteEndpointImplServer",
              "org.apache.tomcat.util.net.SocketWrapperBase", "org.apache.tomcat.util.net.NioEndpoint$NioSocketWrapper")
TOMCAT_SKIP = tomcat_skip_reason()
needs_tomcat = pytest.mark.skipif(TOMCAT_SKIP is not None, reason=TOMCAT_SKIP or "")


def test_methods_are_found_by_class_and_name_with_generics_and_nesting():
    methods = parse_javap(JAVAP)
    assert {"WsRemoteEndpointImplServer.doClose", "SocketWrapperBase.close", "NioEndpoint$NioSocketWrapper.doClose",
            "Constants.<clinit>"} <= set(methods)
    close = methods["SocketWrapperBase.close"]
    assert close.owner == "org.apache.tomcat.util.net.SocketWrapperBase"  # "<E>" dropped
    assert close.declaration == "public void close()" and close.throws == []
    assert close.line_at(0) == 659 and close.line_at(34) == 669  # LineNumberTable: the last start at or before


def test_the_server_endpoint_catches_what_close_throws_and_logs_the_seeds_info_line():
    line, guard = parse_javap(JAVAP)["WsRemoteEndpointImplServer.doClose"].call("SocketWrapperBase.close:")
    assert line == 352
    assert guard == Guarded("java.lang.Exception", (353, 355), [("info", "wsRemoteEndpointServer.closeFailed")], "Info")


def test_close_lets_no_checked_exception_through_and_nio_do_close_swallows_everything():
    methods = parse_javap(JAVAP)
    assert methods["SocketWrapperBase.close"].call("doClose:") == (669, None)  # only a finally around it
    line, guard = methods["NioEndpoint$NioSocketWrapper.doClose"].call("NioChannel.close:")
    assert line == 1643
    assert guard is not None and guard.catches == "java.lang.Throwable" and guard.only_if == "Debug"
    assert guard.logs == [("error", "endpoint.debug.channelCloseFail")] and guard.lines[0] == 1651


def test_defaults_are_read_from_the_constants_class():
    assert constant(JAVAP, "DEFAULT_BLOCKING_SEND_TIMEOUT") == "20000"
    assert constant(JAVAP, "NO_SUCH_FIELD") is None
    clinit = parse_javap(JAVAP)["Constants.<clinit>"]
    assert clinit.property_default("org.apache.tomcat.websocket.DEFAULT_PROCESS_PERIOD") == 10
    assert clinit.property_default("org.example.NOT_THERE") is None


def test_a_call_that_is_not_there_is_a_one_line_error():
    with pytest.raises(LabError, match=r"^org\.apache\.tomcat\.util\.net\.SocketWrapperBase\.close has no call to "):
        parse_javap(JAVAP)["SocketWrapperBase.close"].call("nope")


@needs_tomcat
async def test_the_installed_jars_say_the_same():
    methods = parse_javap(await javap(*CLOSE_PATH))
    _, server = methods["WsRemoteEndpointImplServer.doClose"].call("SocketWrapperBase.close:")
    _, nio = methods["NioEndpoint$NioSocketWrapper.doClose"].call("NioChannel.close:")
    assert server is not None and server.logs == [("info", "wsRemoteEndpointServer.closeFailed")]
    assert nio is not None and nio.catches == "java.lang.Throwable" and nio.only_if == "Debug"
    closing = "Failed to close the ServletOutputStream connection cleanly"
    assert tomcat_message("wsRemoteEndpointServer.closeFailed") == closing
    assert tomcat_message("endpoint.debug.channelCloseFail") == "Failed to close channel"


@needs_tomcat
async def test_javap_and_message_errors_are_one_line():
    with pytest.raises(LabError, match=r"^javap failed: "):
        await javap("org.example.NoSuchClass")
    with pytest.raises(LabError, match=r"^no message 'no.such.key' in Tomcat's jars$"):
        tomcat_message("no.such.key")
