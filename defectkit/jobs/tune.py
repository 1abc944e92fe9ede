"""`defectkit tune`: an Optuna study (TPE sampler, median pruner) that chooses the classifier for
a material by grouped K-fold CV (defect subtype macro-F1, folds grouped by source image), then
trains the final bundle with the best trial's settings and records the study in it.

Searched: texture features on or off, the embedding on or off and its PCA size, the hierarchy or
one flat stack, the meta-learner seeing the geometry or not, and the main hyper-parameters of
each learner (XGBoost trees, depth and learning rate; kNN's k; both logistic regressions' C).
The features are built once (every block) and each trial takes its columns, so a trial costs
only its fits. Trials are pruned fold by fold against the median of earlier trials.

The study lives in a database: SQLite beside the bundle by default, so an interrupted run goes
on where it stopped; any SQLAlchemy URL (PostgreSQL, MySQL) lets several processes or machines
work on one study at once. ``trials`` counts the study's finished trials, whoever ran them.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from defectkit.classifier import ClassifierConfig
from defectkit.errors import DefectkitError
from defectkit.features import build_features, feature_columns
from defectkit.jobs.evaluate import cross_validate
from defectkit.labelled import check_trainable, load_labelled
from defectkit.taxonomy import Taxonomy
from defectkit.threads import parallel_folds

PCA_SIZES = (8, 16, 32, 64)


@dataclass(frozen=True)
class TuneOptions:
    trials: int = 30  # finished trials the study should hold
    cv: int = 5
    storage: str | None = None  # None: sqlite:///<out>.tune/study.db
    study: str | None = None  # None: "defectkit-" + the data set's folder name
    timeout: float | None = None  # seconds this process may run trials
    final: bool = True  # train the bundle with the best settings


@dataclass
class TuneResult:
    study_name: str
    storage: str
    best_value: float
    best_params: dict
    best_trial: int
    trials: int
    pruned: int
    config: ClassifierConfig
    bundle: Path | None
    work: Path


def work_folder(out: str | Path) -> Path:
    """Where the study database and the plots go: beside the bundle, never inside it."""
    out = Path(out)
    return out.with_name(f"{out.name}.tune")


def suggest(trial, base: ClassifierConfig, embedding: bool) -> ClassifierConfig:
    """The trial's classifier settings, drawn from the search space."""
    use_embedding = trial.suggest_categorical("embedding", [True, False]) if embedding else False
    return replace(
        base,
        texture=trial.suggest_categorical("texture", [False, True]),
        embedding=use_embedding,
        pca=trial.suggest_categorical("pca", PCA_SIZES) if use_embedding else None,
        flat=trial.suggest_categorical("head", ["hierarchy", "flat"]) == "flat",
        passthrough_geometry=trial.suggest_categorical("passthrough_geometry", [False, True]),
        learner_params=(
            ("xgb__n_estimators", trial.suggest_int("xgb_trees", 100, 400, step=50)),
            ("xgb__max_depth", trial.suggest_int("xgb_depth", 2, 6)),
            ("xgb__learning_rate", trial.suggest_float("xgb_learning_rate", 0.03, 0.3, log=True)),
            ("knn__knn__n_neighbors", trial.suggest_int("knn_k", 3, 25)),
            ("logreg__logreg__C", trial.suggest_float("logreg_C", 1e-3, 1.0, log=True)),
            ("final__logreg__C", trial.suggest_float("meta_C", 0.01, 1.0, log=True)),
        ),
    )


def tune(dataset: str | Path, taxonomy: Taxonomy, out: str | Path, base: ClassifierConfig = ClassifierConfig(),
         options: TuneOptions = TuneOptions(), cache=None, progress: bool = True, log=print) -> TuneResult:
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    out = Path(out)
    work = work_folder(out)
    work.mkdir(parents=True, exist_ok=True)
    storage = options.storage or f"sqlite:///{work / 'study.db'}"
    name = options.study or f"defectkit-{Path(dataset).resolve().name}"

    crops = load_labelled(dataset, taxonomy)
    check_trainable(crops)
    every_block = replace(base, texture=True)
    spec_all = every_block.feature_spec()
    embedder = every_block.embedder()
    X_all = build_features(crops.records, spec_all, embedder, cache, progress)

    def objective(trial) -> float:
        config = suggest(trial, base, base.embedding)
        spec = config.feature_spec()
        X = feature_columns(X_all, spec_all, spec, embedder.dim if embedder else 0)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")

        def on_fold(fold: int, scores: list[float]) -> None:
            trial.report(float(np.mean(scores)), fold)
            if trial.should_prune():
                raise optuna.TrialPruned()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # fewer folds than asked: said once, below
            result = cross_validate(X, crops, taxonomy, config, spec, options.cv, progress=False, on_fold=on_fold)
        return float(np.mean(result.per_fold["hierarchy"]))

    def announce(study, trial) -> None:
        finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        value = "pruned" if trial.state == TrialState.PRUNED else f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        best = f"{study.best_value:.4f} (trial {study.best_trial.number})" if any(t.state == TrialState.COMPLETE for t in study.trials) else "-"
        log(f"trial {trial.number}: {value}; best {best}; {len(finished)}/{options.trials} finished")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=base.seed, n_startup_trials=8),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )
    done = lambda: sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)  # noqa: E731
    if done() < options.trials:
        with parallel_folds():
            study.optimize(objective, timeout=options.timeout, catch=(ValueError,),
                           callbacks=[MaxTrialsCallback(options.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)), announce])
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not completed:
        raise DefectkitError(f"study {name!r} in {_shown(storage)} has no completed trial yet; run tune again to go on")
    best = study.best_trial
    config = suggest(optuna.trial.FixedTrial(best.params), base, base.embedding)
    _plots(study, work, log)
    bundle = None
    if options.final:
        from defectkit.jobs.train import train

        record = {"tune": {"study": name, "storage": _shown(storage), "best_trial": best.number,
                           "cv_defect_macro_f1": round(float(best.value), 4), "params": best.params,
                           "trials": len(study.trials), "cv": options.cv}}
        bundle = train(dataset, taxonomy, out, config, cv=0, cache=cache, progress=progress, record=record).bundle
    pruned = sum(t.state == TrialState.PRUNED for t in study.trials)
    return TuneResult(name, _shown(storage), float(best.value), best.params, best.number, len(study.trials), pruned, config, bundle, work)


def _shown(storage: str) -> str:
    """A database URL without its password, for files and messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: show the scheme only
        return storage.split("://", 1)[0] + "://..."


def _plots(study, work: Path, log) -> None:
    """Optuna's history and parameter-importance plots (matplotlib), where there is enough to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    for file, draw in (("history.png", plots.plot_optimization_history), ("importance.png", plots.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
                axes = draw(study)
            axes.figure.savefig(work / file, dpi=100, bbox_inches="tight")
            plt.close(axes.figure)
        except (ValueError, RuntimeError) as exc:  # e.g. importance needs two completed trials
            log(f"{file} not drawn: {exc}")
