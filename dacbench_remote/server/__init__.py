"""What runs inside an image: the server process (`python -m dacbench_remote.server`), the Pyro5
objects that create and control environments, the data channel, batched vector envs and the
zygote. It imports only numpy, gymnasium and Pyro5 (plus what a benchmark brings), and keeps
working with the oldest versions an image holds (numpy 1.26, gymnasium 0.29).
"""
