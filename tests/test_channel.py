"""Frames on the data channel: length, sequence number, body; waiting consumes nothing."""

from __future__ import annotations

import socket

import pytest

from dacbench_remote.channel import ChannelClosed, recv_frame, send_frame, wait_for_frame


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
