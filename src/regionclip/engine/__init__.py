"""Training engine shared by pretraining, RPN and detector training: a plain loop, distributed helpers,
learning-rate schedule, deterministic per-step data and atomic, exactly resumable checkpoints."""
