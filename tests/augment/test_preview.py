import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image as PILImage

from medssl.cli import main


@pytest.fixture()
def tiny_manifest(tmp_path):
    """Four 8-bit PNGs (a bright disc on a ramp, differing sizes) and a manifest beside them."""
    rows = []
    for i, (h, w) in enumerate([(40, 40), (48, 32), (32, 56), (40, 44)]):
        yy, xx = np.mgrid[0:h, 0:w]
        img = 40 + 100 * xx / w + 110 * (((yy - h / 3) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 5) ** 2)
        PILImage.fromarray(img.astype(np.uint8), mode="L").save(tmp_path / f"img{i}.png")
        rows.append({"path": f"img{i}.png", "patient_id": f"SECRET-PATIENT-{i}", "study_id": f"st{i}",
                     "view": "PA", "modality": "CR", "Edema": 1.0})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    cfg = {"data": {"modality": "xray"}, "model": {"input_size": 32}, "cache": {"size": 48},
           "augment": {"policy": "xray-default"}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def test_preview_writes_a_nontrivial_grid(tiny_manifest, capsys):
    out = tiny_manifest / "grid.png"
    code = main(["augment", "preview", "--config", str(tiny_manifest / "cfg.yaml"),
                 "--manifest", str(tiny_manifest / "manifest.csv"), "--n", "3", "--views", "2", "--out", str(out)])
    assert code == 0 and out.is_file()
    assert "wrote" in capsys.readouterr().out
    pixels = np.asarray(PILImage.open(out).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 150 and pixels.shape[1] > 150
    assert pixels.std() > 20          # images, not a blank canvas
    assert not list(tiny_manifest.glob(".grid.png.*"))     # no temp file left behind


def test_preview_titles_use_row_numbers_not_patient_ids(tiny_manifest):
    from medssl.augment import policy
    from medssl.augment.preview import load_rows, pick_rows, preview_figure
    from medssl.manifest.table import load

    df = load(tiny_manifest / "manifest.csv", validate=False, columns=("frame",))
    rows = pick_rows(len(df), 4, seed=0)
    images = load_rows(df, rows, size=48)
    assert all(img.shape == (48, 48) and img.dtype == np.uint8 for img, _ in images)
    assert images[1][1] == (0, 8, 48, 32)          # 48x32 image: content box (top, left, h, w)
    fig = preview_figure(images, rows, policy("xray-default", out_size=32), views=3)
    titles = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text()]
    assert [t for t in titles if t.startswith("row ")] == [f"row {r}" for r in rows]
    assert not any("SECRET" in t or "st" + str(r) in t for t in titles for r in range(4))
    # augmented panels differ from one another (the policy is random) and stay in [0, 1]
    shown = [ax.get_images()[0].get_array() for ax in fig.axes[1:4]]
    assert not np.allclose(shown[0], shown[1]) and all(0 <= s.min() and s.max() <= 1 for s in shown)


def test_preview_refuses_an_unsafe_config_and_show_explains(tiny_manifest, capsys):
    args = ["--config", str(tiny_manifest / "cfg.yaml"), "--set", "augment.params.blur.p=0.5"]
    code = main(["augment", "preview", *args, "--manifest", str(tiny_manifest / "manifest.csv"),
                 "--out", str(tiny_manifest / "x.png")])
    assert code == 2 and "texture" in capsys.readouterr().err
    assert not (tiny_manifest / "x.png").exists()
    assert main(["augment", "show", *args]) == 2
    text = capsys.readouterr().out
    assert "REFUSED" in text and "allowed for xray" in text and "rotate" in text
    assert main(["augment", "show", "--policy", "ct-default", "--modality", "ct"]) == 0
    assert "window_jitter" in capsys.readouterr().out
