"""RemoteVectorEnv: N copies of a benchmark in one or more servers, one round trip per batch.

Each server holds its share of the N envs in gymnasium's SyncVectorEnv (see server/batched.py), so
results equal an in-process SyncVectorEnv's exactly; with K servers the host sends every share
before it waits for any reply, so the K servers step at the same time.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, iterate

from ..errors import BadConfig, ServerCrashed
from ..wire.object_arrays import unpack_objects
from .client import RemoteEnvironmentClient

_MODES = {mode.value: mode for mode in AutoresetMode}


def autoreset_value(mode: str | AutoresetMode) -> str:
    """The wire name of an autoreset mode ("NextStep", "SameStep", "Disabled")."""
    if isinstance(mode, AutoresetMode):
        return mode.value
    if mode in _MODES:
        return mode
    raise BadConfig(f"unknown autoreset_mode {mode!r}; use one of gymnasium's AutoresetMode "
                    f"values: {', '.join(_MODES)}")


class RemoteVectorEnv(VectorEnv):
    """A gymnasium 1.x VectorEnv whose envs run in servers (one data frame each way per batch).

    `parts` are the servers' batched envs (RemoteEnvironmentClient over a BatchedEnvs), in
    order; `counts` says how many envs each holds. Env i is reset with seed+i. With
    `replacements` (one per part: makes its envs again in a new server), a server that dies
    ends only its envs' episodes (see RemoteRunner.get_vector_environment's restart_crashed)
    and `restarts` counts them.
    """

    def __init__(self, parts: Sequence[RemoteEnvironmentClient], counts: Sequence[int],
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 on_close: Callable[[], None] | None = None,
                 replacements: Sequence[Callable[[], RemoteEnvironmentClient]] | None = None):
        self.parts = list(parts)
        self.counts = list(counts)
        # Polling for replies only pays while every server and this process have a core.
        self._polling = len(self.parts) + 1 <= (os.cpu_count() or 1)
        if not self._polling:
            for part in self.parts:
                part.stop_polling()
        # With restarts on (restart_crashed): per server, what makes its share of the envs again
        # in a new server; the last observations (they end the episodes a crash cuts short);
        # in mode NextStep, the reset results the next step returns for a replaced share.
        self._replacements = list(replacements) if replacements is not None else None
        self.restarts = 0  # servers replaced after they died
        self._last_observations: list[Any] = [None] * len(self.parts)
        self._autoresets: dict[int, Any] = {}
        self.num_envs = sum(self.counts)
        self.autoreset_mode = _MODES[autoreset_value(autoreset_mode)]
        self._on_close = on_close
        self._closed = False
        first = self.parts[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**first.metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = first.render_mode
        self.spec = None
        self.closed = False

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset the envs, as SyncVectorEnv does.

        Args:
            seed: env i gets seed + i (or seed[i] for a list; None: unseeded).
            options: passed to every env's reset, except `reset_mask` (a bool array, one per
                env: reset only those; gymnasium's way in autoreset mode "Disabled"), which
                each server gets its share of. Every other option reaches every env whole,
                as SyncVectorEnv passes it (an array is not split even if its length is N).

        Returns:
            (observations, infos): the envs not reset keep their observation and add no info.

        Raises:
            ValueError, TypeError: a seed list or reset_mask that does not fit (gymnasium's
            messages). And what the envs' resets raise.
        """
        if isinstance(seed, (list, tuple)):
            if len(seed) != self.num_envs:
                raise ValueError(f"reset() got {len(seed)} seeds for {self.num_envs} "
                                 "environments; pass one seed per environment, or one int")
            seeds = [list(seed[start:start + count]) for start, count in self._slices()]
        elif seed is None:
            seeds = [None] * len(self.parts)
        else:
            seeds = [seed + start for start, _ in self._slices()]
        shares = _option_shares(options, self.num_envs, self._slices())
        requests = [["reset", s, o] for s, o in zip(seeds, shares, strict=True)]
        self._autoresets.clear()
        replies = self._exchange_all(requests)
        for i, reply in enumerate(replies):
            if isinstance(reply, ServerCrashed):  # its envs again in a new server, reset once
                self._replace_part(i)
                replies[i] = self.parts[i].exchange(requests[i])
        self._last_observations = [reply[0] for reply in replies]
        observations = _join([reply[0] for reply in replies])
        return observations, self._infos([reply[1] for reply in replies])

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step all envs with one action each (a batch of the action_space's shape)."""
        self._check_actions(actions)
        if len(self.parts) == 1:
            shares = [actions]
        else:
            shares = [_share(actions, start, count) for start, count in self._slices()]
        # A share replaced after a crash in mode NextStep is not stepped: it autoresets.
        replies = self._exchange_all([None if i in self._autoresets else ["step", share]
                                      for i, share in enumerate(shares)])
        for i, reply in enumerate(replies):
            if i in self._autoresets:
                replies[i] = self._autoreset_reply(i)
            elif isinstance(reply, ServerCrashed):
                replies[i] = self._crash_reply(i)
        self._last_observations = [reply[0] for reply in replies]
        observations = _join([reply[0] for reply in replies])
        rewards, terminations, truncations = (
            np.concatenate([reply[k] for reply in replies]) for k in (1, 2, 3))
        return (observations, rewards, terminations, truncations,
                self._infos([reply[4] for reply in replies]))

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call method `name` of every env (or read a non-callable attribute), in env order."""
        return tuple(value for part in self.parts
                     for value in part.call_remote("call", name, *args, **kwargs))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Attribute `name` of every env, in env order."""
        return tuple(value for part in self.parts for value in part.call_remote("get_attr", name))

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set `name` in every env: one value for all, or a list with one value per env."""
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr() got {len(values)} values for {self.num_envs} "
                             "environments; pass one value per environment, or one value")
        for part, (start, count) in zip(self.parts, self._slices(), strict=True):
            part.call_remote("set_attr", name, list(values[start:start + count]))

    def call_at(self, indices: Sequence[int], name: str, *args: Any, **kwargs: Any
                ) -> tuple[Any, ...]:
        """`call` for the envs at `indices` only (e.g. SB3's env_method), in that order."""
        results: dict[int, Any] = {}
        for part, wanted in self._by_part(indices):
            values = part.call_remote("call_at", [local for _, local in wanted], name, *args,
                                      **kwargs)
            results.update(zip((index for index, _ in wanted), values, strict=True))
        return tuple(results[index] for index in indices)

    def set_attr_at(self, indices: Sequence[int], name: str, values: Sequence[Any]) -> None:
        """`set_attr` for the envs at `indices` only, one value each."""
        if len(values) != len(indices):
            raise ValueError(f"set_attr_at() got {len(values)} values for {len(indices)} "
                             "indices; pass one value per index")
        value_of = dict(zip(indices, values, strict=True))
        for part, wanted in self._by_part(indices):
            part.call_remote("set_attr_at", [local for _, local in wanted], name,
                             [value_of[index] for index, _ in wanted])

    def close_extras(self, **kwargs: Any) -> None:
        """Close the servers' envs (and the servers this env started); idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for part in self.parts:
                part.close()
        finally:
            if self._on_close is not None:
                self._on_close()

    # -----------------------------------------------------------------------------------------

    def _slices(self) -> list[tuple[int, int]]:
        starts = np.cumsum([0, *self.counts[:-1]]).tolist()
        return list(zip(starts, self.counts, strict=True))

    def _by_part(self, indices: Sequence[int]) -> list[tuple[Any, list[tuple[int, int]]]]:
        """The servers holding the envs at `indices`, each with (index, its local index)."""
        wanted: dict[int, list[tuple[int, int]]] = {}
        for index in dict.fromkeys(int(i) for i in indices):
            if not 0 <= index < self.num_envs:
                raise IndexError(f"env index {index} is out of range for {self.num_envs} envs")
            part = int(np.searchsorted(np.cumsum(self.counts), index, side="right"))
            wanted.setdefault(part, []).append((index, index - sum(self.counts[:part])))
        return [(self.parts[part], items) for part, items in sorted(wanted.items())]

    def _check_actions(self, actions: Any) -> None:
        expected = self.action_space.shape
        if expected is None:
            return  # composite spaces: each server's SyncVectorEnv checks its share
        shape = np.shape(actions)
        if shape != expected:
            raise ValueError(
                f"step() got actions of shape {shape} for {self.num_envs} environments; pass "
                f"one action per environment, a batch of shape {expected} (action_space: "
                f"{self.action_space})")

    def _exchange_all(self, requests: list[list | None]) -> list:
        """Send every server its request (None: none) before waiting for any, then collect the
        replies in order. With restarts on, a dead server's reply is its ServerCrashed."""
        if len(self.parts) == 1 and self._replacements is None:
            return [self.parts[0].exchange(requests[0])]
        sent = [None if request is None else self._unless_crashed(part.send_request, request)
                for part, request in zip(self.parts, requests, strict=True)]
        return [seq if request is None or isinstance(seq, ServerCrashed)
                else self._unless_crashed(part.receive_reply, request[0], seq)
                for part, request, seq in zip(self.parts, requests, sent, strict=True)]

    def _unless_crashed(self, function: Callable, *args: Any) -> Any:
        try:
            return function(*args)
        except ServerCrashed as exc:
            if self._replacements is None:
                raise
            return exc

    def _replace_part(self, index: int) -> None:
        """The envs of server `index`, which died, made again in a new server."""
        assert self._replacements is not None
        dead, self.parts[index] = self.parts[index], self._replacements[index]()
        if not self._polling:
            self.parts[index].stop_polling()
        self.restarts += 1
        with contextlib.suppress(Exception):
            dead.close()

    def _crash_reply(self, index: int) -> tuple:
        """The step result of the envs of server `index`, which died mid-step: their episodes
        end, truncated, with info["dacbench_remote"]["crashed"]; each env then goes on as
        the autoreset mode says, in a new server."""
        count, last = self.counts[index], self._last_observations[index]
        self._replace_part(index)
        rewards = np.zeros(count, dtype=np.float64)  # SyncVectorEnv's reward dtype
        terminated, truncated = np.zeros(count, dtype=np.bool_), np.ones(count, dtype=np.bool_)
        every = np.ones(count, dtype=np.bool_)
        crashed = {"dacbench_remote": {"crashed": every.copy(), "_crashed": every.copy()},
                   "_dacbench_remote": every.copy()}  # crash_info() of each env, batched
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            observations, infos = self.parts[index].exchange(["reset", None, None])
            final = np.empty(count, dtype=object)
            for i, observation in enumerate(iterate(self.single_observation_space, last)):
                final[i] = copy.deepcopy(observation)
            return observations, rewards, terminated, truncated, {
                **infos, "final_info": crashed, "_final_info": every.copy(),
                "final_obs": final, "_final_obs": every.copy()}
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._autoresets[index] = self.parts[index].exchange(["reset", None, None])
        return last, rewards, terminated, truncated, crashed

    def _autoreset_reply(self, index: int) -> tuple:
        """Mode NextStep, the step after a crash: the replaced envs' reset, as an autoreset."""
        observations, infos = self._autoresets.pop(index)
        count = self.counts[index]
        return (observations, np.zeros(count, dtype=np.float64), np.zeros(count, dtype=np.bool_),
                np.zeros(count, dtype=np.bool_), infos)

    def _infos(self, parts: list[dict]) -> dict:
        infos = [unpack_objects(info) for info in parts]
        return infos[0] if len(infos) == 1 else _merge_infos(infos, self.counts)


def _option_shares(options: dict | None, num_envs: int, slices: list[tuple[int, int]]) -> list:
    """Each server's reset options: its share of `reset_mask` (checked as gymnasium checks it),
    everything else as given. The caller's dict is never changed."""
    if options is None or "reset_mask" not in options or len(slices) == 1:
        return [options] * len(slices)
    mask = options["reset_mask"]
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`options['reset_mask']` must be a numpy array, got {type(mask)}")
    if mask.shape != (num_envs,):
        raise ValueError(f"`options['reset_mask']` must have shape `({num_envs},)`, "
                         f"got {mask.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(f"`options['reset_mask']` must have `dtype=np.bool_`, got {mask.dtype}")
    if not mask.any():
        raise ValueError("`options['reset_mask']` must contain a boolean array with at least "
                         f"one True value, got reset_mask={mask}")
    # A share without True resets nothing there: the server answers with its observations.
    return [{**options, "reset_mask": mask[start:start + count]} for start, count in slices]


def _share(actions: Any, start: int, count: int) -> Any:
    """The actions of envs start..start+count of a batch (composite spaces: per sub-space)."""
    if isinstance(actions, dict):
        return {key: _share(value, start, count) for key, value in actions.items()}
    if isinstance(actions, tuple):
        return tuple(_share(value, start, count) for value in actions)
    return np.asarray(actions)[start:start + count]


def _join(batches: list) -> Any:
    """Concatenate batched observations of the servers along the env axis."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    if isinstance(first, dict):
        return {key: _join([batch[key] for batch in batches]) for key in first}
    if isinstance(first, tuple):
        return tuple(_join(list(items)) for items in zip(*batches, strict=True))
    return np.concatenate(batches)


def _merge_infos(infos: list[dict], counts: list[int]) -> dict:
    """One vector info dict from the servers' ones, exactly as one SyncVectorEnv over all envs
    batches them: a key's array has the type of the first env that reports it (the first
    server's), envs without the key hold that type's blank (0, or None in object arrays)."""
    keys: dict = {}
    for info in infos:
        keys.update(dict.fromkeys(info))
    merged = {}
    for key in keys:
        present = next(info[key] for info in infos if key in info)
        if isinstance(present, dict):
            merged[key] = _merge_infos([info.get(key, {}) for info in infos], counts)
            continue
        merged[key] = np.concatenate([
            _into(info[key], present.dtype) if key in info else _blank(present, count)
            for info, count in zip(infos, counts, strict=True)])
    for key, value in merged.items():
        mask = merged.get(f"_{key}")
        if isinstance(value, np.ndarray) and value.dtype.kind == "O" and mask is not None:
            value[~mask] = None  # a server that batched the key as numbers put 0 there
    return merged


# The dtypes gymnasium's _add_info gives Python bool, int and float values.
PYTHON_DTYPES = (np.dtype(bool), np.dtype(int), np.dtype(float))


def _into(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """One server's batch of a key in the dtype the first server gave it (gymnasium assigns
    each env's value into the first reporter's array: numbers are cast, objects kept)."""
    if values.dtype == dtype:
        return values
    if dtype.kind != "O":
        return values.astype(dtype, casting="unsafe")
    items = np.empty(len(values), dtype=object)
    for i, item in enumerate(values):
        if values.ndim > 1:
            items[i] = np.array(item)
        elif values.dtype in PYTHON_DTYPES:
            items[i] = item.item()  # batched from a Python number
        else:
            items[i] = item
    return items


def _blank(like: np.ndarray, count: int) -> np.ndarray:
    """What gymnasium's SyncVectorEnv holds for envs that did not report a key."""
    if like.dtype == object:
        return np.full(count, None, dtype=object)
    return np.zeros((count, *like.shape[1:]), dtype=like.dtype)
