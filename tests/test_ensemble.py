"""The stacked ensemble and the two-level hierarchy as scikit-learn estimators, on generated crops."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from defectkit.ensemble import UNCERTAIN, BalancedXGBClassifier, Hierarchy, StackedEnsemble, default_estimators
from defectkit.features import GEOMETRY, geometry_matrix
from defectkit.labelled import load_labelled
from tests.conftest import make_defect_crops

pytestmark = pytest.mark.slow  # module fixtures train models

TAXONOMY = {"structural": ["break", "crack", "fray"], "surface": ["blowhole", "uneven"], "background": ["background"]}


def light_stack(**params) -> StackedEnsemble:
    """The default stack with a smaller XGBoost and fewer inner folds, to keep the tests quick."""
    members = [(n, BalancedXGBClassifier(n_estimators=20, max_depth=3, n_jobs=1, random_state=0) if n == "xgb" else e) for n, e in default_estimators()]
    return StackedEnsemble(estimators=members, cv=3, **params)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Geometry features of generated crops (5 subtypes in 3 categories), labels and source images."""
    from defectkit.taxonomy import Taxonomy
    from tests.conftest import TAXONOMY as TAXONOMY_FILE

    crops = load_labelled(make_defect_crops(tmp_path_factory.mktemp("crops"), per_subtype=16), Taxonomy.load(TAXONOMY_FILE))
    return geometry_matrix(crops.records), crops.subtypes, crops.groups


def test_hierarchy_learns_generated_defects_on_grouped_folds(data):
    X, y, groups = data
    scores = cross_val_score(Hierarchy(TAXONOMY, light_stack()), X, y, groups=groups, cv=GroupKFold(4))
    assert scores.mean() > 0.8  # chance is 0.2 over five subtypes


def test_probabilities_sum_to_one_at_each_level(data):
    X, y, _ = data
    model = Hierarchy(TAXONOMY, light_stack()).fit(X, y)
    category = model.predict_category_proba(X)
    conditional = model.predict_conditional_proba(X)
    joint = model.predict_proba(X)
    assert list(model.categories_) == ["background", "structural", "surface"]
    assert list(model.classes_) == ["background", "blowhole", "crack", "fray", "uneven"]
    np.testing.assert_allclose(category.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(joint.sum(axis=1), 1, atol=1e-6)
    for index, name in enumerate(model.categories_):
        within = conditional[:, model.parent_ == name]
        np.testing.assert_allclose(within.sum(axis=1), 1, atol=1e-6)
        # P(subtype) = P(category) * P(subtype | category)
        np.testing.assert_allclose(joint[:, model.parent_ == name], category[:, [index]] * within, atol=1e-9)
    assert set(model.level2_) == {"structural", "surface"}  # background has one subtype: no level-2 model
    category_pred, subtype_pred, confidence = model.decide(X)
    assert all(model.parent_[list(model.classes_).index(s)] == c for c, s in zip(category_pred, subtype_pred))
    assert np.all((confidence > 0) & (confidence <= 1))
    # all of it from one pass over the levels' models, as classify asks for it
    both = model.decide_with_proba(X)
    for got, want in zip(both, (category_pred, subtype_pred, confidence, category, joint)):
        np.testing.assert_array_equal(got, want)


def test_rejection_threshold_reports_uncertain(data):
    X, y, _ = data
    model = Hierarchy(TAXONOMY, light_stack(), rejection_threshold=0.9).fit(X, y)
    _, decided, confidence = model.decide(X)
    assert np.array_equal(decided == UNCERTAIN, confidence < 0.9)
    assert (model.set_params(rejection_threshold=1.0).decide(X)[1] == UNCERTAIN).all()
    assert UNCERTAIN not in model.set_params(rejection_threshold=None).decide(X)[1]
    # predict stays within classes_ (scikit-learn's contract): the subtype decide names when it does not reject
    predicted = model.predict(X)
    assert set(predicted) <= set(model.classes_)
    assert np.array_equal(predicted[decided != UNCERTAIN], decided[decided != UNCERTAIN])


def test_estimators_are_clonable_and_fit_in_pipelines(data):
    X, y, groups = data
    stack = light_stack(passthrough=len(GEOMETRY), random_state=3)
    assert stack.get_params()["random_state"] == 3 and clone(stack).get_params()["passthrough"] == len(GEOMETRY)
    hierarchy = Hierarchy(TAXONOMY, estimator=stack)
    assert "estimator__random_state" in hierarchy.get_params()
    pipeline = make_pipeline(StandardScaler(), clone(hierarchy))
    assert cross_val_score(pipeline, X, y, groups=groups, cv=GroupKFold(3)).mean() > 0.75
    flat = clone(stack).fit(X, y)
    assert flat.predict_proba(X).shape == (len(y), 5)
    np.testing.assert_allclose(flat.predict_proba(X).sum(axis=1), 1, atol=1e-6)
    members = flat.member_proba(X)
    assert set(members) == {"xgb", "knn", "logreg"} and all(p.shape == (len(y), 5) for p in members.values())


def test_same_seed_same_model(data):
    X, y, _ = data
    first = Hierarchy(TAXONOMY, light_stack(random_state=7)).fit(X, y).predict_proba(X)
    second = Hierarchy(TAXONOMY, light_stack(random_state=7)).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)


