"""Saliency maps: Grad-CAM on a fine-tuned CNN classifier, occlusion sensitivity for any model.

Grad-CAM (Selvaraju et al. 2017): a forward hook on the last conv block keeps its activations A
(B, K, h, w) and a hook on that tensor its gradient dS/dA for the explained logit S; the map is
ReLU(sum_k mean_hw(dS/dA_k) * A_k), upsampled to the image and scaled to [0, 1] per image. The
block is `layer4` of a MONAI ResNet and `features` (dense block 4 + norm5) of a DenseNet; when the
input is so small that it is below `MIN_CAM_SIZE` pixels there (1x1 at 32 px), the last block that
is still that large is used instead, and the figure says which. A ViT has no conv block: it gets
occlusion only.

Occlusion sensitivity (Zeiler & Fergus 2014) is model-agnostic: slide a patch filled with the
image's mean intensity over the image and record how much the explained logit drops; a pixel's
value is the mean drop over the patches covering it. Positive = evidence for the class.
Without a fine-tuned classifier, the model explained is the frozen encoder plus a logistic probe
fitted on the training features (`medssl.finetune.probe.fit_linear_probe`, C chosen on val).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medssl.analyze.common import pyplot, save_png, show_image, suptitle
from medssl.errors import CheckpointError

#: Smallest side (in feature-map pixels) of the block Grad-CAM reads.
MIN_CAM_SIZE = 3


class ProbeClassifier(nn.Module):
    """A frozen encoder + a fitted linear probe head (`StandardizedLinear`): images -> logits."""

    def __init__(self, encoder: nn.Module, head: nn.Module, input_size: int | None = None):
        super().__init__()
        self.encoder, self.head, self.input_size = encoder, head, input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from medssl.finetune.data import resize_batch

        return self.head(self.encoder(resize_batch(x, self.input_size)))


def load_classifier(path: str | Path):
    """(Classifier in eval mode, its labels) from a full fine-tuning cell's best.pt (weights-only load)."""
    from medssl.finetune.module import Classifier
    from medssl.models.backbones import build_encoder
    from medssl.models.weights import safe_load

    ckpt = safe_load(path)
    if ckpt.get("mode") != "full" or "encoder" not in ckpt or "head" not in ckpt:
        raise CheckpointError(f"{path}: not a full fine-tuning checkpoint (mode {ckpt.get('mode')!r}); --classifier "
                              "takes the best.pt of a `medssl finetune --mode full` cell (probe cells keep no encoder)")
    labels = [str(x) for x in ckpt.get("labels", [])]
    try:
        encoder = build_encoder(str(ckpt["arch"]), int(ckpt.get("in_channels", 1)), int(ckpt.get("input_size", 224)),
                                patch_size=ckpt.get("patch_size"), vit_depth=ckpt.get("vit_depth"))
        encoder.net.load_state_dict(ckpt["encoder"])
        model = Classifier(encoder, len(labels) or ckpt["head"]["weight"].shape[0], int(ckpt.get("input_size", 224)))
        model.head.load_state_dict(ckpt["head"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the classifier does not fit its own architecture record ({e})") from e
    return model.eval(), labels or [f"class{j}" for j in range(model.head.out_features)]


def cam_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Candidate Grad-CAM blocks of a model with `.encoder.net` (or a bare MONAI net), last first; [] for a ViT."""
    net = getattr(getattr(model, "encoder", model), "net", model)
    names = [n for n in ("layer4", "layer3", "layer2", "layer1") if hasattr(net, n)]
    if names:
        return [(n, getattr(net, n)) for n in names]
    features = getattr(net, "features", None)
    if isinstance(features, nn.Sequential):
        blocks = [("features", features)]
        blocks += [(f"features.{n}", m) for n, m in reversed(list(features.named_children()))
                   if n.startswith("transition")]
        return blocks
    return []


def _capture(model: nn.Module, layer: nn.Module, x: torch.Tensor):
    """(model output, activation of `layer`, list that receives the activation's gradient)."""
    store: dict = {}
    grads: list = []

    def hook(_module, _inputs, out):
        store["act"] = out
        out.register_hook(grads.append)
        return out.clone()   # later in-place ops (a DenseNet's ReLU) must not touch the hooked tensor

    handle = layer.register_forward_hook(hook)
    try:
        y = model(x)
    finally:
        handle.remove()
    return y, store.get("act"), grads


def choose_cam_block(model: nn.Module, image_shape: tuple[int, int], min_size: int = MIN_CAM_SIZE):
    """(name, block, spatial size) of the last block whose feature map is at least min_size pixels a side
    for images of `image_shape`; None for a model without conv blocks."""
    blocks = cam_blocks(model)
    if not blocks:
        return None
    x = torch.zeros((1, 1, *image_shape), device=next(model.parameters()).device)
    sizes = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: sizes.__setitem__(n, tuple(out.shape[-2:])))
               for n, m in blocks]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    for name, m in blocks:
        if min(sizes[name]) >= min_size:
            return name, m, sizes[name]
    name, m = blocks[-1]
    return name, m, sizes[name]


def gradcam(model: nn.Module, x: torch.Tensor, target: int | Sequence[int], layer: nn.Module) -> np.ndarray:
    """Grad-CAM maps (B, H, W) float64 in [0, 1] of logit `target` (one per image, or one for all)."""
    model.eval()
    targets = torch.as_tensor(np.broadcast_to(np.asarray(target), (len(x),)).copy(), dtype=torch.int64,
                              device=x.device)
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)   # gradients flow even through a frozen encoder
        y, act, grads = _capture(model, layer, xg)
        if act is None:
            raise ValueError("the Grad-CAM layer was not run by the model's forward pass")
        score = y.gather(1, targets[:, None]).sum()
        model.zero_grad(set_to_none=True)
        score.backward()
    if not grads:
        raise ValueError("no gradient reached the Grad-CAM layer")
    a, g = act.detach(), grads[0].detach()
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)[:, None, None]
    return (cam / peak).double().cpu().numpy()


