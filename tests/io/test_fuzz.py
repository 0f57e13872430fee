"""Reader fuzzing: mutated real DICOM/NIfTI/PNG files end in an Image or a MedsslError, never
another exception, a hang or a memory blow-up. Engine and case reproduction: tests/io/fuzzing.py.

MEDSSL_FUZZ_CASES sets the case count (default 2400, ~15 s on 2 cores; `make fuzz` runs 50000),
MEDSSL_FUZZ_SEED the seed, MEDSSL_FUZZ_REPORT a path for the JSON outcome table.
"""

from __future__ import annotations

import json
import os

from tests.io import fuzzing

DEFAULT_CASES = 2400


def test_readers_survive_fuzzing(record_property):
    cases = int(os.environ.get("MEDSSL_FUZZ_CASES", DEFAULT_CASES))
    seed = int(os.environ.get("MEDSSL_FUZZ_SEED", 0))
    report = fuzzing.campaign(cases, seed=seed)
    print("\nreader fuzz:", json.dumps(report, indent=1))
    record_property("fuzz_outcomes", json.dumps(report["outcomes"]))
    if os.environ.get("MEDSSL_FUZZ_REPORT"):
        from medssl.atomic import write_json

        write_json(os.environ["MEDSSL_FUZZ_REPORT"], report)
    assert not report["problems"], "\n".join(report["problems"][:10])
    assert report["completed"] == cases
    outcomes = report["outcomes"]
    # the mutations must still reach the decoders and the size limit, not only the parsers
    assert outcomes.get("image", 0) > 0.05 * cases
    assert outcomes.get("ImageTooLargeError", 0) > 0.005 * cases
    # what the cases add to a worker's peak memory: images are capped at 2**22 pixels, so a
    # decoder that allocates from a corrupt declared size shows up here
    assert report["max_worker_rss_growth_mb"] < 512


def test_harness_flags_foreign_exceptions_and_reproduces_cases(tmp_path, monkeypatch):
    first = fuzzing.run_case(3, 17, str(tmp_path))
    assert fuzzing.run_case(3, 17, str(tmp_path))[::2] == first[::2]  # same case, same outcome
    assert fuzzing.make_case(3, 17)[1] == fuzzing.make_case(3, 17)[1]

    import medssl.io

    def broken(path, **kwargs):
        raise ValueError("a reader leaked a ValueError")

    monkeypatch.setattr(medssl.io, "read_image", broken)
    outcome, _, detail = fuzzing.run_case(3, 17, str(tmp_path))
    assert outcome == "UNEXPECTED ValueError" and "case 17" in detail
