"""Typed run configuration: YAML files in configs/, `--set key.path=value` overrides.

Every section is a dataclass; loading checks each key and value against it, so an unknown key
or an invalid value fails at load time with its dotted path and the allowed values, never
half-way through a training run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from medssl.errors import ConfigError


def _probe_defaults():
    from medssl.finetune import probe

    return probe


# ----------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    manifest: Optional[str] = None          # manifest CSV/Parquet (paths relative to it or data_root)
    data_root: Optional[str] = None         # where relative image paths resolve; default: manifest dir
    budgets: Optional[str] = None           # labeled-subset table (path, budget, seed); default beside manifest
    labels: Optional[list[str]] = None      # label columns to use; default: all discovered
    modality: Literal["xray", "ct", "mr"] = "xray"
    views: Optional[list[str]] = None       # keep only these views (e.g. [PA, AP]); None keeps all
    pretrain_splits: list[Literal["train", "val"]] = field(default_factory=lambda: ["train"])  # unlabelled images
    #   pretraining may use: [train, val] adds the val images (their labels are never read); test never
    val: float = 0.1                         # patient fractions for `medssl split`
    test: float = 0.1
    split_seed: int = 0


@dataclass
class CacheConfig:
    dir: Optional[str] = None               # default: <manifest dir>/cache-<size>
    size: int = 256                          # square side in pixels; aspect kept by padding
    dtype: Literal["uint8", "uint16"] = "uint8"
    window: str = "voi"                      # "voi", "none", or "center,width"
    shard_size: int = 4096                   # images per shard file
    workers: int = 0                         # 0 = all cores
    on_error: Literal["raise", "skip"] = "raise"


@dataclass
class AugmentConfig:
    policy: str = "auto"                     # pretraining policy (medssl.augment.POLICIES); auto: <modality>-pretrain
    params: dict = field(default_factory=dict)  # its per-transform overrides, e.g. {rotate: {degrees: 5}}
    finetune_policy: str = "auto"            # full fine-tuning policy; auto: <modality>-default (no intensity jitter)
    finetune_params: dict = field(default_factory=dict)  # its per-transform overrides
    force_unsafe: bool = False               # allow transforms refused for the modality (logged loudly)
    on_device: Literal["auto", "cpu", "gpu"] = "auto"  # batch augmentation on the accelerator


@dataclass
class ModelConfig:
    arch: Literal["resnet18", "resnet34", "resnet50", "densenet121", "vit_tiny", "vit_small", "vit_base"] = "resnet18"
    in_channels: Literal[1, 3] = 1
    input_size: int = 224
    patch_size: int = 16                     # ViT only: square patches; input_size must be divisible by it
    vit_depth: Optional[int] = None          # ViT only: transformer blocks (None: 12, the size's own)
    channels_last: bool = False


@dataclass
class SSLConfig:
    method: Literal["mocov2", "simclr", "byol", "triplet", "mae", "rotation", "jigsaw", "inpainting", "colorization", "colourisation",
                    "simsiam", "barlowtwins", "vicreg", "swav", "dino", "mocov3"] = "mocov2"  # colo(u)risation: refused (grayscale)
    pairs: Literal["instance", "micle"] = "instance"
    pair_scope: Literal["patient", "study"] = "patient"
    pair_views: Optional[list[str]] = None
    temperature: float = 0.2
    queue_size: Union[int, Literal["auto"]] = "auto"  # MoCo; auto: power of two <= half the images (medssl.ssl.recipe)
    momentum: float = 0.999                  # MoCo key encoder / BYOL target EMA
    proj_hidden: int = 2048
    proj_dim: int = 128
    proj_batchnorm: bool = False             # MoCo v2: BN after the projection's hidden layer (not in the reference)
    pred_hidden: int = 4096                  # BYOL / MoCo v3 predictor hidden; SimSiam bottleneck (paper 512)
    margin: float = 0.5                      # triplet
    triplet_distance: Literal["euclidean", "cosine"] = "euclidean"  # on L2-normalised embeddings
    mask_ratio: float = 0.75                 # mae: fraction of patches hidden from the encoder
    norm_pix_loss: bool = True               # mae: targets are pixels normalised per patch (mean 0, var 1)
    decoder_dim: int = 256                   # mae: decoder width (light: narrower than the encoder)
    decoder_depth: int = 4                   # mae: decoder transformer blocks
    decoder_heads: int = 8                   # mae: decoder attention heads (decoder_dim divisible by it)
    jigsaw_permutations: int = 100           # jigsaw: size of the fixed maximal-Hamming permutation set
    jigsaw_tile_frac: float = 0.85           # jigsaw: tile side / cell side (random gap: no edge continuity)
    inpaint_mask: Literal["random", "center"] = "random"  # inpainting: where the square hole goes
    inpaint_frac: float = 0.5                # inpainting: hole side / image side (0.5: a quarter of the area)
    # Barlow Twins / VICReg / SwAV / DINO / MoCo v3 (heads from proj_hidden, proj_dim; see medssl/ssl/<method>.py)
    barlow_lambda: float = 5e-3              # barlowtwins: off-diagonal weight (paper 5e-3 at proj_dim 8192)
    vicreg_sim_coeff: float = 25.0           # vicreg: invariance (MSE) weight
    vicreg_std_coeff: float = 25.0           # vicreg: variance hinge weight
    vicreg_cov_coeff: float = 1.0            # vicreg: covariance weight
    vicreg_gamma: float = 1.0                # vicreg: target std of each embedding dimension
    swav_prototypes: int = 3000              # swav: number of L2-normalised prototypes K
    swav_temperature: float = 0.1            # swav: softmax temperature of the swapped prediction
    swav_epsilon: float = 0.05               # swav: Sinkhorn entropy regularisation (smaller: harder codes)
    swav_sinkhorn_iters: int = 3             # swav: Sinkhorn-Knopp iterations (over the global batch)
    swav_queue_size: int = 0                 # swav: past embeddings per process joining the Sinkhorn (0: off)
    swav_freeze_prototypes_iters: int = 0    # swav: prototypes get no gradient for this many training steps
    multicrop_n: int = 0                     # swav, dino: extra low-resolution crops cut from the two views
    multicrop_size: int = 96                 # swav, dino: side of those crops in pixels
    multicrop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # their area fraction of a view;
    #   below 0.5 is refused (the augmentation policies' crop bound: a small crop can cut out the finding)
    dino_out_dim: int = 65536                # dino: head output dimension K (bottleneck: proj_dim)
    dino_teacher_temp: float = 0.04          # dino: teacher softmax temperature (sharpening)
    dino_student_temp: float = 0.1           # dino: student softmax temperature
    dino_center_momentum: float = 0.9        # dino: EMA momentum of the centre (global batch mean of teacher output)
    mask_same_patient: bool = True           # drop negatives from the anchor's own patient (MoCo queue, SimCLR batch)
    shuffle_bn: bool = True                  # MoCo: shuffle BN across ranks (or SyncBN)
    bn_splits: int = 4                       # MoCo, one process: key BN statistics over this many chunks
    monitor_every_n_epochs: int = 1          # kNN/linear AUC on a labeled val set when one exists
    monitor: Literal["knn", "logreg"] = "knn"  # val monitor: kNN or logistic regression, patient-grouped CV
    monitor_max_images: int = 2000           # val images the monitor encodes (random subset beyond this)
    momentum_schedule: Literal["auto", "constant", "cosine"] = "auto"  # auto: cosine ramp to 1 for byol, dino, mocov3
    collapse_threshold: float = 0.01         # warn when feat_std (std of L2-normalised features) falls below


@dataclass
class OptimConfig:
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.03
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    step_milestones: list[float] = field(default_factory=lambda: [0.6, 0.8])  # fractions of training
    step_gamma: float = 0.1
    min_lr_ratio: float = 0.0                # cosine decays to lr * this


@dataclass
class TrainerConfig:
    output_dir: str = "runs/pretrain"
    max_epochs: Union[int, Literal["auto"]] = "auto"  # auto: enough epochs for min_samples (medssl.ssl.recipe)
    min_samples: int = 20_000                # two-view samples an `auto` run sees at least
    time_budget_min: Optional[float] = None   # minutes: epochs from a measured step time (max_epochs: upper bound)
    max_steps: int = -1
    batch_size: int = 256                    # per device
    accumulate_grad_batches: int = 1
    precision: str = "32-true"               # "bf16-mixed" on GPUs that support it
    accelerator: str = "auto"
    devices: Union[int, str] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    num_workers: int = 4
    seed: int = 0
    deterministic: bool = False
    log_every_n_steps: int = 10
    compile: bool = False
    progress_bar: bool = True
    checkpoint_every_n_steps: int = 500      # last.ckpt also every N optimizer steps (0: epoch ends only)
    prefetch_factor: int = 4                 # batches each DataLoader worker keeps ready


@dataclass
class FinetuneConfig:
    init: str = "random"                     # "random", a medssl checkpoint, or a plain state dict
    mode: Literal["linear", "knn", "full"] = "linear"  # logistic probe / kNN on frozen features, or full fine-tuning
    uncertainty: Literal["ignore", "zeros", "ones"] = "ignore"   # CheXpert U-Ignore / U-Zeros / U-Ones
    blank: Literal["negative", "ignore"] = "negative"
    class_weights: bool = False
    budget: Optional[Union[int, float]] = None   # labeled images (int) or fraction (float); None = all
    budget_seed: int = 0
    epochs: int = 30                          # full fine-tuning epochs per trial (at least ...)
    min_steps: int = 0                         # ... enough epochs for this many optimizer steps per trial
    lr: float = 1e-3                          # full fine-tuning lr when lr_grid is empty
    # full: one trial per lr, best on val. Low, because the LP-FT start is the fitted probe with BN statistics
    # frozen: on the embedded data lr >= 3e-4 (AdamW) wrecks it in the first epoch for every init (val AUC
    # 0.88 -> 0.74-0.83 pretrained, 0.84 -> 0.53 random) and never recovers it
    lr_grid: list[float] = field(default_factory=lambda: [1e-5, 3e-5, 1e-4])
    encoder_lr_mult: float = 1.0              # full, pretrained inits: encoder lr = lr * this (random init: 1.0)
    head_init: Literal["probe", "random"] = "probe"  # full: start the head from the fitted logistic probe (LP-FT)
    probe_Cs: list[float] = field(default_factory=lambda: list(_probe_defaults().DEFAULT_CS))  # logistic probe C grid
    knn_ks: list[int] = field(default_factory=lambda: list(_probe_defaults().DEFAULT_KS))      # kNN probe k grid
    weight_decay: float = 1e-4
    batch_size: int = 64
    precompute_features: bool = True          # linear probe: cache encoder features on disk, reused across cells
    feature_dir: Optional[str] = None         # where cached features live; default <cell out dir>/features


@dataclass
class EvaluateConfig:
    tasks: Optional[list[str]] = None         # default: CheXpert five when present, else all labels
    bootstrap: int = 1000
    ci: float = 0.95
    seed: int = 0


@dataclass
class StudyConfig:
    output_dir: str = "runs/study"
    budgets: list[Union[int, float]] = field(default_factory=lambda: [250, 500, 1000, 2500, 5000, 10000])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # name -> "random" | a weights path | a list of paths (one per pretraining run) | a pretraining spec
    # {pretrain: {ssl.method: simclr, ...}, seeds: [0, 1]} that the study runs itself (medssl.study.runner)
    inits: dict = field(default_factory=lambda: {"random": "random"})
    pretrain_seeds: list[int] = field(default_factory=lambda: [0])  # pretraining runs per spec init
    modes: list[str] = field(default_factory=lambda: ["linear", "knn", "full"])
    val_labels: Union[Literal["budget", "all"], int] = "budget"  # labelled val images per cell: <= budget, all, or N
    analyze: bool = False   # after the grid: feature analysis per init into <output_dir>/analysis/<init>/ (medssl.analyze)


@dataclass
class Config:
    name: str = "medssl"
    seed: int = 0
    salt_env: str = "MEDSSL_SALT"             # env var holding the pseudonymisation salt
    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    study: StudyConfig = field(default_factory=StudyConfig)


# ----------------------------------------------------------------------------- conversion
def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp, path: str):
    """Check/convert one value against a type annotation; raise ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return allowed
        # YAML gives "1" for 1 only when quoted; accept exact string forms of numeric literals
        for allowed in args:
            if isinstance(value, str) and str(allowed) == value:
                return allowed
        raise ConfigError(f"{path}: {value!r} is not allowed; choose one of {list(args)}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except ConfigError as e:
                errors.append(str(e))
        allowed = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"{path}: {value!r} is not a valid {allowed}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return from_dict(tp, value, path)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = args or (Any,)
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    return value


def from_dict(cls, data: dict, path: str = ""):
    """Build dataclass `cls` from a mapping; unknown keys and bad values raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in hints:
            raise ConfigError(f"unknown config key '{where}'; allowed keys here: {sorted(names)}")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _parse_scalar(text: str):
    """`--set` values are YAML scalars/flow collections: 5, 0.1, true, null, [1, 2], {a: 1}."""
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings to a nested dict (new keys are checked later by from_dict)."""
    data = dict(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            child = dict(child) if isinstance(child, dict) else {}
            node[p] = child
            node = child
        node[parts[-1]] = _parse_scalar(text)
    return data


def _nested_copy(d):
    return {k: _nested_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when path is None) and apply `--set` overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (see configs/ for examples)")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    data = apply_overrides(_nested_copy(data), overrides or [])
    cfg = from_dict(Config, data)
    _check_values(cfg)
    return cfg


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A new Config: `cfg` with `key.path=value` overrides applied and checked like a loaded file."""
    out = from_dict(Config, apply_overrides(_nested_copy(to_dict(cfg)), overrides))
    _check_values(out)
    return out


def _check_values(cfg: Config) -> None:
    """Range checks that types alone cannot express."""
    _check_encoder_and_pretext(cfg)
    if not 0 <= cfg.data.val < 1 or not 0 <= cfg.data.test < 1 or cfg.data.val + cfg.data.test >= 1:
        raise ConfigError("data.val and data.test must be fractions in [0, 1) that sum to less than 1")
    if cfg.cache.size < 8:
        raise ConfigError(f"cache.size: {cfg.cache.size} is too small; use e.g. 256 or 512")
    if cfg.trainer.batch_size < 2:
        raise ConfigError("trainer.batch_size must be >= 2 (contrastive losses need negatives)")
    if cfg.ssl.temperature <= 0:
        raise ConfigError("ssl.temperature must be > 0")
    if not 0 <= cfg.ssl.momentum < 1:
        raise ConfigError("ssl.momentum must be in [0, 1)")
    from medssl.finetune import MODES

    for mode in cfg.study.modes:
        if mode not in MODES:
            raise ConfigError(f"study.modes: {mode!r} is not a mode; choose from {list(MODES)}")
    if any(lr <= 0 for lr in cfg.finetune.lr_grid) or any(c <= 0 for c in cfg.finetune.probe_Cs):
        raise ConfigError("finetune.lr_grid and finetune.probe_Cs must hold positive numbers")
    if any(k < 1 for k in cfg.finetune.knn_ks) or not cfg.finetune.knn_ks or not cfg.finetune.probe_Cs:
        raise ConfigError("finetune.knn_ks must hold counts >= 1; knn_ks and probe_Cs must not be empty")
    if isinstance(cfg.study.val_labels, int) and cfg.study.val_labels < 1:
        raise ConfigError("study.val_labels: a count must be >= 1 (or use 'budget' / 'all')")
    for b in cfg.study.budgets:
        if isinstance(b, float) and not 0 < b <= 1:
            raise ConfigError(f"study.budgets: fraction {b} must be in (0, 1]; use an int for a count")
        if isinstance(b, int) and b < 1:
            raise ConfigError(f"study.budgets: count {b} must be >= 1")


def _check_encoder_and_pretext(cfg: Config) -> None:
    """ViT patch grid, MAE's need for a ViT, pretext-task ranges, and the refused colourisation task."""
    m, s = cfg.model, cfg.ssl
    if s.method in ("colorization", "colourisation"):
        from medssl.ssl.colorization import refuse_colorization

        refuse_colorization(s.method, cfg.data.modality)
    vit = m.arch.startswith("vit_")
    if vit and (m.patch_size < 1 or m.input_size % m.patch_size):
        raise ConfigError(f"model.input_size {m.input_size} must be divisible by model.patch_size {m.patch_size} "
                          f"for {m.arch} (the patch grid must tile the image)")
    if m.vit_depth is not None and m.vit_depth < 1:
        raise ConfigError(f"model.vit_depth must be >= 1 (or null for the size's 12 blocks), got {m.vit_depth}")
    if s.method == "mae" and not vit:
        raise ConfigError(f"ssl.method mae needs a ViT encoder (model.arch: vit_tiny, vit_small or vit_base), got "
                          f"model.arch {m.arch}: MAE removes the masked patches from the encoder's input, which "
                          "only a patch-token encoder can do (a CNN always sees the whole pixel grid)")
    if not 0 < s.mask_ratio < 1:
        raise ConfigError(f"ssl.mask_ratio must be in (0, 1), got {s.mask_ratio}")
    if s.decoder_dim < 1 or s.decoder_depth < 1 or s.decoder_heads < 1 or s.decoder_dim % s.decoder_heads:
        raise ConfigError("ssl.decoder_dim, decoder_depth, decoder_heads must be >= 1 and decoder_dim divisible by "
                          f"decoder_heads, got {s.decoder_dim}, {s.decoder_depth}, {s.decoder_heads}")
    if not 2 <= s.jigsaw_permutations <= 1000:
        raise ConfigError(f"ssl.jigsaw_permutations must be in [2, 1000], got {s.jigsaw_permutations}")
    if not 0 < s.jigsaw_tile_frac <= 1:
        raise ConfigError(f"ssl.jigsaw_tile_frac must be in (0, 1], got {s.jigsaw_tile_frac}")
    if not 0 < s.inpaint_frac < 1:
        raise ConfigError(f"ssl.inpaint_frac must be in (0, 1), got {s.inpaint_frac}")
    _check_joint_embedding(s)


def _check_joint_embedding(s: SSLConfig) -> None:
    """Ranges of the SimSiam / Barlow Twins / VICReg / SwAV / DINO / MoCo v3 settings, and the multi-crop bound."""
    from medssl.ssl.multicrop import check_multicrop

    check_multicrop(s.multicrop_n, s.multicrop_size, s.multicrop_scale)
    if s.barlow_lambda < 0 or min(s.vicreg_sim_coeff, s.vicreg_std_coeff, s.vicreg_cov_coeff) < 0:
        raise ConfigError("ssl.barlow_lambda and ssl.vicreg_*_coeff must be >= 0")
    if s.vicreg_gamma <= 0:
        raise ConfigError(f"ssl.vicreg_gamma must be > 0, got {s.vicreg_gamma}")
    if s.swav_prototypes < 2 or s.swav_sinkhorn_iters < 1 or s.swav_queue_size < 0 or s.swav_freeze_prototypes_iters < 0:
        raise ConfigError("ssl.swav_prototypes must be >= 2, swav_sinkhorn_iters >= 1, swav_queue_size and "
                          "swav_freeze_prototypes_iters >= 0")
    if min(s.swav_temperature, s.swav_epsilon, s.dino_teacher_temp, s.dino_student_temp) <= 0:
        raise ConfigError("ssl.swav_temperature, swav_epsilon, dino_teacher_temp, dino_student_temp must be > 0")
    if s.dino_out_dim < 2 or not 0 <= s.dino_center_momentum <= 1:
        raise ConfigError(f"ssl.dino_out_dim must be >= 2 and ssl.dino_center_momentum in [0, 1], got "
                          f"{s.dino_out_dim}, {s.dino_center_momentum}")


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
