"""RL agents in their own images: what the host and the agent image agree on (`job`), and the
trainer that runs inside the agent image (`trainer`, started as `python -m dacbench_remote.rl`).

The host only orchestrates (host/training.py): it starts the benchmark's server in its image and
the trainer in the agent image, both bound to one private socket directory, and the trainer
talks to the server directly.
"""
