"""A learner's own net through the whole service: a spec naming it, ``hpo run`` with worker
processes, the report, ``hpo confirm``, ``best --verify``/``--command``/``--export``; bad nets
refused before anything is stored; reading commands that never import the net; studies and
specs from before the network seam still loading."""

import dataclasses
import json
import shutil
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpo.cli import main
from hpo.errors import SpecError
from hpo.service import grid_size
from hpo.spec import SETTINGS, load_spec, packaged_specs, spec_from_dict
from hpo.trial import configuration
from tests.hpo.test_cli import hpo

ROOT = Path(__file__).parent.parent.parent
NETS = ROOT / "tests" / "nets"
EXAMPLE = ROOT / "examples" / "own-network"
DATA = Path(__file__).parent / "data"

SPEC = """
[study]
name = "own"

[data]
dataset = "digits"
train_size = 600

[model]
network = "{network}"
[model.args]
{args}

[training]
epochs = {epochs}
batch_size = 50

[search]
seed = 0
trials = {trials}
startup_trials = 3
pruner = "none"

[space]
optimizer = "adam"
learning_rate = {{ low = 3e-3, high = 3e-2, log = true }}
{space}
"""


def own_spec(tmp_path, network, *, args="", space="", epochs=4, trials=4, name="study.toml"):
    path = tmp_path / name
    path.write_text(
        textwrap.dedent(
            SPEC.format(network=network, args=args, space=space, epochs=epochs, trials=trials)
        )
    )
    return path


def copy_net(tmp_path, name):
    shutil.copy(NETS / name, tmp_path / name)


# ---------------------------------------------------------------------------------------------
# Both shapes through hpo run, with worker processes


@pytest.mark.parametrize(
    ("file", "space"),
    [
        ("book_net.py", "model.args.hidden_size = { low = 20, high = 60, step = 20 }"),
        (
            "cs231n_net.py",
            '"model.args.hidden_dim" = { choices = [20, 40] }\nmodel.args.reg = 0.001',
        ),
    ],
    ids=["book", "cs231n"],
)
def test_each_shape_trains_above_chance_through_hpo_run_with_two_workers(tmp_path, file, space):
    copy_net(tmp_path, file)
    spec = own_spec(tmp_path, f"{file}:TwoLayerNet", space=space)
    db = tmp_path / "s.db"
    done = hpo("run", str(spec), "--storage", f"sqlite:///{db}", "--workers", "2", "--no-report")
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="own", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert study.best_value > 0.8  # chance: 0.1
    assert all(len(t.intermediate_values) == 4 for t in trials)  # every epoch, for pruning
    width = next(iter(k for k in trials[0].params if k.startswith("model.args.hidden")))
    assert all(isinstance(t.params[width], int) for t in trials)


