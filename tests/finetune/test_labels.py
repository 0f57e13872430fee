import numpy as np
import pytest

from medssl.errors import ConfigError, ManifestError
from medssl.finetune.labels import pos_weight, targets_and_mask

NAN = np.nan
# one image per row; columns: positive, negative, uncertain, blank
LABELS = np.array([[1.0, 0.0, -1.0, NAN],
                   [-1.0, NAN, 1.0, 0.0]])


@pytest.mark.parametrize("uncertainty, blank, targets, mask", [
    ("ignore", "negative", [[1, 0, 0, 0], [0, 0, 1, 0]], [[1, 1, 0, 1], [0, 1, 1, 1]]),
    ("zeros", "negative", [[1, 0, 0, 0], [0, 0, 1, 0]], [[1, 1, 1, 1], [1, 1, 1, 1]]),
    ("ones", "negative", [[1, 0, 1, 0], [1, 0, 1, 0]], [[1, 1, 1, 1], [1, 1, 1, 1]]),
    ("ignore", "ignore", [[1, 0, 0, 0], [0, 0, 1, 0]], [[1, 1, 0, 0], [0, 0, 1, 1]]),
    ("ones", "ignore", [[1, 0, 1, 0], [1, 0, 1, 0]], [[1, 1, 1, 0], [1, 0, 1, 1]]),
])
def test_uncertainty_and_blank_policies(uncertainty, blank, targets, mask):
    t, m = targets_and_mask(LABELS, uncertainty, blank)
    assert t.dtype == np.float32 and m.dtype == np.float32
    np.testing.assert_array_equal(t, np.array(targets, np.float32))
    np.testing.assert_array_equal(m, np.array(mask, np.float32))


def test_bad_values_and_policies_are_refused():
    with pytest.raises(ManifestError, match="1, 0, -1"):
        targets_and_mask(np.array([[2.0]]))
    with pytest.raises(ConfigError, match="finetune.uncertainty"):
        targets_and_mask(LABELS, uncertainty="maybe")
    with pytest.raises(ConfigError, match="finetune.blank"):
        targets_and_mask(LABELS, blank="positive")


def test_pos_weight_counts_only_masked_in_entries():
    t, m = targets_and_mask(np.array([[1, 0, 1], [0, 0, 1], [0, -1, 1], [0, 0, 1], [-1, 1, 1]], float))
    # class 0: 1 positive, 3 negatives (the -1 is masked) -> 3; class 1: 1 pos / 3 neg -> 3;
    # class 2: no negatives -> nothing to rebalance -> 1
    np.testing.assert_allclose(pos_weight(t, m), [3.0, 3.0, 1.0])
    np.testing.assert_allclose(pos_weight(np.ones((1, 1)) * 0, np.ones((1, 1))), [1.0])
