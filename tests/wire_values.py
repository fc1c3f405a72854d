"""Values whose wire form must not depend on the gymnasium (0.29-1.x) or numpy (1.26-2.x) version.

Runnable as a script in another interpreter (an image's or a per-version venv's): it prints the
values encoded by that side's codec, one JSON text, for comparison with tests/data/wire_golden.json.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
from gymnasium import spaces

from dacbench_remote.wire import codec


def portable_values() -> dict[str, Any]:
    """Spaces, scalars and arrays as DACBench envs of either generation return them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium warns about float64 bounds on a float32 Box
        return {
            "box": spaces.Box(low=-1.0, high=2.0, shape=(3,), dtype=np.float32),
            "box64": spaces.Box(low=np.array([0.0, -np.inf]), high=np.array([1.0, np.inf])),
            "box_int": spaces.Box(low=0, high=10, shape=(2,), dtype=np.int64),
            "discrete": spaces.Discrete(5, start=1),
            "multi_discrete": spaces.MultiDiscrete([3, 4]),
            "multi_binary": spaces.MultiBinary(4),
            "text": spaces.Text(5, min_length=1, charset="abc"),
            "tuple": spaces.Tuple([spaces.Discrete(2), spaces.Box(0, 1, (1,))]),
            "dict": spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Box(0, 1, (2,))}),
            "sequence": spaces.Sequence(spaces.Discrete(3)),
            "graph": spaces.Graph(spaces.Box(0, 1, (2,)), spaces.Discrete(3)),
            "scalars": [np.int64(3), np.int32(2), np.float32(1.5), np.float64(2.5), np.bool_(True),
                        np.uint8(7), np.longlong(4), np.intc(5), np.float16(0.5), np.str_("x"),
                        np.complex64(1 + 2j), np.float64(np.nan)],
            "arrays": [np.arange(3, dtype=np.int64), np.zeros(2, np.float32), np.array([True]),
                       np.array(["ab"]), np.array([1], dtype="datetime64[s]"),
                       np.arange(6, dtype=np.float32).reshape(2, 3)],
            "python": [1, 2.5, float("inf"), "s", None, True, (1, 2), {3: "k"}, b"raw"],
        }


def encoded() -> Any:
    """The JSON tree of `portable_values()` on this side (canonical key order)."""
    return json.loads(json.dumps(codec.encode(portable_values()), sort_keys=True))


if __name__ == "__main__":
    print(json.dumps(encoded(), sort_keys=True))
