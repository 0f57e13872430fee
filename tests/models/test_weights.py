import pickle

import pytest
import torch

from medssl.errors import CheckpointError
from medssl.models.backbones import build_encoder, monai_network
from medssl.models.weights import load_encoder_weights


def _different(a, b):
    return any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("wrap", ["plain", "lightning", "module_prefix"])
def test_loads_each_format(tmp_path, wrap):
    src = build_encoder("resnet18")
    state = src.net.state_dict()
    if wrap == "lightning":
        obj = {"state_dict": {f"encoder.net.{k}": v for k, v in state.items()}, "epoch": 3}
    elif wrap == "module_prefix":
        plain = monai_network("resnet18")
        plain.load_state_dict(state)
        obj = {f"module.{k}": v for k, v in plain.state_dict().items()}
    else:
        obj = state
    torch.save(obj, tmp_path / "w.pt")
    dst = build_encoder("resnet18")
    assert _different(src.net, dst.net)
    load_encoder_weights(tmp_path / "w.pt", dst)
    for k, v in src.net.state_dict().items():
        torch.testing.assert_close(dst.net.state_dict()[k], v)


def test_wrong_architecture_is_clear(tmp_path):
    torch.save(build_encoder("densenet121").net.state_dict(), tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="architecture"):
        load_encoder_weights(tmp_path / "d.pt", build_encoder("resnet18"))


class _Payload:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /tmp/medssl_pwned",))


def test_code_running_pickle_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    with open(p, "wb") as f:
        pickle.dump({"state_dict": _Payload()}, f)
    with pytest.raises(CheckpointError, match="refused"):
        load_encoder_weights(p, build_encoder("resnet18"))
    import os
    assert not os.path.exists("/tmp/medssl_pwned")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder_weights(tmp_path / "nope.pt", build_encoder("resnet18"))