@pytest.mark.slow
def test_the_worked_example_runs_reports_confirms_and_verifies(tmp_path, monkeypatch, capsys):
    """The README's "Tune your own network", command by command (fewer trials)."""
    for name in ("nets.py", "study.toml"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    storage = ["--storage", "sqlite:///hpo.db"]
    assert main(["run", "study.toml", "--workers", "2", "--trials", "8", "--quiet", *storage]) == 0
    out = capsys.readouterr().out
    assert "model.args.hidden_dim" in out and "hpo-report-my-twolayer.html" in out
    html = (tmp_path / "hpo-report-my-twolayer.html").read_text()
    assert "your network nets.py:TwoLayerNet" in html and "</html>" in html
    args = ["--top", "2", "--seeds", "2", "--in-process", "--quiet"]
    assert main(["confirm", *args, *storage]) == 0
    assert "the top 2 configurations over 2 seeds each" in capsys.readouterr().out
    assert main(["best", "--verify", *storage]) == 0
    assert "reproduces bit for bit" in capsys.readouterr().out
    assert main(["best", "--command", "--json", *storage]) == 0
    argv = json.loads(capsys.readouterr().out)["argv"]
    assert "--network" in argv and "--hidden" not in argv
    assert main(["best", "--retrain", "--export", "best.npz", *storage]) == 0
    with np.load(tmp_path / "best.npz") as archive:
        assert "param:W1" in archive.files


def test_best_command_retrains_a_user_net_trial_to_its_stored_value(tmp_path, capsys):
    copy_net(tmp_path, "cs231n_net.py")
    spec = own_spec(tmp_path, "cs231n_net.py:TwoLayerNet", args="hidden_dim = 30", trials=2)
    storage = ["--storage", f"sqlite:///{tmp_path / 's.db'}"]
    assert main(["run", str(spec), "--in-process", "--quiet", "--no-report", *storage]) == 0
    capsys.readouterr()
    assert main(["best", "--command", "--json", *storage]) == 0
    line = json.loads(capsys.readouterr().out)
    from trainer.cli import main as trainer_main

    assert trainer_main([*line["argv"][3:], "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["best_val_accuracy"] == line["value"]


# ---------------------------------------------------------------------------------------------
# Bad nets: one line, exit 2, nothing stored


@pytest.mark.parametrize(
    ("network", "fragment"),
    [
        ("missing.py:Net", "model.network: missing.py:Net: "),
        ("bad_nets.py:Nope", "bad_nets.py has no class Nope"),
        ("bad_nets.py:RaisesInConstructor", "RaisesInConstructor(...) raised RuntimeError"),
        ("bad_nets.py:NoParams", "has no params dict of arrays"),
        ("bad_nets.py:WrongKeys", "gradients' keys differ from params'"),
        ("bad_nets.py:WrongShape", "the gradient of 'W1' has shape (3,)"),
        ("broken.py:Net", "broken.py does not import: SyntaxError"),
    ],
)
def test_a_bad_net_exits_2_in_one_line_and_stores_nothing(tmp_path, network, fragment):
    copy_net(tmp_path, "bad_nets.py")
    (tmp_path / "broken.py").write_text("class Net(\n")
    spec = own_spec(tmp_path, network)
    db = tmp_path / "s.db"
    done = hpo("run", str(spec), "--storage", f"sqlite:///{db}", "--workers", "2")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and str(spec) in lines[0], done.stderr
    assert not db.exists()
    assert not list(tmp_path.glob("hpo-report-*"))


@pytest.mark.parametrize(
    ("model", "space", "field", "fragment"),
    [
        ("hidden = [10]", "", "model.hidden", "sets the built-in net, not model.network"),
        (
            "",
            "weight_decay = { low = 1e-5, high = 1e-2, log = true }",
            "space.weight_decay",
            "allowed: model.args.<keyword> for your net's own settings",
        ),
        ("", "model.width = { choices = [10, 20] }", "space.model.width", "sets the built-in net"),
    ],
)
def test_the_built_in_nets_settings_with_a_user_net_name_what_to_use(
    tmp_path, model, space, field, fragment
):
    path = own_spec(tmp_path, "nets.py:Net", space=space)
    path.write_text(
        path.read_text().replace('network = "nets.py:Net"', f'network = "nets.py:Net"\n{model}')
    )
    with pytest.raises(SpecError) as excinfo:
        load_spec(str(path))
    assert excinfo.value.field == field and fragment in excinfo.value.problem


def test_model_args_in_the_space_need_a_network(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[space]\nlearning_rate = { low = 0.01, high = 0.1 }\n"model.args.reg" = 1.0\n')
    with pytest.raises(SpecError, match=r"space\.model\.args\.reg: needs model\.network"):
        load_spec(str(path))


# ---------------------------------------------------------------------------------------------
# Any setting searchable, on the built-in net too


def test_width_depth_batch_size_and_lr_decay_are_searched_by_their_place(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        textwrap.dedent(
            """
            [model]
            hidden = [100, 100, 100]
            [space]
            learning_rate = 0.01
            model.width = { low = 16, high = 64, step = 16 }
            model.depth = { choices = [1, 2] }
            training.batch_size = { choices = [32, 64] }
            "training.lr_decay" = { low = 0.9, high = 1.0 }
            training.epochs = 7
            """
        )
    )
    spec = load_spec(str(path))
    kinds = {p.name: p.kind for p in spec.space}
    assert kinds == {
        "learning_rate": "fixed",
        "model.width": "int",
        "model.depth": "choice",
        "training.batch_size": "choice",
        "training.lr_decay": "float",
        "training.epochs": "fixed",
    }
    params = {
        "model.width": 48,
        "model.depth": 2,
        "training.batch_size": 64,
        "training.lr_decay": 0.95,
    }
    run = configuration(spec, params)
    assert run.net.hidden_sizes == (48, 48)
    assert (run.training.batch_size, run.training.lr_decay, run.training.epochs) == (64, 0.95, 7)
    again = spec_from_dict(spec.to_dict(), source="storage", default_name="x")
    assert again == dataclasses.replace(spec, source="storage")


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("training.batch_size = { low = 0, high = 64 }", "0 (allowed: an integer >= 1)"),
        ("training.batch_size = { low = 1.5, high = 64 }", "1.5 is not an integer"),
        ("training.lr_decay = { low = 0.5, high = 1.5 }", "1.5 (allowed: 0 < value <= 1)"),
        ("model.depth = { choices = [0, 1] }", "0 (allowed: an integer from 1 to"),
        ("training.optimizer = 'adam'", "unknown field (allowed: "),
    ],
)
def test_a_setting_out_of_its_range_is_refused_by_its_one_rule(tmp_path, entry, fragment):
    path = tmp_path / "s.toml"
    path.write_text(f"[space]\nlearning_rate = {{ low = 0.01, high = 0.1 }}\n{entry}\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec(str(path))
    assert fragment in str(excinfo.value)


def test_a_new_searchable_training_setting_needs_only_its_rule(monkeypatch):
    """SETTINGS derives training.* from trainer.config.RULES: every TrainConfig field with a
    rule is searchable, applied by configuration() with no edit there."""
    from hpo.spec import TRAINING_KEYS
    from trainer.config import RULES, TrainConfig

    fields = set(TrainConfig.__dataclass_fields__)
    searched = {p.split(".", 1)[1] for p in SETTINGS if p.startswith("training.")}
    ruled = {p.split(".", 1)[1] for p in RULES if p.startswith("training.")}
    assert searched == (ruled & fields) - {"eval_train_samples"}
    assert set(TRAINING_KEYS) == ruled & fields  # what [training] reads


# ---------------------------------------------------------------------------------------------
# Reading needs no net


@pytest.mark.slow  # 7 s: every reading command in its own interpreter
def test_reading_commands_never_import_the_net(tmp_path, capsys):
    copy_net(tmp_path, "cs231n_net.py")
    spec = own_spec(tmp_path, "cs231n_net.py:TwoLayerNet", trials=2)
    storage = ["--storage", f"sqlite:///{tmp_path / 's.db'}"]
    assert main(["run", str(spec), "--in-process", "--quiet", "--no-report", *storage]) == 0
    (tmp_path / "cs231n_net.py").write_text("raise SystemExit('imported!')\n")
    out = tmp_path / "r.html"
    for argv in (["report", "--out", str(out)], ["best", "--json"], ["studies"]):
        done = hpo(*argv, *storage)
        assert done.returncode == 0, done.stderr
        assert "imported!" not in done.stderr
    assert "built-in net only" in out.read_text() or "your network" in out.read_text()
    verify = hpo("best", "--verify", *storage)
    assert verify.returncode == 2 and len(verify.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# What main wrote before the seam still loads


def test_every_packaged_spec_keeps_its_stored_layout_and_fingerprint():
    stored = json.loads((DATA / "stored_specs_v1.json").read_text())
    assert set(stored) <= set(packaged_specs())
    for name, before in stored.items():
        spec = load_spec(name)
        assert spec.to_dict() == before["stored"], name
        assert spec.objective_fingerprint() == before["fingerprint"], name
        again = spec_from_dict(before["stored"], source="storage", default_name=name)
        assert again.objective_fingerprint() == before["fingerprint"], name


def test_a_study_stored_by_main_before_the_seam_reads_resumes_and_verifies(tmp_path, capsys):
    db = tmp_path / "old.db"
    shutil.copy(DATA / "main-v1-study.db", db)
    shutil.copy(DATA / "main-v1-study.toml", tmp_path / "tiny.toml")
    storage = ["--storage", f"sqlite:///{db}"]
    assert main(["best", "--json", *storage]) == 0
    assert json.loads(capsys.readouterr().out)["study"] == "from-main"
    # Bit for bit where the arithmetic underneath is the one it was stored with; elsewhere (a
    # CPU whose OpenBLAS kernels differ, another NumPy) the difference is put down to that, never
    # to the split or the configuration.
    code = main(["best", "--verify", "--trial", "0", "--json", *storage])
    verification = json.loads(capsys.readouterr().out)
    assert code == (0 if verification["reproduced"] else 1)
    if not verification["reproduced"]:
        differs = verification["environment_differs"]
        assert differs and all(d.startswith(("the BLAS:", "NumPy:")) for d in differs), differs
    spec = ["run", str(tmp_path / "tiny.toml"), "--trials", "5", "--in-process", "--quiet"]
    assert main([*spec, "--no-report", *storage]) == 0
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 5


# ---------------------------------------------------------------------------------------------
# cs231n's grid as a packaged study


def test_the_cs231n_grid_is_packaged_with_its_144_configurations():
    spec = load_spec("cs231n-grid")
    assert spec.search.sampler == "grid" and grid_size(spec) == 3 * 4 * 4 * 3
    names = {p.name for p in spec.space if p.kind == "choice"}
    assert names == {"model.width", "learning_rate", "weight_decay", "training.lr_decay"}


def test_verify_names_an_edited_network_file_when_values_differ(tmp_path, capsys):
    copy_net(tmp_path, "cs231n_net.py")
    spec = own_spec(tmp_path, "cs231n_net.py:TwoLayerNet", args="hidden_dim = 20", trials=1)
    storage = ["--storage", f"sqlite:///{tmp_path / 's.db'}"]
    assert main(["run", str(spec), "--in-process", "--quiet", "--no-report", *storage]) == 0
    path = tmp_path / "cs231n_net.py"
    path.write_text(path.read_text().replace("weight_scale=1e-3", "weight_scale=2e-3"))
    capsys.readouterr()
    done = hpo("best", "--verify", *storage)
    assert done.returncode == 1
    assert "the network's file (digest)" in done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------
# What the review found


def test_list_arguments_are_searched_as_choices_and_reach_the_constructor(tmp_path):
    net = tmp_path / "deep.py"
    net.write_text(
        (NETS / "cs231n_net.py").read_text().replace("class TwoLayerNet", "class Base")
        + textwrap.dedent(
            """

            class Deep(Base):
                def __init__(self, input_dim, num_classes, hidden_dims=(10,)):
                    super().__init__(input_dim, hidden_dims[-1], num_classes, weight_scale=0.1)
                    self.hidden_dims = list(hidden_dims)
            """
        )
    )
    spec = own_spec(
        tmp_path, "deep.py:Deep", space="model.args.hidden_dims = { choices = [[8], [16, 32]] }"
    )
    loaded = load_spec(str(spec))
    (p,) = [p for p in loaded.space if p.name == "model.args.hidden_dims"]
    assert p.choices == ((8,), (16, 32))
    run = configuration(loaded, {"model.args.hidden_dims": "[16, 32]"})
    assert dict(run.net.args)["hidden_dims"] == (16, 32)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert (
        main(["run", str(spec), "--in-process", "--quiet", "--no-report", "--storage", storage])
        == 0
    )
    values = {
        t.params["model.args.hidden_dims"]
        for t in optuna.load_study(study_name="own", storage=storage).trials
    }
    assert values <= {"[8]", "[16, 32]"}


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ("model.args.flag = { choices = [1, true] }", "which are equal"),
        ("model.args.reg = nan", "allowed: a finite number"),
        ("model.args.reg = { choices = [inf, 0.1] }", "allowed: a finite number"),
        ("model.args.hidden_dim = { choices = [[8], 16] }", "all lists, or no list"),
        ('"model.args.weight_scale" = 0.1', "also set in [model.args]"),
    ],
)
def test_bad_learner_settings_in_the_space(tmp_path, space, fragment):
    path = own_spec(tmp_path, "nets.py:Net", args="weight_scale = 0.01", space=space)
    with pytest.raises(SpecError) as excinfo:
        load_spec(str(path))
    assert fragment in str(excinfo.value)


def test_an_argument_named_like_a_range_key_is_the_nets_keyword(tmp_path):
    path = own_spec(tmp_path, "nets.py:Net", space="model.args.step = { choices = [1, 2] }")
    spec = load_spec(str(path))
    assert [p.name for p in spec.space if p.kind == "choice"] == ["model.args.step"]


def test_an_experiment_with_a_learner_net_is_refused(tmp_path):
    path = own_spec(tmp_path, "nets.py:Net")
    path.write_text(path.read_text().replace('name = "own"', 'name = "own"\nexperiment = "init"'))
    with pytest.raises(SpecError, match="the chapter's experiments on the built-in net only"):
        load_spec(str(path))


def test_searched_epochs_set_the_reports_epochs_and_the_warmup_rule(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        "[training]\nepochs = 3\n[search]\npruner = 'hyperband'\nwarmup_epochs = 4\n"
        "[space]\nlearning_rate = 0.01\ntraining.epochs = { low = 5, high = 12 }\n"
    )
    assert load_spec(str(path)).max_epochs() == 12
    path.write_text(path.read_text().replace("low = 5", "low = 4"))
    with pytest.raises(SpecError, match=r"training\.epochs = 4 at the fewest the space gives"):
        load_spec(str(path))


def test_an_edited_network_file_is_loaded_anew_and_refused_on_resume(tmp_path, capsys):
    copy_net(tmp_path, "cs231n_net.py")
    spec = own_spec(tmp_path, "cs231n_net.py:TwoLayerNet", args="hidden_dim = 10", trials=1)
    storage = ["--storage", f"sqlite:///{tmp_path / 's.db'}"]
    assert main(["run", str(spec), "--in-process", "--quiet", "--no-report", *storage]) == 0
    path = tmp_path / "cs231n_net.py"
    path.write_text(path.read_text().replace("weight_scale=1e-3", "weight_scale=2e-3") + "\n")
    capsys.readouterr()
    assert main(["run", str(spec), "--trials", "2", "--in-process", "--quiet", *storage]) == 2
    assert "has changed since study 'own' trained it" in capsys.readouterr().err


def test_a_net_with_its_own_state_exports_it_and_restores_it(tmp_path, capsys):
    net = tmp_path / "stateful.py"
    net.write_text(
        (NETS / "cs231n_net.py").read_text()
        + textwrap.dedent(
            """

            class Counting(TwoLayerNet):
                def __init__(self, input_dim, num_classes, hidden_dim=10):
                    super().__init__(input_dim, hidden_dim, num_classes)
                    self.steps = np.zeros(1)

                def loss(self, X, y=None):
                    if y is not None:
                        self.steps += 1
                    return super().loss(X, y)

                def state(self):
                    return [v.copy() for v in self.params.values()] + [self.steps.copy()]

                def load_state(self, state):
                    for v, s in zip(self.params.values(), state):
                        v[...] = s
                    self.steps[...] = state[-1]
            """
        )
    )
    spec = own_spec(tmp_path, "stateful.py:Counting", args="hidden_dim = 10", trials=1)
    storage = ["--storage", f"sqlite:///{tmp_path / 's.db'}"]
    assert main(["run", str(spec), "--in-process", "--quiet", "--no-report", *storage]) == 0
    assert main(["best", "--retrain", "--export", str(tmp_path / "b.npz"), *storage]) == 0
    from trainer.checkpoint import load_checkpoint

    loaded, _ = load_checkpoint(tmp_path / "b.npz")
    assert loaded.net.steps[0] > 0


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (
            "class X(Base):\n    def state(self):\n        return []\n",
            "defines state() without load_state()",
        ),
        (
            "class X(Base):\n    def __init__(self, input_size, output_size):\n"
            "        raise SystemExit('bye')\n",
            "raised SystemExit: bye",
        ),
        (
            "class X(Base):\n    def __init__(self, input_size, output_size):\n"
            "        super().__init__(input_size, output_size)\n"
            "        self.params = {0: self.params['W1']}\n",
            "params has the key 0",
        ),
    ],
    ids=["half-state", "exit", "int-keys"],
)
def test_more_bad_nets_are_one_line(tmp_path, source, fragment):
    from trainer.config import NetConfig
    from trainer.contract import NetworkError
    from trainer.datasets import load_split

    (tmp_path / "x.py").write_text(
        (NETS / "bad_nets.py").read_text().replace("_Base", "Base") + "\n\n" + source
    )
    split = load_split("digits", rng=np.random.default_rng(0), train_size=100)
    state = np.random.get_state()  # noqa: NPY002
    with pytest.raises(NetworkError) as excinfo:
        NetConfig(network=f"{tmp_path / 'x.py'}:X").check(split)
    assert fragment in str(excinfo.value)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # noqa: NPY002 - restored