def test_folds_fitted_on_threads_give_the_same_model(data, monkeypatch):
    from joblib import Parallel

    from defectkit.threads import parallel_folds

    X, y, _ = data
    alone = Hierarchy(TAXONOMY, light_stack(random_state=3)).fit(X, y).predict_proba(X)
    jobs = []
    call = Parallel.__call__
    monkeypatch.setattr(Parallel, "__call__", lambda self, tasks: jobs.append(self.n_jobs) or call(self, tasks))
    with parallel_folds(2):
        side_by_side = Hierarchy(TAXONOMY, light_stack(random_state=3)).fit(X, y).predict_proba(X)
    assert jobs and set(jobs) == {2}  # the folds and the final members really went to two threads
    np.testing.assert_array_equal(alone, side_by_side)


def test_bad_labels_are_clear_errors(data):
    X, y, _ = data
    with pytest.raises(ValueError, match="'scratch'.*not subtypes of the taxonomy"):
        Hierarchy(TAXONOMY, light_stack()).fit(X, np.where(y == "crack", "scratch", y))
    single = y.copy()
    single[np.flatnonzero(y == "fray")[1:]] = "crack"  # one fray left
    with pytest.raises(ValueError, match="'fray'.*single sample"):
        light_stack().fit(X, single)
    with pytest.raises(ValueError, match="passthrough"):
        light_stack(passthrough=X.shape[1] + 1).fit(X, y)
    with pytest.raises(ValueError, match="rejection_threshold"):
        Hierarchy(TAXONOMY, light_stack(), rejection_threshold=2).fit(X, y)


@parametrize_with_checks(
    [
        StackedEnsemble(estimators=[("lr", LogisticRegression(max_iter=200)), ("knn", KNeighborsClassifier(3))], cv=3),
        Hierarchy(estimator=LogisticRegression(max_iter=200)),
    ]
)
def test_scikit_learn_estimator_checks(estimator, check):
    """scikit-learn's own contract tests (fit/predict, cloning, input validation, not-fitted errors)."""
    check(estimator)


def test_grouped_inner_folds_keep_each_group_on_one_side(monkeypatch):
    import defectkit.ensemble.stack as stack_module

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.repeat(["a", "b", "c"], 20)
    groups = np.repeat(np.arange(30), 2)  # two rows per source image
    seen = []
    real = stack_module.cross_val_predict

    def spy(estimator, X, y, groups=None, cv=None, **kwargs):
        for train, test in cv.split(X, y, groups):
            seen.append(set(groups[train]) & set(groups[test]))
        return real(estimator, X, y, groups=groups, cv=cv, **kwargs)

    monkeypatch.setattr(stack_module, "cross_val_predict", spy)
    StackedEnsemble(random_state=0).fit(X, y, groups=groups)
    assert seen and all(not shared for shared in seen)
