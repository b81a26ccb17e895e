"""The geventhttpclient adapter's clocks: kernel receive stamps, the realtime bridge, send and connect times."""

import socket
import struct
import time

import gevent
import pytest

from llmload import http_adapter
from llmload.http_adapter import RealtimeClock, StampedSocket, so_timestampns


def test_so_timestampns_per_platform(monkeypatch):
    monkeypatch.setattr(http_adapter.sys, "platform", "linux")
    import platform

    for machine, number in (("x86_64", 35), ("aarch64", 35), ("sparc64", 0x21), ("parisc", 0x4013)):
        monkeypatch.setattr(platform, "machine", lambda machine=machine: machine)
        assert so_timestampns() == number
    monkeypatch.setattr(http_adapter.sys, "platform", "darwin")
    assert so_timestampns() is None


def test_realtime_stamps_convert_to_perf_counter_and_survive_a_clock_step(monkeypatch):
    clock = RealtimeClock()
    now = time.perf_counter()
    real = time.time()
    # A stamp 20 ms before now converts to 20 ms before now (within the sampling bracket).
    assert clock.to_perf(real - 0.020, now) == pytest.approx(now - 0.020, abs=0.001)
    # The realtime clock steps forward by an hour: stamps taken after the step look an hour "ahead"
    # of the read; the bridge samples the offset again and converts them right.
    stepped = {"offset": 3600.0}
    real_time = time.time
    monkeypatch.setattr(http_adapter.time, "time", lambda: real_time() + stepped["offset"])
    refreshes = clock.refreshes
    now = time.perf_counter()
    assert clock.to_perf(real_time() + 3600.0 - 0.005, now) == pytest.approx(now - 0.005, abs=0.001)
    assert clock.refreshes == refreshes + 1
    # A stamp that cannot be placed (a day away either way) gives None: the read's own time is used.
    assert clock.to_perf(real_time() + 3600.0 + 86400, time.perf_counter()) is None
    assert clock.to_perf(real_time() + 3600.0 - 86400, time.perf_counter()) is None


def test_a_stamp_is_never_later_than_the_read():
    clock = RealtimeClock()
    now = time.perf_counter()
    # Within the tolerance (sampling jitter), a stamp just "after" the read is clamped to it.
    assert clock.to_perf(time.time() + 0.0002, now) <= now


@pytest.mark.skipif(so_timestampns() is None, reason="kernel receive stamps are a Linux feature")
def test_stamped_socket_notes_the_send_and_reads_carry_the_kernel_stamp():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = StampedSocket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        assert client.enable_kernel_stamps() and client.kernel_stamps
        gevent.sleep(0.05)  # the kernel turns stamping on asynchronously
        client.connect(server.getsockname())
        peer, _ = server.accept()
        before = time.perf_counter()
        client.sendall(b"request")
        assert client.t_sent is not None and before <= client.t_sent <= time.perf_counter()
        sent = time.perf_counter()
        peer.sendall(b"data: x\n\n")
        gevent.sleep(0.03)  # the reader is 30 ms late
        data, ancillary, _, _ = client._sock.recvmsg(100, socket.CMSG_SPACE(16))
        read_at = time.perf_counter()
        (level, kind, raw), *_ = ancillary
        assert (level, kind) == (socket.SOL_SOCKET, so_timestampns())
        seconds, nanoseconds = struct.unpack("qq", raw)
        arrived = http_adapter.CLOCK.to_perf(seconds + nanoseconds * 1e-9, read_at)
        assert data == b"data: x\n\n"
        assert arrived == pytest.approx(sent, abs=0.002)
        assert read_at - arrived >= 0.025
        peer.close()
    finally:
        client.close()
        server.close()
