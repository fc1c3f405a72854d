"""The steps' graph: an order that runs every step after the steps it needs, the circles that
make such an order impossible, and what lies upstream or downstream of a step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def find_cycle(needs: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One circle of needs (`[a, b, a]`), or None when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in needs.get(node, ()):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in needs:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def topological_order(needs: Mapping[str, Iterable[str]]) -> list[str]:
    """The steps in an order where each comes after what it needs (ties: as written)."""
    order: list[str] = []
    placed: set[str] = set()
    remaining = list(needs)
    while remaining:
        ready = [n for n in remaining if set(needs[n]) <= placed]
        if not ready:
            raise ValueError(f"the needs have a circle: {find_cycle(needs)}")
        for node in ready:
            order.append(node)
            placed.add(node)
        remaining = [n for n in remaining if n not in placed]
    return order


def upstream(needs: Mapping[str, Iterable[str]], step: str) -> set[str]:
    """Every step that `step` needs, directly or through others."""
    seen: set[str] = set()
    stack = list(needs.get(step, ()))
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(needs.get(node, ()))
    return seen


def downstream(needs: Mapping[str, Iterable[str]], steps: Iterable[str]) -> set[str]:
    """`steps` and every step that needs one of them, directly or through others."""
    found = set(steps)
    changed = True
    while changed:
        changed = False
        for node, wanted in needs.items():
            if node not in found and found & set(wanted):
                found.add(node)
                changed = True
    return found
