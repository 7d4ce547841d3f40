"""One hyper-parameter from a grid through Optuna (GridSampler), for benchmarks whose runs are cached.

Every value of the grid is tried once (``objective`` is typically a cached run, so a resumed study costs
nothing), and the best value wins; on a tie, the first trial Optuna ran (its seeded grid order).

Example:
    >>> best_on_grid([1e-3, 3e-3], lambda lr: {1e-3: 0.4, 3e-3: 0.5}[lr])
    0.003
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def best_on_grid(grid: Sequence[float], objective: Callable[[float], float], maximize: bool = True) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    values = list(grid)
    if not values:
        raise ValueError("the grid is empty")
    study = optuna.create_study(
        direction="maximize" if maximize else "minimize",
        sampler=optuna.samplers.GridSampler({"x": values}, seed=0),
    )
    study.optimize(lambda trial: objective(trial.suggest_categorical("x", values)), n_trials=len(values))
    return float(study.best_params["x"])
