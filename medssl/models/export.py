"""Models out: a fine-tuned classifier or a bare encoder as TorchScript / ONNX, with a model card.

    from medssl.models.export import export
    written = export("runs/cell/best.pt", formats=["torchscript", "onnx"], out_dir="runs/cell/export")

What goes in, detected from the file's contents:

- a fine-tuning cell's `best.pt` (`medssl.finetune.run.finetune_cell`): `arch`, `in_channels`,
  `input_size`, `labels`, `mode`, `init`, `head` and, for mode "full", `encoder` (the MONAI
  network's state dict). The head is an `nn.Linear` state dict (`weight`, `bias`) or, for the
  linear probe, a `StandardizedLinear` one (`linear.weight`, `linear.bias`, `mean`, `std`).
  A linear-probe checkpoint may omit `encoder`: the probe sits on the frozen init encoder, so the
  encoder is rebuilt from `init` (a weights file: as given, else relative to the checkpoint's
  folder or one of its parents; `--init` overrides) or, for init "random", from the seed the
  random encoder was drawn from (`init_seed` in best.pt when present, else `--init-seed`: the
  config's top-level `seed`). kNN probes are refused: they are a lookup into their training
  features, not a fixed function.
- an encoder file (`medssl export-backbone`'s encoder.pt with its JSON, or any weights format
  `medssl.models.weights` accepts together with the architecture given explicitly).

What comes out: a module taking float32 (B, 1, S, S) images in [0, 1] (bright = dense, S =
input_size; batch size free) and returning sigmoid class probabilities (B, C) (classifier) or
features (B, D) (encoder). Normalisation ((x - mean) / std) and the grey -> 3-channel replication
of a 3-channel network happen inside. `model.ts` (torch.jit.trace) and/or `model.onnx`
(torch.onnx dynamo exporter, one self-contained file, dynamic batch axis), each checked against the
PyTorch module on random inputs before it is kept, and `model_card.md` + `model_card.json`
(`medssl.models.model_card`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medssl.errors import CheckpointError, ConfigError, OutputError
from medssl.models.backbones import pool_tokens

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}
#: An export is refused when it differs from the PyTorch module by more than this (relative to the output scale).
PARITY_TOLERANCE = 1e-3
#: Modes of a cell whose best.pt holds an exportable head.
EXPORTABLE_MODES = ("linear", "full")


class ExportModule(nn.Module):
    """(B, 1, S, S) float32 in [0, 1] -> probabilities (B, C) (with a head) or features (B, D).

    net: the plain MONAI network; mean/std: the encoder's input normalisation; in_channels 3 repeats
    the grey channel (decided here, at construction, so the traced graph has no shape branch);
    head: nn.Linear on the features, optionally after standardising them with feat_mean/feat_std.
    """

    def __init__(self, net: nn.Module, *, mean: float, std: float, in_channels: int = 1,
                 head: nn.Linear | None = None, feat_mean: torch.Tensor | None = None,
                 feat_std: torch.Tensor | None = None):
        super().__init__()
        self.net = net
        self.head = head
        self.repeat = int(in_channels)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.standardize = feat_mean is not None
        if self.standardize:
            self.register_buffer("feat_mean", torch.as_tensor(feat_mean, dtype=torch.float32).clone())
            self.register_buffer("feat_std", torch.as_tensor(feat_std, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        if self.repeat == 3:
            z = z.expand(-1, 3, -1, -1)
        f = pool_tokens(self.net(z))   # a ViT's (tokens, hidden states) -> mean token; CNN features unchanged
        if self.head is None:
            return f
        if self.standardize:
            f = (f - self.feat_mean) / self.feat_std
        return torch.sigmoid(self.head(f))


@dataclass
class LoadedModel:
    """An exportable module and what the model card says about it."""

    module: ExportModule
    kind: str                         # "classifier" | "encoder"
    arch: str
    in_channels: int
    input_size: int
    mean: float
    std: float
    feature_dim: int
    source: Path
    labels: list = field(default_factory=list)
    mode: str | None = None
    init: str | None = None           # "random" or the init weights file actually used
    init_format: str | None = None
    checkpoint: dict = field(default_factory=dict)   # non-tensor entries of best.pt
    spec: dict | None = None          # an encoder's export JSON


# ----------------------------------------------------------------------------- loading
def is_classifier_checkpoint(obj: dict) -> bool:
    """A fine-tuning cell's best.pt: a head plus the cell's description."""
    return isinstance(obj.get("head"), dict) and "arch" in obj and "labels" in obj


def load_model(path: str | Path, *, init: str | None = None, init_seed: int | None = None,
               arch: str | None = None, in_channels: int | None = None, input_size: int | None = None) -> LoadedModel:
    """A cell's best.pt as a classifier, anything else as an encoder (see the module docstring)."""
    from medssl.models.weights import load_weights_file, resolve_weights_path

    path = resolve_weights_path(path)   # a MONAI bundle folder -> its models/model.pt
    obj = load_weights_file(path)
    if is_classifier_checkpoint(obj):
        return load_classifier(path, obj, init=init, init_seed=init_seed)
    if "head" in obj or "knn" in obj:
        raise CheckpointError(f"{path}: a fine-tuning checkpoint without arch/labels; it was not written by "
                              "medssl finetune, or is damaged")
    return load_encoder(path, obj, arch=arch, in_channels=in_channels, input_size=input_size)


