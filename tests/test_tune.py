"""`defectkit tune`: an Optuna study over the classifier's settings, scored by grouped CV, that
resumes from its SQLite file, can be shared by two processes, and trains the bundle it found."""

import json
import subprocess
import sys

import optuna
import pytest
from typer.testing import CliRunner

from defectkit.bundle import load_bundle
from defectkit.cli import app
from tests.conftest import TAXONOMY, make_defect_crops

pytestmark = pytest.mark.slow  # each trial fits stacks


def study_trials(storage: str, name: str):
    return optuna.load_study(study_name=name, storage=storage).trials


def tune_args(crops, out, *extra):
    return ["tune", str(crops), "-t", str(TAXONOMY), "-o", str(out), "--no-embedding", "--cv", "3", "-q", *extra]


def test_a_study_resumes_from_sqlite_and_trains_the_best_bundle(tmp_path):
    crops = make_defect_crops(tmp_path / "crops", per_subtype=8)
    out = tmp_path / "model"
    first = CliRunner().invoke(app, tune_args(crops, out, "--trials", "2", "--no-final", "--study", "s"))
    assert first.exit_code == 0, first.output
    assert "trial 0:" in first.output and "trial 1:" in first.output and not out.exists()
    storage = f"sqlite:///{tmp_path / 'model.tune' / 'study.db'}"
    before = [(t.number, t.params) for t in study_trials(storage, "s")]
    assert len(before) == 2
    again = CliRunner().invoke(app, tune_args(crops, out, "--trials", "3", "--study", "s"))
    assert again.exit_code == 0, again.output
    after = study_trials(storage, "s")
    assert [(t.number, t.params) for t in after[:2]] == before and len(after) == 3  # went on, did not start over
    started = [line.split(":")[0] for line in again.output.splitlines() if line.startswith("trial ")]
    assert started == ["trial 2"]
    bundle = load_bundle(out)
    record = bundle.manifest["training"]["tune"]
    best = max((t for t in after if t.value is not None), key=lambda t: t.value)
    assert record["best_trial"] == best.number and record["cv_defect_macro_f1"] == pytest.approx(best.value, abs=1e-4)
    config = bundle.manifest["training"]["config"]
    assert config["texture"] == best.params["texture"] and config["flat"] == (best.params["head"] == "flat")
    assert (tmp_path / "model.tune" / "history.png").is_file()


def test_two_processes_share_one_study(tmp_path):
    crops = make_defect_crops(tmp_path / "crops", per_subtype=8)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(study_name="shared", storage=storage, direction="maximize")  # created once, as a team would
    command = [sys.executable, "-m", "defectkit", *tune_args(crops, tmp_path / "model", "--trials", "4", "--no-final",
                                                             "--storage", storage, "--study", "shared")]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = study_trials(storage, "shared")
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) >= 4
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both processes ran trials of the one study
    assert len({t.number for t in trials}) == len(trials)


def test_unknown_learner_parameters_are_refused():
    from defectkit.classifier import ClassifierConfig
    from defectkit.features import FeatureSpec

    with pytest.raises(ValueError, match="no learner 'svm'"):
        ClassifierConfig(learner_params=(("svm__C", 1.0),)).stack(FeatureSpec())
    stack = ClassifierConfig(learner_params=(("knn__knn__n_neighbors", 3), ("final__logreg__C", 0.5))).stack(FeatureSpec())
    assert dict(stack.estimators)["knn"].get_params()["knn__n_neighbors"] == 3
    assert stack.final_estimator.get_params()["logreg__C"] == 0.5
    assert json.dumps(ClassifierConfig(learner_params=(("xgb__max_depth", 3),)).to_dict())
