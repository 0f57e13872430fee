"""Every error medssl raises on purpose derives from MedsslError.

Messages name the file or key at fault and, where one exists, the fix. The CLI prints them
without a traceback and exits non-zero.
"""

from __future__ import annotations


class MedsslError(Exception):
    """Base class of all medssl errors."""


class ReaderError(MedsslError):
    """A file could not be read into pixels (corrupt, truncated, unsupported, no pixel data)."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageTooLargeError(ReaderError):
    """The declared image size exceeds the configured limit; refused before allocating."""


class ManifestError(MedsslError):
    """A manifest is malformed: missing columns, duplicate paths, bad labels, missing files."""


class LeakageError(ManifestError):
    """A patient appears in more than one split."""


class SplitError(MedsslError):
    """A split or labeled-subset request cannot be satisfied."""


class CacheError(MedsslError):
    """A decoded cache is missing, stale (manifest/settings changed) or corrupt."""


class ConfigError(MedsslError):
    """A config file or override is invalid: unknown key, wrong type, value outside the allowed set."""


class UnsafeAugmentationError(ConfigError):
    """An augmentation is not allowed for the modality (it can destroy diagnostic signal)."""


class CheckpointError(MedsslError):
    """A checkpoint is missing, corrupt, of another architecture, or refused as unsafe."""


class OutputError(MedsslError):
    """An output path cannot be written (unwritable directory, disk full)."""