def _head(state: dict, path: Path) -> tuple[nn.Linear, torch.Tensor | None, torch.Tensor | None]:
    if "linear.weight" in state:      # StandardizedLinear (linear probe)
        w, b = state["linear.weight"], state.get("linear.bias")
        mean, std = state.get("mean"), state.get("std")
    elif "weight" in state:           # nn.Linear (full fine-tuning)
        w, b = state["weight"], state.get("bias")
        mean = std = None
    else:
        raise CheckpointError(f"{path}: head has neither linear.weight nor weight (keys {sorted(state)[:6]})")
    if (mean is None) != (std is None):
        raise CheckpointError(f"{path}: head has only one of the standardisation buffers mean/std")
    head = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        head.weight.copy_(w.float())
        if b is not None:
            head.bias.copy_(b.float())
    return head, mean, std


def resolve_init(init: str, checkpoint_path: Path) -> Path:
    """The init weights file of a checkpoint: as given, else relative to its folder or a parent folder."""
    p = Path(init)
    if p.exists():
        return p
    if not p.is_absolute():
        for folder in Path(checkpoint_path).resolve().parents:
            if (folder / p).exists():
                return folder / p
    raise CheckpointError(f"{checkpoint_path}: the linear probe's init encoder {init} was not found (as given, nor "
                          "relative to the checkpoint's folders); pass --init PATH (the same weights the cell used)")


def _random_encoder(arch: str, in_channels: int, input_size: int, seed: int, vit: dict | None = None):
    """The random init encoder exactly as `medssl.finetune.run.build_init_encoder` draws it."""
    from medssl.config import Config
    from medssl.finetune.run import build_init_encoder

    vit = vit or {}
    cfg = Config()
    cfg.seed = int(seed)
    cfg.model.arch, cfg.model.in_channels, cfg.model.input_size = arch, int(in_channels), int(input_size)
    cfg.model.patch_size = int(vit.get("patch_size") or cfg.model.patch_size)
    cfg.model.vit_depth = vit.get("vit_depth")
    return build_init_encoder(cfg, "random")


