"""The geventhttpclient adapter's clocks: kernel receive stamps, the realtime bridge, send and connect times."""

import socket
import struct
import time

import gevent
import pytest

from llmload import http_adapter
from llmload.http_adapter import StampedSocket, arrival_time, so_timestampns


def test_so_timestampns_per_platform(monkeypatch):
    monkeypatch.setattr(http_adapter.sys, "platform", "linux")
    import platform

    for machine, number in (("x86_64", 35), ("aarch64", 35), ("sparc64", 0x21), ("parisc", 0x4013)):
        monkeypatch.setattr(platform, "machine", lambda machine=machine: machine)
        assert so_timestampns() == number
    monkeypatch.setattr(http_adapter.sys, "platform", "darwin")
    assert so_timestampns() is None


def test_a_stamp_becomes_the_read_time_less_its_lateness_in_realtime():
    read_at, read_real = 1000.0, 1_700_000_000.0  # the two clocks need no known offset
    # (realtime seconds near 1.7e9 are floats in steps of about 0.2 us)
    assert arrival_time(read_real - 0.020, read_at, read_real) == pytest.approx(read_at - 0.020, abs=1e-6)
    # A step of the realtime clock before the packet arrived changes nothing: both the stamp and the
    # read's realtime are on the stepped clock, and only their difference is used.
    stepped = read_real + 3600.0
    assert arrival_time(stepped - 0.005, read_at, stepped) == pytest.approx(read_at - 0.005, abs=1e-6)


def test_a_stamp_that_cannot_be_placed_gives_none_and_is_never_later_than_the_read():
    read_at, read_real = 50.0, 1_700_000_000.0
    # Within the two clock reads' jitter, a stamp just "after" the read is the read.
    assert arrival_time(read_real + 0.0002, read_at, read_real) == read_at
    # A step between the arrival and the read: the lateness is negative, or more than a minute.
    assert arrival_time(read_real + 0.5, read_at, read_real) is None
    assert arrival_time(read_real - 3600.0, read_at, read_real) is None


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
        read_at, read_real = time.perf_counter(), time.time()
        (level, kind, raw), *_ = ancillary
        assert (level, kind) == (socket.SOL_SOCKET, so_timestampns())
        seconds, nanoseconds = struct.unpack("qq", raw)
        arrived = arrival_time(seconds + nanoseconds * 1e-9, read_at, read_real)
        assert data == b"data: x\n\n"
        assert arrived == pytest.approx(sent, abs=0.002)
        assert read_at - arrived >= 0.025
        peer.close()
    finally:
        client.close()
        server.close()
