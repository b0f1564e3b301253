"""Finite spaces: their size caps the target, and the random sampler draws each configuration
once."""

import optuna
import pytest

from hpo.cli import main
from hpo.finite_space import configurations, space_size, unseen_configuration
from hpo.service import run_study
from hpo.spec import load_spec
from hpo.storage import close_storages

ONE = 'optimizer = { choices = ["sgd"] }\n'
FOUR = 'optimizer = { choices = ["sgd", "adam"] }\ninit = { choices = ["he", "xavier"] }\n'
CONDITIONAL = (
    'optimizer = { choices = ["momentum", "sgd"] }\n'
    "momentum = { low = 0.5, high = 0.9, step = 0.2 }\n"
)
HEAD = (
    '[study]\nname = "tiny"\n[data]\ntrain_size = 100\n[model]\nhidden = [8]\n'
    '[training]\nepochs = 1\n[search]\nsampler = "{sampler}"\ntrials = 50\n[space]\n'
)


def spec_file(tmp_path, space: str, sampler: str = "random"):
    path = tmp_path / "finite.toml"
    path.write_text(HEAD.format(sampler=sampler) + space)
    return path


@pytest.fixture(autouse=True)
def closed_afterwards():
    yield
    close_storages()


@pytest.mark.parametrize(
    ("space", "size"),
    [
        ('optimizer = { choices = ["sgd"] }\n', 1),
        ('optimizer = { choices = ["sgd", "adam"] }\ninit = { choices = ["he", "xavier"] }\n', 4),
        ("dropout_ratio = { low = 0.0, high = 0.2, step = 0.1 }\n", 3),
        # momentum applies to one optimizer of the two: 3 + 1 configurations
        (
            'optimizer = { choices = ["momentum", "sgd"] }\n'
            "momentum = { low = 0.5, high = 0.9, step = 0.2 }\n",
            4,
        ),
        ("learning_rate = { low = 0.001, high = 0.1, log = true }\n", None),
    ],
)
def test_space_size_counts_configurations(tmp_path, space, size):
    spec = load_spec(str(spec_file(tmp_path, space)))
    assert space_size(spec) == size
    listed = configurations(spec)
    assert (listed is None) if size is None else len(listed) == size


def test_the_draws_leave_no_configuration_twice(tmp_path):
    spec = load_spec(str(spec_file(tmp_path, CONDITIONAL)))
    listed = configurations(spec)
    trials = []
    for number in range(len(listed)):
        params = unseen_configuration(spec, listed, trials, number=number)
        trials.append(
            optuna.trial.create_trial(params=params, distributions=_dists(params), value=0.5)
        )
    assert sorted(map(str, (t.params for t in trials))) == sorted(map(str, listed))
    assert unseen_configuration(spec, listed, trials, number=len(listed)) is None


def _dists(params):
    return {
        name: optuna.distributions.CategoricalDistribution(["momentum", "sgd"])
        if name == "optimizer"
        else optuna.distributions.FloatDistribution(0.5, 0.9, step=0.2)
        for name in params
    }


@pytest.mark.parametrize("space", [ONE, FOUR])
def test_a_random_search_of_a_finite_space_runs_each_configuration_once(tmp_path, db_url, space):
    spec = load_spec(str(spec_file(tmp_path, space)))
    summary = run_study(spec, storage_url=db_url, in_process=True)
    size = space_size(spec)
    assert summary.counts.finished == size
    trials = optuna.load_study(study_name="tiny", storage=db_url).get_trials()
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials) == size


def test_a_capped_target_is_said_in_one_line(tmp_path, db_url, capsys):
    path = spec_file(tmp_path, 'optimizer = { choices = ["sgd"] }\n')
    assert main(["run", str(path), "--storage", db_url, "--quiet", "--no-report"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tiny: the space holds 1 configuration, so the target is 1 trials, not 50"]