def test_a_file_in_a_package_imports_with_its_relative_imports(tmp_path):
    from trainer.contract import load_network

    package = tmp_path / "cs231n"
    (package / "classifiers").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "classifiers" / "__init__.py").write_text("")
    (package / "layers.py").write_text("SCALE = 3\n")
    (package / "classifiers" / "fc_net.py").write_text(
        "from ..layers import SCALE\n\nclass Net:\n    scale = SCALE\n"
    )
    cls = load_network(f"{package / 'classifiers' / 'fc_net.py'}:Net")
    assert cls.scale == 3


def test_a_finite_space_of_integer_ranges_and_list_choices_is_counted_and_drawn_once(tmp_path):
    from hpo.finite_space import configurations, space_size

    path = own_spec(
        tmp_path,
        "nets.py:Net",
        space="model.args.width = { low = 10, high = 30, step = 10 }\n"
        "model.args.dims = { choices = [[8], [8, 8]] }",
    )
    path.write_text(
        path.read_text().replace(
            "learning_rate = { low = 3e-3, high = 3e-2, log = true }", "learning_rate = 0.01"
        )
    )
    spec = load_spec(str(path))
    assert space_size(spec) == 3 * 2
    listed = configurations(spec)
    assert {c["model.args.width"] for c in listed} == {10, 20, 30}
    assert {c["model.args.dims"] for c in listed} == {"[8]", "[8, 8]"}


def test_the_random_sampler_draws_an_optimizers_own_parameter_too(tmp_path):
    """A finite space whose first configuration lacks a conditional parameter (sgd has no
    momentum) still draws that parameter's values at random."""
    from hpo.finite_space import configurations, unseen_configuration

    path = tmp_path / "fin.toml"
    path.write_text(
        "[search]\nsampler = 'random'\n[space]\nlearning_rate = 0.01\n"
        "optimizer = { choices = ['sgd', 'momentum'] }\nmomentum = { choices = [0.5, 0.9] }\n"
    )
    spec = load_spec(str(path))
    listed = configurations(spec)
    drawn = [unseen_configuration(spec, listed, [], number=n).get("momentum") for n in range(200)]
    assert 0.5 in drawn and 0.9 in drawn and None in drawn
