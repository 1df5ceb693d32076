"""moescope's MoE model, routers, losses and trainer in PyTorch, for runs bigger than one CPU:
`torchrun --nproc_per_node N -m torch_moe.train` (see README, "Bigger experiments")."""
