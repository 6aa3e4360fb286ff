"""The model registry and the built-in models: fast, CPU only, no network."""

from __future__ import annotations

import importlib.metadata
import json
import re
import socket
import sys
import textwrap

import pytest
import torch

from mnr.errors import MnrError
from mnr.models import (
    InputConfig,
    count_parameters,
    create_model,
    describe_models,
    import_model_module,
    is_model,
    list_models,
    load_plugins,
    model_description,
    register_model,
    registry,
)

BUILTIN = ["baseline_cnn", "bn_cnn", "deep_cnn", "resnet18"]


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Forget whatever a test registers or imports, so tests do not see each other's models."""
    names_before = set(registry._model_entrypoints)
    files_before = dict(registry._imported_files)
    monkeypatch.setattr(registry, "_loaded_plugins", set())
    yield
    registry._unregister_since(names_before)
    registry._imported_files.clear()
    registry._imported_files.update(files_before)


@pytest.fixture
def no_network(monkeypatch):
    """Make any download or socket connection fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", refuse)


def test_builtin_models_are_listed_with_descriptions():
    assert set(BUILTIN) <= set(list_models())
    assert list_models() == sorted(list_models())
    for name in BUILTIN:
        assert is_model(name)
        description = model_description(name)
        assert description and "\n" not in description


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("input_size", [(64, 48), (128, 128)])
def test_every_model_builds_and_returns_logits(name, input_size, no_network):
    torch.manual_seed(0)
    model = create_model(name, input_size=input_size)
    assert model.model_name == name
    assert model.input_config == InputConfig(input_size=input_size, num_classes=88)
    model.eval()
    x = torch.randn(2, 3, *input_size)
    with torch.no_grad():
        logits = model(x)
        logits_cl = model(x.contiguous(memory_format=torch.channels_last))
    assert logits.shape == (2, 88)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits_cl, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", BUILTIN)
def test_training_step_runs_in_channels_last(name, no_network):
    model = create_model(name, num_classes=5, input_size=(64, 48)).to(
        memory_format=torch.channels_last
    )
    x = torch.randn(4, 3, 64, 48).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.equal(x, before), "forward modified its input in place"
    assert model.input_config.num_classes == 5


def test_create_model_drops_none_kwargs():
    model = create_model("bn_cnn", dropout=None, num_classes=88)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == 0.3 for m in dropouts)

    model = create_model("bn_cnn", dropout=0.5)
    assert all(m.p == 0.5 for m in model.modules() if isinstance(m, torch.nn.Dropout))

    default = create_model("deep_cnn")
    assert count_parameters(create_model("deep_cnn", width=None)) == count_parameters(default)
    assert count_parameters(create_model("deep_cnn", width=8)) < count_parameters(default)


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(MnrError, match="dropout") as info:
        create_model("resnet18", dropout=0.1)
    assert "resnet18" in str(info.value)
    with pytest.raises(MnrError, match="width, depth, dropout"):
        create_model("deep_cnn", widht=8)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(MnrError, match="baseline_cnn") as info:
        create_model("baseline_cn")
    assert "mnr models" in str(info.value)
    with pytest.raises(MnrError, match="unknown model"):
        model_description("no_such_thing")


def test_bad_sizes_and_pretrained_are_user_errors():
    with pytest.raises(MnrError, match="too small"):
        create_model("baseline_cnn", input_size=(12, 128))
    with pytest.raises(MnrError, match="input_size"):
        create_model("bn_cnn", input_size=(0, 64))
    with pytest.raises(MnrError, match="pretrained"):
        create_model("bn_cnn", pretrained=True)


def test_wildcards():
    assert list_models("*cnn") == ["baseline_cnn", "bn_cnn", "deep_cnn"]
    assert list_models("resnet*") == ["resnet18"]
    assert list_models(["b*", "res*"]) == ["baseline_cnn", "bn_cnn", "resnet18"]
    assert list_models("nothing*") == []


def test_register_model_bare_and_with_options():
    @register_model
    def tiny_a(*, num_classes=88, input_size=(128, 128), pretrained=False):
        """A tiny test net.

        More text that is not part of the description.
        """
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    @register_model(name="tiny_b", description="renamed")
    def whatever(**kwargs):
        return tiny_a(**kwargs)

    assert model_description("tiny_a") == "A tiny test net."
    assert model_description("tiny_b") == "renamed"
    assert not is_model("whatever")
    model = create_model("tiny_b", num_classes=3, input_size=(8, 8))
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    assert model.model_name == "tiny_b"


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(MnrError, match="already registered"):

        @register_model
        def bn_cnn(**kwargs):
            return torch.nn.Identity()

    assert registry._model_modules["bn_cnn"] == "mnr.models.cnn"


def test_input_config_round_trips():
    config = InputConfig(
        input_size=(64, 48), mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0), num_classes=7
    )
    d = config.to_dict()
    assert d == json.loads(json.dumps(d)), "to_dict must be plain JSON"
    assert isinstance(d["input_size"], list)
    assert InputConfig.from_dict(d) == config
    assert InputConfig.from_dict({"input_size": [128, 128]}) == InputConfig(input_size=(128, 128))
    with pytest.raises(MnrError, match="unknown keys"):
        InputConfig.from_dict({**d, "colour": "blue"})


def _fake_entry_points(monkeypatch, *eps):
    def entry_points(**kwargs):
        assert kwargs == {"group": "mnr.models"}
        return list(eps)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_broken_plugin_is_noted_and_good_one_registers(tmp_path, monkeypatch, capsys):
    (tmp_path / "mnr_test_plugin_good.py").write_text(
        textwrap.dedent(
            """
            import torch
            from mnr.models import register_model

            @register_model
            def plugin_net(*, num_classes=88, input_size=(128, 128), pretrained=False):
                '''A net from a plugin.'''
                return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

            def loose_net(*, num_classes=88, input_size=(128, 128), pretrained=False):
                '''An undecorated callable named by its entry point.'''
                return plugin_net(num_classes=num_classes)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mnr_test_plugin_good", raising=False)
    EntryPoint = importlib.metadata.EntryPoint
    _fake_entry_points(
        monkeypatch,
        EntryPoint("broken", "mnr_test_plugin_missing_xyz", "mnr.models"),
        EntryPoint("good", "mnr_test_plugin_good", "mnr.models"),
        EntryPoint("loose", "mnr_test_plugin_good:loose_net", "mnr.models"),
    )
    loaded = load_plugins()
    assert re.search(
        r"^mnr: skipping model plugin 'broken' .*ModuleNotFoundError", capsys.readouterr().err, re.M
    )
    assert loaded == ["good", "loose"]
    assert is_model("plugin_net") and is_model("loose")
    assert model_description("plugin_net") == "A net from a plugin."
    assert load_plugins() == [], "entry points load once"


