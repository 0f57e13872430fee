import pytest

from medssl.config import Config, load_config
from medssl.errors import ConfigError, MedsslError


def test_defaults_load():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.model.arch == "resnet18"
    assert cfg.ssl.method == "mocov2"


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("ssl:\n  method: simclr\n  temperature: 0.1\ntrainer:\n  max_epochs: 3\n")
    cfg = load_config(p, ["trainer.batch_size=32", "study.budgets=[250, 0.01]", "data.labels=[A, B]"])
    assert cfg.ssl.method == "simclr"
    assert cfg.ssl.temperature == pytest.approx(0.1)
    assert cfg.trainer.max_epochs == 3 and cfg.trainer.batch_size == 32
    assert cfg.study.budgets == [250, 0.01]
    assert isinstance(cfg.study.budgets[0], int) and isinstance(cfg.study.budgets[1], float)
    assert cfg.data.labels == ["A", "B"]


def test_unknown_key_names_path_and_allowed(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("ssl:\n  methd: simclr\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "ssl.methd" in str(e.value) and "method" in str(e.value)


def test_invalid_literal_lists_choices():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["ssl.method=no-such-method"])
    msg = str(e.value)
    assert "ssl.method" in msg and "mocov2" in msg and "byol" in msg


def test_wrong_type_and_range():
    with pytest.raises(ConfigError, match="trainer.batch_size"):
        load_config(None, ["trainer.batch_size=big"])
    with pytest.raises(ConfigError, match="temperature"):
        load_config(None, ["ssl.temperature=0"])
    with pytest.raises(ConfigError, match="fraction"):
        load_config(None, ["study.budgets=[1.5]"])


def test_config_errors_are_medssl_errors(tmp_path):
    with pytest.raises(MedsslError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ssl: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(bad)
