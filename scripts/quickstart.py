"""Quick start: the roadmap's DACBench workflow, unchanged apart from the import, run in a
rootless container (Apptainer if installed, else bubblewrap); prints the episodes it recorded.

    .venv/bin/python scripts/quickstart.py
"""

from __future__ import annotations

import warnings

# DACBench announces every optional benchmark it lacks on import; the quick start needs none.
warnings.filterwarnings("ignore", message=".*not installed.*", category=UserWarning)

from dacbench.agents import RandomAgent  # noqa: E402
from dacbench.benchmarks import FunctionApproximationBenchmark  # noqa: E402

from dacbench_remote import RemoteRunner, read_run  # noqa: E402

benchmark = FunctionApproximationBenchmark()
benchmark.set_seed(42)
benchmark.config.cutoff = 10
remote_runner = RemoteRunner(benchmark, experiment_identifier="exp:0.01")
agent = RandomAgent(remote_runner.get_environment())
remote_runner.run(agent, number_of_episodes=5)
records = read_run(remote_runner.results_path)
remote_runner.close()

first = records[0]
print(f"{first['benchmark']} ({first['benchmark_class']}) at {first['experiment']}, "
      f"{first['runtime']} runtime, image sha256 {str(first['image_sha256'])[:12]}...")
print(f"{'episode':>7}  {'return':>8}  {'length':>6}  {'seconds':>7}")
for record in records:
    print(f"{record['episode']:>7}  {record['return']:>8.4f}  {record['length']:>6}  "
          f"{record['wall_time']:>7.3f}")
mean = sum(r["return"] for r in records) / len(records)
print(f"\nmean return {mean:.4f} over {len(records)} episodes; run {first['run_id']} recorded in "
      f"{remote_runner.results_path}")
