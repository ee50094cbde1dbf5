"""Grids of runs (variants x seeds) and their report: the RoDE paper's ablations as one command.

    python -m rode_lightning.experiments run configs/grids/demo.yaml [--jobs N]
    python -m rode_lightning.experiments report configs/grids/demo.yaml
    python -m rode_lightning.experiments commands configs/grids/demo.yaml [--slurm]
"""
