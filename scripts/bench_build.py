"""Measure what reproducible builds cost: our builder now vs the builder before it, same recipe.

    python scripts/bench_build.py [--recipe recipes/dacbench-base.def] [--baseline REF] [--rounds 1]

The baseline is the repository at REF (default: the last commit before the builder became
reproducible), checked out into a temporary git worktree; both build the same recipe with the
same build context, alternating, as root. Prints each build's time and sha256, whether the
reproducible builds agree, and the time ratio. A report, never a test assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE_REF = "c6822d7"  # the builder before reproducible builds
BUILD = """
import json, sys
from pathlib import Path
from dacbench_remote.images.build import build_image
result = build_image(Path(sys.argv[1]), Path(sys.argv[2]), context=Path(sys.argv[3]),
                     workdir=Path(sys.argv[4]), builder="native")
print(json.dumps({"sha256": result.sha256, "phases": result.phases}))
"""


def build(code_root: Path, recipe: Path, output: Path, workdir: Path) -> dict:
    """One build with the builder of `code_root`; its wall time, sha256 and phases."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", BUILD, str(recipe), str(output), str(REPO),
                           str(workdir)], cwd=code_root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(code_root)})
    if done.returncode != 0:
        sys.exit(f"build with {code_root} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.splitlines()[-1]), "seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "dacbench-base.def")
    parser.add_argument("--baseline", default=BASELINE_REF, help="git ref of the old builder")
    parser.add_argument("--rounds", type=int, default=1, help="builds per builder (default 1)")
    args = parser.parse_args()
    recipe = args.recipe.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-build-", dir="/var/tmp") as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree),
                        args.baseline], check=True, capture_output=True)
        try:
            runs: dict[str, list[dict]] = {"reproducible": [], "baseline": []}
            for round_ in range(args.rounds):
                for name, root in (("reproducible", REPO), ("baseline", worktree)):
                    out = Path(tmp) / f"{name}-{round_}.sif"
                    runs[name].append(build(root, recipe, out, Path(tmp)))
                    run = runs[name][-1]
                    print(f"{name:<13} {run['seconds']:6.1f} s  sha256 {run['sha256'][:16]}  "
                          + ", ".join(f"{k} {v:.1f}" for k, v in run["phases"].items()),
                          flush=True)
                    out.unlink()
            # One more reproducible build, so that there are two to compare even with --rounds 1.
            extra = build(REPO, recipe, Path(tmp) / "again.sif", Path(tmp))
            print(f"{'reproducible':<13} {extra['seconds']:6.1f} s  sha256 {extra['sha256'][:16]}")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(worktree)], check=False)
    mine = [r["seconds"] for r in runs["reproducible"]]
    old = [r["seconds"] for r in runs["baseline"]]
    ratio = statistics.median(mine) / statistics.median(old)
    print(f"\n{recipe.name}: reproducible {statistics.median(mine):.1f} s, baseline "
          f"{statistics.median(old):.1f} s (medians), ratio {ratio:.2f}x")
    print(f"reproducible builds: {_agreement([*runs['reproducible'], extra])}")
    print(f"baseline builds:     {_agreement(runs['baseline'])}")


def _agreement(runs: list[dict]) -> str:
    if len(runs) < 2:
        return "one build, nothing to compare"
    digests = {r["sha256"] for r in runs}
    verdict = "all identical" if len(digests) == 1 else f"{len(digests)} different sha256"
    return f"{len(runs)} builds, {verdict}"


if __name__ == "__main__":
    main()
