"""Per-step cost of the wire codec: encode_message + decode_message round trips vs pickle 5.

Run by hand (or from CI as a report): python scripts/bench_codec.py [--repeat N]
"""

from __future__ import annotations

import argparse
import pickle
import timeit

import numpy as np

from dacbench_remote.wire import codec

CASES = {
    "small step (4,) float32": (np.zeros(4, np.float32), 1.0, False, False, {}),
    "image step (84,84,3) uint8": (np.zeros((84, 84, 3), np.uint8), 1.0, False, False, {}),
    "FunctionApproximation step": (
        np.arange(9, dtype=np.float64),
        np.float64(0.81),
        False,
        False,
        {"raw_distances": [0.11, np.float64(0.77)], "weighted_distances": np.array([0.05, 0.38])},
    ),
}


def _codec_message(value: object) -> object:
    # What the transport does: join (or sendmsg) the parts, receive into a fresh bytearray.
    return codec.decode_message(bytearray(b"".join(codec.encode_message(value))))


def _codec_json(value: object) -> object:
    return codec.loads(codec.dumps(value))


def _pickle(value: object) -> object:
    return pickle.loads(pickle.dumps(value, protocol=5))


def _best_us(fns: dict, value: object, repeat: int) -> dict:
    """Best time per call of each function, measured interleaved so load bursts hit all alike."""
    timers = {name: timeit.Timer(lambda fn=fn: fn(value)) for name, fn in fns.items()}
    numbers = {name: max(1, t.autorange()[0] // 4) for name, t in timers.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, timer in timers.items():
            per_call = timer.timeit(numbers[name]) / numbers[name]
            best[name] = min(best[name], per_call * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20, help="timing rounds (best is kept)")
    args = parser.parse_args()
    print(f"wire version {codec.WIRE_VERSION}; numpy {np.__version__}; best of {args.repeat}")
    columns = ("message µs", "dumps/loads µs", "pickle5 µs", "ratio")
    header = f"{'case':30s} {columns[0]:>11s} {columns[1]:>15s} {columns[2]:>11s} {columns[3]:>6s}"
    print(header)
    print("-" * len(header))
    fns = {"message": _codec_message, "text": _codec_json, "pickle": _pickle}
    for name, value in CASES.items():
        best = _best_us(fns, value, args.repeat)
        msg, text, pick = best["message"], best["text"], best["pickle"]
        print(f"{name:30s} {msg:11.2f} {text:15.2f} {pick:11.2f} {msg / pick:5.2f}x")
    print("ratio = message round trip / pickle round trip (both in this process, no socket)")


if __name__ == "__main__":
    main()