def test_plugins_load_lazily_on_first_lookup(monkeypatch):
    calls = []
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_plugin_entry_points", lambda: calls.append(1) or [])
    list_models()
    is_model("bn_cnn")
    create_model("baseline_cnn", input_size=(32, 32))
    assert calls == [1]


def test_import_model_module_from_a_file(tmp_path):
    path = tmp_path / "my nets.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            from mnr.models import register_model

            @register_model
            def my_net(*, num_classes=88, input_size=(128, 128), pretrained=False, hidden=4):
                '''My own net.'''
                return torch.nn.Sequential(
                    torch.nn.Flatten(), torch.nn.LazyLinear(hidden), torch.nn.Linear(hidden, num_classes)
                )
            """
        )
    )
    assert not is_model("my_net")
    module = import_model_module(str(path))
    assert is_model("my_net")
    assert import_model_module(str(path)) is module, "a second import must not re-register"
    model = create_model("my_net", num_classes=3, input_size=(8, 8), hidden=None)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 3)


def test_import_model_module_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.py"
    with pytest.raises(MnrError, match="missing.py"):
        import_model_module(str(missing))
    with pytest.raises(MnrError, match="no_such_module_xyz"):
        import_model_module("no_such_module_xyz")

    broken = tmp_path / "broken.py"
    broken.write_text(
        textwrap.dedent(
            """
            import torch
            from mnr.models import register_model

            @register_model
            def half_net(**kwargs):
                return torch.nn.Identity()

            raise RuntimeError("oops")
            """
        )
    )
    with pytest.raises(MnrError, match=r"broken\.py.*oops"):
        import_model_module(str(broken))
    assert not is_model("half_net"), "a failed import leaves no half-registered models"
    broken.write_text(broken.read_text().replace('raise RuntimeError("oops")', ""))
    import_model_module(str(broken))
    assert is_model("half_net")


def test_resnet18_pretrained_failure_is_a_user_error(no_network):
    with pytest.raises(MnrError, match="network"):
        create_model("resnet18", pretrained=True)


def test_describe_models():
    rows = describe_models("*cnn")
    assert [r["name"] for r in rows] == ["baseline_cnn", "bn_cnn", "deep_cnn"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["baseline_cnn"]["params"] == count_parameters(create_model("baseline_cnn"))
    assert all(r["description"] for r in rows)
