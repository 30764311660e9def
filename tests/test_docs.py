"""The user documentation stays in step with the code it describes."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from scripts.generate_option_docs import (
    REFERENCE_PATH,
    SUPPLEMENTARY_DESCRIPTIONS,
    build_reference,
    fields_without_description,
    github_anchor,
)
from traiNNer.automations.config import AutomationsOptions
from traiNNer.automations.registry import registered_automations
from traiNNer.config.loader import decode_options, validate
from traiNNer.utils.registry import ARCH_REGISTRY

DOCS = Path(__file__).resolve().parents[1] / "docs"
AUTOMATIONS_DOC = DOCS / "automations.md"
ARCHITECTURES_DOC = DOCS / "architectures.md"
OWNED_DOCS = (
    AUTOMATIONS_DOC,
    ARCHITECTURES_DOC,
    DOCS / "configuration.md",
    DOCS / "option_reference.md",
)

# A complete training option file; each YAML example in the docs is merged over it.
BASE_OPTIONS: dict[str, Any] = {
    "name": "docs_example",
    "scale": 2,
    "datasets": {
        "train": {"type": "bicubicimagedataset", "dataroot_gt": "hr", "lq_size": 16},
        "val": {"type": "pairedimagedataset", "dataroot_gt": "hr", "dataroot_lq": "lr"},
    },
    "network_g": {"type": "paragonsr2_nano"},
    "train": {"total_iter": 100},
    "val": {
        "val_freq": 10,
        "metrics": {
            "psnr": {"type": "calculate_psnr"},
            "ssim": {"type": "calculate_ssim"},
        },
    },
}


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def heading_anchors(path: Path) -> set[str]:
    """Fragments GitHub gives the headings of `path` (repeats get -1, -2, ...)."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    for line in without_code_blocks(path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6} (.+)$", line)
        if not match:
            continue
        anchor = github_anchor(match.group(1).strip())
        seen = counts.get(anchor, 0)
        counts[anchor] = seen + 1
        anchors.add(anchor if seen == 0 else f"{anchor}-{seen}")
    return anchors


def sections(path: Path) -> dict[str, str]:
    """`## <title>` -> the text up to the next `## ` heading."""
    text = path.read_text(encoding="utf-8")
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def yaml_examples(markdown: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", markdown, flags=re.S | re.M)


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`: mappings merge key by key, anything else replaces."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# ------------------------------------------------------------------ option reference
def test_committed_option_reference_is_current() -> None:
    assert REFERENCE_PATH.read_text(encoding="utf-8") == build_reference(), (
        "docs/option_reference.md is stale: run python scripts/generate_option_docs.py"
    )


def test_every_option_key_has_a_description() -> None:
    undocumented = fields_without_description() - set(SUPPLEMENTARY_DESCRIPTIONS)
    assert not undocumented, (
        f"option keys without a description: {sorted(undocumented)}; add "
        "Meta(description=...) to the struct field"
    )


def test_supplementary_descriptions_are_not_stale() -> None:
    stale = set(SUPPLEMENTARY_DESCRIPTIONS) - fields_without_description()
    assert not stale, (
        f"{sorted(stale)} now have a Meta description or no longer exist; remove them from "
        "SUPPLEMENTARY_DESCRIPTIONS in scripts/generate_option_docs.py"
    )


def test_option_reference_lists_every_automation_and_registered_arch() -> None:
    reference = REFERENCE_PATH.read_text(encoding="utf-8")
    for field in msgspec.structs.fields(AutomationsOptions):
        assert f"### `train.automations.{field.name}`" in reference
    for name in ARCH_REGISTRY.names():
        assert f"#### arch `{name}`" in reference


# ------------------------------------------------------------------- automations.md
@pytest.mark.parametrize("name", [f.name for f in msgspec.structs.fields(AutomationsOptions)])
def test_every_automation_has_a_section_with_an_example(name: str) -> None:
    body = sections(AUTOMATIONS_DOC).get(name)
    assert body is not None, f"docs/automations.md has no '## {name}' section"
    examples = [yaml.safe_load(block) for block in yaml_examples(body)]
    assert any(
        (example.get("train", {}).get("automations", {}).get(name) or {}).get("enabled")
        for example in examples
    ), f"the {name} section has no YAML example that enables it"


def test_automation_sections_cover_the_registered_automations() -> None:
    # The project's own (tests register a plugin of their own, documented elsewhere).
    builtin = {
        name
        for name, cls in registered_automations().items()
        if cls.__module__.startswith("traiNNer.")
    }
    assert builtin == {f.name for f in msgspec.structs.fields(AutomationsOptions)}
    assert "dynamic_loss_scheduling" in sections(AUTOMATIONS_DOC)


@pytest.mark.parametrize("doc", ["automations.md", "configuration.md"])
def test_yaml_examples_are_valid_options(doc: str) -> None:
    examples = yaml_examples((DOCS / doc).read_text(encoding="utf-8"))
    assert examples
    for block in examples:
        options = merged(BASE_OPTIONS, yaml.safe_load(block))
        validate(decode_options(options), for_training=True)  # raises ConfigError if not


# ------------------------------------------------------------------ architectures.md
def test_paragon_parameter_counts_match_the_built_models() -> None:
    rows = re.findall(
        r"^\| `(paragonsr2\w*)` \|.*\| ([\d,]+) \|$",
        ARCHITECTURES_DOC.read_text(encoding="utf-8"),
        flags=re.M,
    )
    documented = {name: int(count.replace(",", "")) for name, count in rows}
    registered = {name for name in ARCH_REGISTRY.names() if name.startswith("paragonsr2")}
    assert set(documented) == registered
    for name, count in documented.items():
        model = ARCH_REGISTRY.get(name)(scale=2)
        assert sum(p.numel() for p in model.parameters()) == count, name


def test_every_spandrel_arch_is_in_the_table() -> None:
    table = sections(ARCHITECTURES_DOC)["spandrel-backed architectures"]
    listed = set(re.findall(r"^\| `(\w+)` \|", table, flags=re.M))
    spandrel_names = {n for n in ARCH_REGISTRY.names() if not n.startswith("paragonsr2")}
    assert listed == spandrel_names


# ------------------------------------------------------------------------ all docs
@pytest.mark.parametrize("doc", OWNED_DOCS, ids=lambda path: path.name)
def test_no_text_is_swallowed_as_an_html_tag(doc: Path) -> None:
    """`<name>` outside a code span renders as nothing on GitHub."""
    for line in without_code_blocks(doc.read_text(encoding="utf-8")).splitlines():
        outside_code = line.split("`")[::2]
        assert not any(re.search(r"<[A-Za-z/]", piece) for piece in outside_code), line


@pytest.mark.parametrize("doc", OWNED_DOCS, ids=lambda path: path.name)
def test_links_resolve(doc: Path) -> None:
    text = without_code_blocks(doc.read_text(encoding="utf-8"))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"https?://", target):
            continue
        file_part, _, fragment = target.partition("#")
        linked = doc if not file_part else (doc.parent / file_part)
        assert linked.exists(), f"{doc.name}: link to missing file {target}"
        if fragment:
            assert fragment in heading_anchors(linked), f"{doc.name}: no heading for {target}"