@torch.no_grad()
def occlusion(model: nn.Module, x: torch.Tensor, target: int | Sequence[int], *, patch: int | None = None,
              stride: int | None = None, batch_size: int = 64) -> np.ndarray:
    """Occlusion sensitivity (B, H, W) float64: mean drop of logit `target` over the patches (side `patch`,
    default H/6, step `stride`, default patch/2) covering each pixel, patches filled with the image mean."""
    model.eval()
    b, _, h, w = x.shape
    patch = int(patch or max(2, round(min(h, w) / 6)))
    stride = int(stride or max(1, patch // 2))
    tops = sorted(set(list(range(0, max(h - patch, 0) + 1, stride)) + [max(h - patch, 0)]))
    lefts = sorted(set(list(range(0, max(w - patch, 0) + 1, stride)) + [max(w - patch, 0)]))
    boxes = [(t, l) for t in tops for l in lefts]
    targets = np.broadcast_to(np.asarray(target), (b,))
    out = np.zeros((b, h, w))
    for i in range(b):
        img = x[i:i + 1]
        base = float(model(img)[0, int(targets[i])])
        fill = img.mean()
        drop = np.zeros((h, w))
        count = np.zeros((h, w))
        for s in range(0, len(boxes), batch_size):
            chunk = boxes[s:s + batch_size]
            xs = img.repeat(len(chunk), 1, 1, 1)
            for n, (t, l) in enumerate(chunk):
                xs[n, :, t:t + patch, l:l + patch] = fill
            scores = model(xs)[:, int(targets[i])].double().cpu().numpy()
            for n, (t, l) in enumerate(chunk):
                drop[t:t + patch, l:l + patch] += base - scores[n]
                count[t:t + patch, l:l + patch] += 1
        out[i] = drop / np.maximum(count, 1)
    return out


def positive_unit(maps: np.ndarray) -> np.ndarray:
    """Signed maps -> their positive part scaled to [0, 1] per image (for display)."""
    m = np.clip(np.asarray(maps, np.float64), 0, None)
    peak = m.reshape(len(m), -1).max(axis=1)[:, None, None]
    return m / np.maximum(peak, 1e-12)


def plot_saliency(images: Sequence[np.ndarray], titles: Sequence[str], maps: dict[str, np.ndarray],
                  path: str | Path, *, title: str = "") -> Path:
    """One row per image: the image, then each map (name -> (B, H, W) in [0, 1]) overlaid as a heatmap."""
    plt = pyplot()
    cols = 1 + len(maps)
    fig, axes = plt.subplots(len(images), cols, figsize=(2.0 * cols, 2.1 * len(images) + 0.4), squeeze=False,
                             layout="constrained")
    for i, img in enumerate(images):
        show_image(axes[i][0], img, titles[i])
        for c, (name, m) in enumerate(maps.items(), 1):
            show_image(axes[i][c], img, name if i == 0 else None)
            axes[i][c].imshow(m[i], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
    if title:
        suptitle(fig, title)
    return save_png(fig, path)
