"""The `run` step, the general one: a Python function `module:function` called inside an image
(through the server's `call_function`) with JSON inputs as keyword arguments; the table it
returns is the step's outputs. On the slurm executor the call runs as one Slurm job."""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

from ..errors import RuntimeUnavailable
from ..host.runner import RemoteRunner
from ..sweeps.slurm_executor import SlurmExecutor
from ..sweeps.slurm_jobs import scancel
from .containers import image_records
from .step import ANY, Params, StepContext, StepKind

_FUNCTION = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class RunStep(StepKind):
    name = "run"
    keys = frozenset({"function", "inputs", "outputs", "benchmark", "experiment"})

    def check(self, params: Params) -> dict:
        function = params.string("function", required=True)
        if isinstance(function, str) and not params.deferred("function") and \
                not _FUNCTION.match(function):
            raise params.error("function", f"{function!r} is not 'package.module:function'")
        outputs = params.list_of_strings("outputs")
        return {
            "function": function,
            "inputs": params.json_table("inputs"),
            "outputs": outputs,
            # The image: the catalog's for this benchmark, unless [runtime] names one.
            "benchmark": params.benchmark() if params.has("benchmark") else None,
            "experiment": params.string("experiment"),
        }

    def outputs(self, params: dict) -> dict:
        declared = params.get("outputs")
        return {name: ANY for name in declared} if isinstance(declared, list) else {}

    def images(self, step, params: dict, base: Path) -> list[dict]:
        if params["benchmark"] is None and step.runtime.image is None:
            return image_records(step, [])
        return image_records(step, [(params["benchmark"], params["experiment"])])

    def run(self, ctx: StepContext) -> dict:
        p = ctx.params
        if ctx.step.executor.kind == "slurm":
            value = _on_slurm(ctx)
        else:
            value = call_in_image(p["function"], p["inputs"], p["benchmark"] or p["function"],
                                  p["experiment"], ctx.step.runtime, ctx.step.time_limit)
        if not isinstance(value, dict):
            raise RuntimeError(f"step {ctx.step.name}: {p['function']} returned "
                               f"{type(value).__name__}, not a table of outputs")
        missing = [name for name in p["outputs"] if name not in value]
        if missing:
            raise RuntimeError(f"step {ctx.step.name}: {p['function']} returned no "
                               f"{', '.join(missing)} (it returned: {', '.join(value) or 'nothing'})")
        return value


def call_in_image(function: str, inputs: dict, benchmark: str, experiment: str | None,
                  runtime, time_limit: float) -> object:
    """Start a server of the image, call `function(**inputs)` in it, stop it; the value."""
    options = runtime.replace(call_timeout=time_limit)
    with RemoteRunner(benchmark, experiment=experiment, options=options,
                      results_path=None) as runner:
        return runner.connection.call_function(function, inputs)


def _on_slurm(ctx: StepContext) -> object:
    try:
        import submitit
    except ImportError as exc:
        raise RuntimeUnavailable("the slurm executor needs submitit: pip install "
                                 "'dacbench-remote[slurm]'") from exc
    p, step = ctx.params, ctx.step
    executor = submitit.AutoExecutor(folder=ctx.dir / "slurm", cluster="slurm")
    slurm = SlurmExecutor(step.executor.slurm)
    executor.update_parameters(**slurm.parameters([SimpleNamespace(time_limit=step.time_limit)],
                                                  ctx.label.replace(".", "-")))
    job = executor.submit(call_in_image, p["function"], p["inputs"],
                          p["benchmark"] or p["function"], p["experiment"], step.runtime,
                          step.time_limit)
    ctx.on_job(str(job.job_id))
    try:
        while not job.done():
            ctx.check_cancelled()
            time.sleep(step.executor.slurm.poll_interval)
    except BaseException:
        scancel([str(job.job_id)])
        raise
    return job.result()