def load_classifier(path: Path, obj: dict, *, init: str | None = None, init_seed: int | None = None) -> LoadedModel:
    """The classifier of a cell's best.pt (see the module docstring for the contract)."""
    from medssl.models.backbones import build_encoder
    from medssl.models.weights import load_encoder_weights

    mode = obj.get("mode")
    if mode not in EXPORTABLE_MODES:
        raise CheckpointError(f"{path}: a {mode!r} cell cannot be exported (exportable modes: "
                              f"{list(EXPORTABLE_MODES)}); a kNN probe is a lookup into its training features, not a fixed network")
    arch, in_ch, size = str(obj["arch"]), int(obj["in_channels"]), int(obj["input_size"])
    vit = {"patch_size": obj.get("patch_size"), "vit_depth": obj.get("vit_depth")}   # ViT cells only
    labels = [str(x) for x in obj["labels"]]
    used_init = str(init if init is not None else obj.get("init", "random"))
    init_format = None
    if isinstance(obj.get("encoder"), dict):
        if used_init != "random":   # only for the card (pretraining counts); the weights are in best.pt
            try:
                used_init = str(resolve_init(used_init, path))
            except CheckpointError:
                pass
        encoder = build_encoder(arch, in_ch, size, **vit)
        try:
            encoder.net.load_state_dict(obj["encoder"], strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: encoder weights do not fit {arch}: {str(e).splitlines()[0]}") from e
    elif used_init == "random":
        seed = init_seed if init_seed is not None else obj.get("init_seed")
        if seed is None:
            raise CheckpointError(
                f"{path}: a linear probe on a random encoder, and best.pt does not record the seed it was drawn "
                "from; pass --init-seed N (the study config's top-level `seed`, 0 by default)")
        encoder = _random_encoder(arch, in_ch, size, int(seed), vit)
        used_init = "random"
        init_format = f"random (seed {int(seed)})"
    else:
        init_path = resolve_init(used_init, path)
        encoder = build_encoder(arch, in_ch, size, **vit)
        load_encoder_weights(init_path, encoder)
        used_init = str(init_path)
        init_format = getattr(encoder, "weights_info", {}).get("format")
    head, fmean, fstd = _head(obj["head"], path)
    if head.in_features != encoder.feature_dim or head.out_features != len(labels):
        raise CheckpointError(f"{path}: head maps {head.in_features} -> {head.out_features} but the encoder has "
                              f"{encoder.feature_dim} features and there are {len(labels)} labels")
    module = ExportModule(encoder.net, mean=encoder.spec.mean, std=encoder.spec.std, in_channels=in_ch, head=head,
                          feat_mean=fmean, feat_std=fstd).eval()
    meta = {k: v for k, v in obj.items() if not isinstance(v, (dict, torch.Tensor))}
    return LoadedModel(module, "classifier", arch, in_ch, size, float(encoder.spec.mean), float(encoder.spec.std),
                       encoder.feature_dim, path, labels=labels, mode=mode, init=used_init, init_format=init_format,
                       checkpoint=meta)


def load_encoder(path: Path, obj: dict | None = None, *, arch: str | None = None, in_channels: int | None = None,
                 input_size: int | None = None) -> LoadedModel:
    """An encoder from its export JSON (`<name>.json` beside it) or from the arch given explicitly."""
    from medssl.models.backbones import ARCHS, DEFAULT_MEAN, DEFAULT_STD, Encoder, EncoderSpec
    from medssl.models.weights import load_encoder_weights, read_export_spec

    spec = read_export_spec(path)
    if spec is None and arch is None:
        raise CheckpointError(f"{path}: not a fine-tuned classifier (no head/arch/labels), and no "
                              f"{Path(path).with_suffix('.json').name} beside it to say which encoder it is; pass "
                              f"--arch (one of {list(ARCHS)}) and --input-size, or export a cell's best.pt")
    spec = dict(spec or {})
    arch = arch or spec.get("arch")
    if arch not in ARCHS:
        raise ConfigError(f"{path}: unknown architecture {arch!r}; choose one of {list(ARCHS)}")
    in_ch = int(in_channels or spec.get("in_channels", 1))
    size = int(input_size or spec.get("input_size", 224))
    mean = float(spec.get("mean", DEFAULT_MEAN))
    std = float(spec.get("std", DEFAULT_STD))
    vit = {"patch_size": spec.get("patch_size"), "vit_depth": spec.get("vit_depth")} if arch.startswith("vit_") else {}
    encoder = Encoder(EncoderSpec(arch=arch, in_channels=in_ch, input_size=size, mean=mean, std=std, **vit))
    load_encoder_weights(path, encoder)
    module = ExportModule(encoder.net, mean=mean, std=std, in_channels=in_ch).eval()
    return LoadedModel(module, "encoder", arch, in_ch, size, mean, std, encoder.feature_dim, Path(path),
                       init=str(path), init_format=encoder.weights_info["format"], spec=spec or None)


# ----------------------------------------------------------------------------- writing
def example_input(model: LoadedModel, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, model.input_size, model.input_size, generator=g)


def _check(name: str, run, module: nn.Module, size: int, target: Path) -> float:
    """Max |exported - PyTorch| over random batches of 1 and 3 images; OutputError when off."""
    worst = 0.0
    for batch, seed in ((1, 11), (3, 12)):
        x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ref = module(x)
            out = torch.as_tensor(run(x))
        diff = float((out - ref).abs().max())
        scale = max(1.0, float(ref.abs().max()))
        if not diff <= PARITY_TOLERANCE * scale:
            raise OutputError(f"{target}: the {name} export differs from the PyTorch model by {diff:.3g} "
                              f"(outputs up to {scale:.3g}); not kept")
        worst = max(worst, diff)
    return worst


def export_torchscript(model: LoadedModel, target: Path) -> float:
    """torch.jit.trace of the module -> target (atomic); returns the max abs difference measured."""
    from medssl import atomic

    with warnings.catch_warnings():   # torch.jit is deprecated in favour of torch.export; TorchScript is still what
        warnings.simplefilter("ignore")  # C++/Triton/older runtimes load, so it stays an export format
        with torch.no_grad():
            traced = torch.jit.trace(model.module, example_input(model), check_trace=False)
        with atomic.atomic_path(target) as tmp:
            torch.jit.save(traced, str(tmp))
        loaded = torch.jit.load(str(target))
    return _check("TorchScript", lambda x: loaded(x), model.module, model.input_size, target)


def _onnx_modules():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (the dynamo exporter translates with it)
    except ImportError as e:
        raise ConfigError(f"ONNX export needs the packages onnx and onnxscript ({e.name} is missing): "
                          "pip install 'medssl[export]'") from e


def export_onnx(model: LoadedModel, target: Path) -> float | None:
    """torch.onnx (dynamo) export -> one self-contained .onnx file with a dynamic batch axis (atomic).

    Returns the max abs difference to the PyTorch module measured with onnxruntime, or None when
    onnxruntime is not installed (then the file is checked with onnx.checker only).
    """
    from medssl import atomic

    _onnx_modules()
    import onnx

    out_name = "probabilities" if model.kind == "classifier" else "features"
    with warnings.catch_warnings(), _quiet_onnx_logs():
        warnings.simplefilter("ignore")
        with atomic.atomic_path(target) as tmp:
            try:
                torch.onnx.export(model.module, (example_input(model),), str(tmp), dynamo=True, external_data=False,
                                  input_names=["image"], output_names=[out_name], verbose=False,
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
            except TypeError:   # torch < 2.6 has no dynamo/external_data arguments: the TorchScript-based exporter
                torch.onnx.export(model.module, (example_input(model),), str(tmp), input_names=["image"],
                                  output_names=[out_name], dynamic_axes={"image": {0: "batch"}, out_name: {0: "batch"}})
    onnx.checker.check_model(str(target))
    try:
        import onnxruntime as ort
    except ImportError:
        log.warning("onnxruntime is not installed: %s was checked structurally, not numerically", target)
        return None
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    return _check("ONNX", lambda x: session.run(None, {"image": x.numpy()})[0], model.module, model.input_size, target)


class _quiet_onnx_logs:
    """The exporter narrates its steps at INFO/WARNING through `torch.onnx` loggers (including that
    torchvision is absent, which is expected here); keep them at ERROR during an export."""

    names = ("torch.onnx", "torch.onnx._internal.exporter._registration", "onnxscript")

    def __enter__(self):
        self.levels = [(n, logging.getLogger(n).level) for n in self.names]
        for n in self.names:
            logging.getLogger(n).setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for n, level in self.levels:
            logging.getLogger(n).setLevel(level)


def parse_formats(formats) -> list[str]:
    """["torchscript", "onnx"] from "torchscript,onnx", "all" or a list; ConfigError for anything else."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = []
    for f in (s.strip().lower() for s in items):
        if not f:
            continue
        chosen = list(FORMATS) if f == "all" else [f]
        for c in chosen:
            if c not in FORMATS:
                raise ConfigError(f"export format {f!r} is not known; choose from {list(FORMATS)} or all")
            if c not in out:
                out.append(c)
    if not out:
        raise ConfigError(f"no export format given; choose from {list(FORMATS)}")
    return out


def export(path: str | Path, *, formats=("torchscript", "onnx"), out_dir: str | Path, init: str | None = None,
           init_seed: int | None = None, arch: str | None = None, in_channels: int | None = None,
           input_size: int | None = None, config: str | Path | None = None) -> dict:
    """Export the model at `path` into out_dir in each format, then write the model card.

    Returns {"files": {format: path}, "parity": {format: max abs diff or None}, "card": (md, json)}.
    config: a config file to hash into the card (default: config.yaml found beside the model).
    """
    from medssl.models.model_card import write_model_card

    formats = parse_formats(formats)
    model = load_model(path, init=init, init_seed=init_seed, arch=arch, in_channels=in_channels,
                       input_size=input_size)
    out_dir = Path(out_dir)
    files, parity = {}, {}
    for fmt in formats:
        target = out_dir / FILE_NAMES[fmt]
        parity[fmt] = export_torchscript(model, target) if fmt == "torchscript" else export_onnx(model, target)
        files[fmt] = target
        log.info("exported %s -> %s (max abs diff to PyTorch %s)", Path(path).name, target,
                 "not measured" if parity[fmt] is None else f"{parity[fmt]:.2e}")
    card = write_model_card(model, out_dir, files=files, parity=parity, config=config)
    return {"files": files, "parity": parity, "card": card, "model": model}
