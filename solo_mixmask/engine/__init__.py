"""Training glue: run directories, atomic checkpoints, auto-resume, monitors, ``pretrain``."""
