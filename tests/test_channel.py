"""Frames on the data channel: length, sequence number, body; waiting consumes nothing."""

from __future__ import annotations

import socket

import pytest

from dacbench_remote.wire.channel import ChannelClosed, recv_frame, send_frame, wait_for_frame


@pytest.fixture
def pair():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        yield left, right


def test_a_frame_carries_its_sequence_number_and_body(pair):
    left, right = pair
    send_frame(left, [b"ab", memoryview(b"cde")], 7)
    send_frame(left, b"", 8)
    assert recv_frame(right) == (7, bytearray(b"abcde"))
    assert recv_frame(right) == (8, bytearray())


def test_waiting_for_a_frame_consumes_nothing(pair):
    left, right = pair
    send_frame(left, b"reply", 3)
    wait_for_frame(right)
    wait_for_frame(right)
    assert recv_frame(right) == (3, bytearray(b"reply"))


def test_waiting_on_a_closed_connection_raises_channel_closed(pair):
    left, right = pair
    left.close()
    with pytest.raises(ChannelClosed, match="closed by peer"):
        wait_for_frame(right)


def test_a_corrupt_length_is_refused(pair):
    left, right = pair
    left.sendall((1 << 40).to_bytes(8, "little") + (1).to_bytes(8, "little"))
    with pytest.raises(ChannelClosed, match="stream is corrupt"):
        recv_frame(right)


def test_a_wait_polls_while_the_peer_answers_quickly_and_backs_off_when_it_does_not():
    import threading
    import time

    from dacbench_remote.wire.channel import FrameWaiter

    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"x")
        assert wait_for_frame(left, 0.01) is True  # seen while polling
        left.recv(1)
        waiter = FrameWaiter(spin=0.001)
        timer = threading.Timer(0.05, right.sendall, args=(b"y",))
        timer.start()
        started = time.perf_counter()
        waiter.wait(left)  # the poll gives up after 1 ms, then it blocks until the data comes
        assert time.perf_counter() - started >= 0.04
        assert waiter._skip == 1  # the next wait blocks at once
        left.recv(1)
        right.sendall(b"z")
        waiter.wait(left)
        assert waiter._skip == 0
        left.recv(1)
        right.close()
        with pytest.raises(ChannelClosed):
            FrameWaiter(spin=0.01).wait(left)  # EOF while polling


def test_the_poll_window_comes_from_the_environment(monkeypatch):
    from dacbench_remote.wire.channel import SPIN_ENV, FrameWaiter, default_spin

    monkeypatch.setenv(SPIN_ENV, "0")
    assert FrameWaiter().spin == 0.0
    monkeypatch.setenv(SPIN_ENV, "50")
    assert default_spin() == pytest.approx(50e-6)
    monkeypatch.setenv(SPIN_ENV, "lots")
    assert default_spin() == pytest.approx(200e-6)


def test_a_socket_channel_skips_late_replies_and_refuses_a_reply_from_the_future(pair):
    from dacbench_remote.wire.channel import IDLE, WAITING, OutOfStep, SocketChannel

    client, server = pair
    channel = SocketChannel(client)
    first = channel.send([b"one"])
    assert channel.phase == WAITING
    second = channel.send([b"two"])  # as after an interrupted wait for `first`
    assert [recv_frame(server) for _ in range(2)] == [(first, b"one"), (second, b"two")]
    send_frame(server, b"late", first)
    send_frame(server, b"mine", second)
    assert channel.receive(second) == b"mine"
    assert channel.phase == IDLE
    send_frame(server, b"future", channel.send([b"three"]) + 1)
    with pytest.raises(OutOfStep, match="reply to request 4 while 3"):
        channel.receive(3)


def test_a_loopback_channel_answers_each_request_at_once():
    from dacbench_remote.wire.channel import LoopbackChannel

    channel = LoopbackChannel(lambda body: [b"re:", body])
    seq = channel.send([b"a", memoryview(b"bc")])
    assert channel.receive(seq) == b"re:abc"
    channel.close()
    with pytest.raises(ChannelClosed):
        channel.send([b"d"])
