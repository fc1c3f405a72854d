"""What runs in the user's process: the runner, the gymnasium envs it hands out (single and
vector, and the Stable-Baselines3 adapter), results files, repeats, the zygote client, and what
looks after the servers this user started (`ps`, `cleanup`)."""
