"""The user documentation cannot silently rot: every ``regionclip`` command line in the fenced ``bash`` blocks of
``docs/getting-started.md`` (and of the other user docs) names an existing sub-command, parses with that
command's own parser (flags, choices, required options, types), and its ``key=value`` overrides are valid keys
of the command's config (loaded over the ``--config`` file it names); the Python snippets import names that
exist; ``docs/cli.md`` lists every option of every command; the code names of the docs exist.

Also the two fixes made while running the docs: ``regionclip detect`` with a clip checkpoint and no ``--rpn``
fails at once with one line, and an RPN trunk loads a torchvision state dict that has ``num_batches_tracked``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import shlex
import textwrap
from pathlib import Path

import pytest
import torch

from regionclip.cli import COMMANDS, main
from regionclip.config import load_config
from regionclip.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
COMMAND_DOCS = ("getting-started.md", "cli.md", "configs.md", "checkpoints.md", "index-search.md")
SHELL_OPERATORS = {"&&", "||", ";", "|", ">", ">>", "2>&1", "&"}
CONFIG_CLASSES = {
    "train-clip": ("regionclip.commands.train_clip", "TrainCLIPConfig"),
    "train-rpn": ("regionclip.commands.train_rpn", "TrainRPNConfig"),
    "pretrain": ("regionclip.pretrain.config", "PretrainConfig"),
    "train-detector": ("regionclip.commands.train_detector", "TrainDetectorConfig"),
    "eval": ("regionclip.commands.evaluate", "EvalConfig"),
}


def fenced_blocks(text: str, language: str) -> list[str]:
    """The fenced ``language`` blocks of a markdown text, indented ones (in list items) included."""
    blocks = re.findall(rf"^([ \t]*)```{language}\n(.*?)^\1```", text, flags=re.S | re.M)
    return [textwrap.dedent(body) for _, body in blocks]


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a bash block as token lists (continuations joined, comments and operators split)."""
    joined = re.sub(r"\\\n", " ", block)
    commands = []
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        current: list[str] = []
        for token in tokens:
            if token in SHELL_OPERATORS:
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def invocations(doc: str) -> list[tuple[str, list[str], str]]:
    """``(sub-command, its arguments, the source line)`` of every ``regionclip`` call in the doc's bash blocks."""
    found = []
    for block in fenced_blocks((DOCS / doc).read_text(encoding="utf-8"), "bash"):
        for tokens in shell_commands(block):
            for i, token in enumerate(tokens):
                if token == "regionclip" and i + 1 < len(tokens):
                    found.append((tokens[i + 1], tokens[i + 2 :], " ".join(tokens)))
                    break
    return found


class RaisingParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing the usage and exiting."""

    def error(self, message: str):
        raise ValueError(message)


def parser_of(name: str) -> argparse.ArgumentParser:
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(f"regionclip.commands.{module_name}")
    parser = RaisingParser(prog=f"regionclip {name}", description=help_)
    module.add_arguments(parser)
    return parser


def parse(name: str, args: list[str], line: str) -> argparse.Namespace:
    try:
        return parser_of(name).parse_intermixed_args(args)
    except (ValueError, argparse.ArgumentError) as err:
        pytest.fail(f"documented command does not parse ({err}): {line}")


def all_invocations() -> list[tuple[str, str, list[str], str]]:
    return [(doc, *inv) for doc in COMMAND_DOCS for inv in invocations(doc)]


def test_getting_started_documents_every_stage():
    names = {name for name, _, _ in invocations("getting-started.md")}
    # the extractor must find the commands (a broken regex would make every other test pass vacuously)
    assert {"detect", "convert", "train-rpn", "pretrain", "train-detector", "eval", "export"} <= names
    assert len(invocations("getting-started.md")) >= 30


def test_every_documented_subcommand_exists():
    for doc, name, _, line in all_invocations():
        assert name in COMMANDS or name in ("--help", "-h", "--version"), f"{doc}: unknown command in: {line}"


def test_every_documented_command_line_parses():
    checked = 0
    for _, name, args, line in all_invocations():
        if name not in COMMANDS or "--help" in args or "-h" in args:
            continue
        parse(name, args, line)
        checked += 1
    assert checked >= 40


def test_documented_overrides_are_valid_config_keys():
    checked = 0
    for doc, name, args, line in all_invocations():
        if name not in CONFIG_CLASSES:
            continue
        ns = parse(name, args, line)
        module, cls_name = CONFIG_CLASSES[name]
        cls = getattr(importlib.import_module(module), cls_name)
        config = None
        if ns.config is not None:
            config = ROOT / ns.config
            assert config.is_file(), f"{doc}: --config {ns.config} is not a shipped config: {line}"
        try:
            load_config(cls, config, list(ns.overrides))
        except ConfigError as err:
            pytest.fail(f"{doc}: {err}: {line}")
        checked += 1
    assert checked >= 10


def test_python_snippets_compile_and_import_existing_names():
    snippets = [
        s for doc in COMMAND_DOCS for s in fenced_blocks((DOCS / doc).read_text(encoding="utf-8"), "python")
    ]
    assert len(snippets) >= 2
    for source in snippets:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("regionclip"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_dotted_code_names_in_the_docs_exist():
    names = set()
    for doc in (*COMMAND_DOCS, "world.md"):
        for code in re.findall(r"`([^`\n]+)`", (DOCS / doc).read_text(encoding="utf-8")):
            names |= set(re.findall(r"(?<![\w/.-])regionclip(?:\.\w+)+", code))
    assert "regionclip.pretrain.pseudo_labels.pseudo_label" in names
    for name in sorted(names):
        try:
            _resolve(name)
        except (ModuleNotFoundError, AttributeError) as err:
            pytest.fail(f"docs name {name}, which does not exist ({err})")


def test_paper_symbol_table_names_exist_in_the_source():
    text = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    table = text.split("## Paper symbols and code names", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert len(rows) >= 10
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "regionclip").rglob("*.py"))
    words = set(re.findall(r"\w+", source))
    for row in rows:
        code = row.rstrip("|").rsplit("|", 1)[1]
        for name in re.findall(r"`([A-Za-z_][\w.]*)`", code):
            last = name.rsplit(".", 1)[-1]
            assert last in words, f"paper-symbol table names `{name}`, not found in src/regionclip"


def test_cli_reference_lists_every_option_of_every_command():
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## regionclip (\S+)\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M))
    assert set(sections) == set(COMMANDS)
    for name in COMMANDS:
        for action in parser_of(name)._actions:
            for option in action.option_strings or [action.dest]:
                assert option in sections[name], f"docs/cli.md: `regionclip {name}` does not list {option}"


def test_configs_reference_lists_every_shipped_config():
    text = (DOCS / "configs.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert f"configs/{path.name}" in text, f"docs/configs.md does not describe configs/{path.name}"


# ------------------------------------------------------------------- fixes made while running the docs


def test_detect_with_a_clip_checkpoint_and_no_rpn_is_one_line_error(tmp_path, capsys):
    from PIL import Image

    import regionclip
    from regionclip.clip.checkpoint import save_clip

    torch.manual_seed(0)
    save_clip(regionclip.create_model("RN-micro"), tmp_path / "clip.safetensors")
    Image.new("RGB", (40, 30), (120, 50, 20)).save(tmp_path / "a.jpg")
    code = main(
        ["detect", str(tmp_path / "a.jpg"), "--checkpoint", str(tmp_path / "clip.safetensors"),
         "--vocab", "cat,dog", "--out", str(tmp_path / "out")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "--rpn" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "detections.json").exists()


def test_rpn_trunk_loads_a_torchvision_state_dict_with_num_batches_tracked(tmp_path):
    import torchvision

    from regionclip.proposals.config import RPNConfig
    from regionclip.proposals.rpn import build_trunk

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18()
    state = resnet.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in state)
    torch.save(state, tmp_path / "resnet18.pth")
    trunk = build_trunk(RPNConfig(trunk="torchvision:resnet18", trunk_weights=str(tmp_path / "resnet18.pth")))
    loaded = trunk.state_dict()  # body = conv1, bn1, relu, maxpool, layer1, layer2, layer3
    assert torch.equal(loaded["body.0.weight"], state["conv1.weight"])
    assert torch.equal(loaded["body.6.1.conv2.weight"], state["layer3.1.conv2.weight"])
    assert torch.equal(loaded["body.1.running_var"], state["bn1.running_var"])
