import logging

import pytest
import yaml

from medssl.augment import POLICIES, TRANSFORMS, policy, policy_from_config, resolve_specs
from medssl.config import load_config
from medssl.errors import ConfigError, UnsafeAugmentationError


def test_xray_default_resolves_in_canonical_order_with_documented_values():
    p = policy("xray-default", modality="xray", out_size=224)
    assert p.names() == ["crop", "rotate", "hflip", "affine", "perspective", "noise"]
    spec = {s.name: s.params for s in p.specs}
    assert spec["crop"]["scale"] == (0.7, 1.0)
    assert spec["crop"]["ratio"] == pytest.approx((0.75, 4 / 3))
    assert spec["rotate"]["degrees"] == 10.0 and spec["hflip"]["p"] == 0.5
    assert spec["affine"] == {"shear": 5.0, "translate": 0.05, "p": 1.0}
    assert spec["noise"]["p"] == 0.0          # light noise exists but is off by default
    assert not p.unsafe


def test_params_override_add_and_remove_transforms():
    _, specs = resolve_specs("xray-default", {"rotate": {"degrees": 5}, "perspective": None,
                                              "noise": {"p": 0.5}, "vflip": {"p": 0.1}})
    spec = {s.name: s.params for s in specs}
    assert spec["rotate"]["degrees"] == 5.0
    assert "perspective" not in spec
    assert spec["noise"] == {"std": 0.01, "p": 0.5}
    assert spec["vflip"] == {"p": 0.1}
    # canonical order whatever the order given
    assert [s.name for s in specs] == ["crop", "rotate", "hflip", "vflip", "affine", "noise"]


def test_spec_mapping_and_list_forms_are_equivalent():
    a = policy({"rotate": {"degrees": 3}, "crop": {"scale": [0.8, 1.0]}}, out_size=32)
    b = policy([{"name": "crop", "scale": (0.8, 1.0)}, {"name": "rotate", "degrees": 3}], out_size=32)
    assert a.specs == b.specs and a.names() == ["crop", "rotate"]


@pytest.mark.parametrize("name_or_spec, params, needle", [
    ("xray-defualt", None, "unknown policy 'xray-defualt'"),
    ("xray-default", {"colour": {"p": 1}}, "unknown transform 'colour'"),
    ("xray-default", {"rotate": {"degreez": 5}}, "augment.params.rotate.degreez: unknown parameter"),
    ("xray-default", {"hflip": {"p": 1.5}}, "probability must be in [0, 1]"),
    ("xray-default", {"crop": {"scale": [0.9, 0.5]}}, "augment.params.crop.scale"),
    ("xray-default", {"rotate": {"degrees": "ten"}}, "expected a finite number"),
    ("xray-default", {"perspective": {"distortion": 0.5}}, "corner quad can fold"),
    ("xray-default", {"rotate": 5}, "expected a mapping of parameters"),
])
def test_invalid_specs_raise_config_errors_naming_the_key(name_or_spec, params, needle):
    with pytest.raises(ConfigError) as e:
        policy(name_or_spec, params=params)
    assert not isinstance(e.value, UnsafeAugmentationError)
    assert needle in str(e.value)


def test_unknown_modality_and_bad_out_size():
    with pytest.raises(ConfigError, match="modality 'pet'"):
        policy("xray-default", modality="pet")
    with pytest.raises(ConfigError, match="out_size"):
        policy("xray-default", out_size=4)
    assert policy("xray-default", modality="DX").modality == "xray"   # DICOM code accepted


@pytest.mark.parametrize("params, needle", [
    ({"jitter": {"brightness": 0.2}}, "density"),
    ({"blur": {}}, "texture"),
    ({"solarize": {}}, "dense and lucent"),
    ({"vflip": {"p": 0.5}}, "anatomically impossible"),
    ({"crop": {"scale": [0.3, 1.0]}}, "cut out the finding"),
    ({"rotate": {"degrees": 30}}, "orientation"),
    ({"affine": {"translate": 0.3}}, "out of the field"),
    ({"intensity": {}}, "density"),
])
def test_xray_refuses_unsafe_transforms_saying_why_and_how_to_force(params, needle):
    with pytest.raises(UnsafeAugmentationError) as e:
        policy("xray-default", modality="xray", params=params)
    text = str(e.value)
    assert needle in text and "force_unsafe" in text and "xray-default" in text


def test_disabled_unsafe_transform_is_not_refused():
    assert policy("xray-default", params={"vflip": {"p": 0.0}}).names().count("vflip") == 1


def test_named_policies_per_modality():
    assert policy("ct-default", modality="ct").names() == ["window_jitter", "crop", "rotate", "hflip", "noise"]
    assert {s.name: s.params for s in policy("ct-default", modality="ct").specs}["hflip"]["p"] == 0.0
    assert "hflip" not in policy("mr-default", modality="mr").names()
    with pytest.raises(UnsafeAugmentationError, match="window_jitter"):
        policy("ct-default", modality="xray")
    with pytest.raises(UnsafeAugmentationError, match="'intensity' is not allowed for xray"):
        policy("mr-default", modality="xray")
    with pytest.raises(UnsafeAugmentationError):
        policy("simclr", modality="ct")
    assert set(POLICIES) >= {"xray-default", "ct-default", "mr-default", "simclr", "none"}
    for name in POLICIES:      # every named policy is valid for some modality when forced
        assert policy(name, modality="mr", force_unsafe=True).name == name


def test_force_unsafe_allows_and_warns_loudly(caplog):
    with caplog.at_level(logging.WARNING, logger="medssl.augment.policies"):
        p = policy("simclr", modality="xray", force_unsafe=True, out_size=32)
    assert p.unsafe and set(p.names()) == {"jitter", "crop", "hflip", "blur"}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3       # jitter, blur, strong crop
    assert all("UNSAFE AUGMENTATION FORCED" in r.getMessage() for r in warnings)


def test_policy_from_yaml_config_with_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": {"modality": "xray"}, "model": {"input_size": 64},
                                        "augment": {"policy": "xray-default",
                                                    "params": {"rotate": {"degrees": 5}}}}))
    p = policy_from_config(load_config(cfg_file))
    assert p.out_size == 64 and {s.name: s.params for s in p.specs}["rotate"]["degrees"] == 5.0
    cfg = load_config(cfg_file, ["augment.params.blur.p=0.5"])
    with pytest.raises(UnsafeAugmentationError, match="blur"):
        policy_from_config(cfg)
    cfg = load_config(cfg_file, ["augment.params.blur.p=0.5", "augment.force_unsafe=true"])
    assert "blur" in policy_from_config(cfg).names()


def test_every_transform_documents_its_parameters():
    for name, tdef in TRANSFORMS.items():
        assert tdef.stage in ("intensity", "geometry", "texture") and tdef.doc
        assert "p" in tdef.params, name
