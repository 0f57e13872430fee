"""medssl: self-supervised pretraining and label-efficiency studies for medical images.

Data flows one way: files -> io -> manifest -> splits -> cache -> pairs + augment -> ssl
-> finetune -> evaluate -> study. Each stage is a subpackage; the CLI (`medssl ...`) is a thin
layer over their functions.
"""

__version__ = "0.1.0"
