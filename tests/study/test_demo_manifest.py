"""`medssl demo --data` pseudonymises raw ids once and keeps ids a medssl manifest already pseudonymised."""

from types import SimpleNamespace

from medssl.commands.demo import _manifest, demo_budgets
from medssl.data import embedded_kermany_dir
from medssl.manifest import build, load, save


def _args(data):
    return SimpleNamespace(data=str(data), phantom=None, keep_ids=False)


def test_raw_ids_are_pseudonymised_and_pseudonyms_kept(tmp_path):
    raw = build("kermany", embedded_kermany_dir(), keep_ids=True)
    assert not raw["patient_id"].str.startswith("pid-").any()
    save(raw, tmp_path / "raw.csv")
    path, notes = _manifest(_args(tmp_path / "raw.csv"), tmp_path / "a")
    first = load(path)
    assert first["patient_id"].str.startswith("pid-").all()
    assert first["patient_id"].nunique() == raw["patient_id"].nunique()
    assert "1306 images" in notes
    # feeding the demo's own (pseudonymised) manifest back in leaves the ids as they are
    path2, _ = _manifest(_args(path), tmp_path / "b")
    assert load(path2)["patient_id"].tolist() == first["patient_id"].tolist()


def test_demo_budgets_fit_the_training_set():
    assert demo_budgets(782) == [100, 250, 500]
    assert demo_budgets(3500) == [500, 1000, 2500]
    small = demo_budgets(40)
    assert len(small) == 3 and max(small) <= 40 and small == sorted(set(small))
