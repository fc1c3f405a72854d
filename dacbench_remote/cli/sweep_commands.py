"""`sweep run` and `sweep cancel`: imported when one of them runs (the driver needs the image
cache, which `status` and `report` do not)."""

from __future__ import annotations

import argparse
import sys

from ..sweeps.driver import cancel, run_sweep


def cmd_sweep_run(args: argparse.Namespace) -> int:

    result = run_sweep(args.spec, executor=args.executor, workers=args.workers,
                       resume=not args.no_resume, retry_failed=args.retry_failed,
                       sweep_dir=args.dir, progress=lambda message: print(message, file=sys.stderr))
    print(result)
    return 0 if result.ok else 1


def cmd_sweep_cancel(args: argparse.Namespace) -> int:

    print(cancel(args.sweep_dir))
    return 0
