import subprocess
import sys

import pytest

from medssl.cli import build_parser, main
from medssl.commands.common import load_from_args


def test_help_lists_commands(capsys):
    parser = build_parser()
    text = parser.format_help()
    assert "medssl" in text and "COMMAND" in text


def test_version_runs():
    out = subprocess.run([sys.executable, "-m", "medssl.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "medssl" in out.stdout


# ----------------------------------------------------------------------------- --set
#: Sub-commands with --set: (their required arguments, the name of their positional or None).
CONFIG_COMMANDS = {
    "pretrain": ([], None),
    "cache": ([], "manifest"),
    "split": (["--out", "o.csv"], "manifest"),
    "evaluate": (["--out", "o"], "predictions"),
    "finetune": (["--out", "o"], None),
    "study": ([], None),
    "augment": (["preview", "--out", "o.png"], None),
}


@pytest.mark.parametrize("command", sorted(CONFIG_COMMANDS))
def test_set_takes_several_pairs_per_flag_and_repeats(command):
    required, positional = CONFIG_COMMANDS[command]
    parser = build_parser()
    before = ["in.csv"] if positional else []
    args = parser.parse_args([command, *required, *before, "--set", "trainer.max_epochs=3", "trainer.batch_size=16",
                              "--set", "trainer.max_epochs=5", "study.inits={random: random, a: b=c.pt}"])
    assert args.overrides == ["trainer.max_epochs=3", "trainer.batch_size=16", "trainer.max_epochs=5",
                              "study.inits={random: random, a: b=c.pt}"]
    cfg = load_from_args(args)  # later ones win
    assert (cfg.trainer.max_epochs, cfg.trainer.batch_size) == (5, 16)
    assert cfg.study.inits == {"random": "random", "a": "b=c.pt"}
    if positional:
        assert getattr(args, positional) == "in.csv"
        # after --set, `--` ends the list so the positional is not read as an override
        args = parser.parse_args([command, *required, "--set", "trainer.max_epochs=3", "--", "in.csv"])
        assert getattr(args, positional) == "in.csv" and args.overrides == ["trainer.max_epochs=3"]


@pytest.mark.parametrize("argv", [["split", "--out", "o.csv", "--set", "trainer.max_epochs=3", "in.csv"],
                                  ["cache", "--set", "trainer.max_epochs=3", "in.csv"]])
def test_a_positional_swallowed_by_set_is_a_usage_error_that_says_where_to_put_it(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "'in.csv' is not KEY=VALUE" in err and "before --set" in err and "--" in err


def test_pretrain_resume_takes_auto_a_path_or_nothing():
    parser = build_parser()
    assert parser.parse_args(["pretrain"]).resume is None
    assert parser.parse_args(["pretrain", "--resume", "--set", "trainer.max_epochs=2"]).resume is True
    assert parser.parse_args(["pretrain", "--resume", "auto"]).resume == "auto"
    assert parser.parse_args(["pretrain", "--resume", "runs/x/last.ckpt"]).resume == "runs/x/last.ckpt"
