"""The key reference of docs/config.md, generated from the run-file schema.

``python -m polytask.configdoc`` rewrites every ``<!-- keys: SECTION -->`` ...
``<!-- /keys -->`` block of docs/config.md from the pydantic models (`polytask.config.RunConfig`
and, for ``model`` and ``loss``, the registries `polytask.models.MODELS` and
`polytask.weighting.WEIGHTINGS`, so a new model or weighting appears when the file is
regenerated). The key, type and default columns come from the schema; the meaning column is
kept from the file (for a new key: the field's ``description``, or for a model parameter the
meaning in docs/models.md's table), so the prose is written once and survives regeneration; a
new model or weighting gets its block added. ``--check`` exits 1 when the file is out of date or a
key has no meaning, naming what differs; ``tests/test_configdoc.py`` runs it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"
BLOCK = re.compile(r"(<!-- keys: (?P<name>[^ ]+) -->\n)(?P<body>.*?)(<!-- /keys -->)", re.S)
HEADER = "| key | type | default | meaning |\n|---|---|---|---|\n"


def type_name(annotation: Any) -> str:
    """A short, readable type: ``int``, ``list[int]``, ``'a' | 'b'``, ``float or none``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(type_name(a) for a in rest)
        return f"{text} or none" if len(rest) < len(args) else text
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if args else origin.__name__
    if annotation is Any:
        return "any"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "mapping"
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def default_text(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "its keys' defaults"
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _model_class(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The pydantic model inside ``annotation`` and the path suffix that reaches it:
    ``X`` -> "", ``list[X]`` -> "[]", ``dict[str, X]`` -> ".<name>", ``X | None`` -> ""."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin = typing.get_origin(annotation)
    if origin not in (list, dict, typing.Union, types.UnionType):
        return None, ""
    for arg in typing.get_args(annotation):  # a dict's keys are never models
        model, suffix = _model_class(arg)
        if model is not None:
            return model, {list: "[]", dict: ".<name>"}.get(origin, "") + suffix
    return None, ""


def sections() -> Iterator[tuple[str, dict[str, FieldInfo]]]:
    """``(block name, {key: field})`` for every section of the run file, nested sections
    after their parent; ``model.<name>`` and ``loss.<weighting>`` from the registries."""
    from polytask.config import RunConfig
    from polytask.models import MODELS
    from polytask.models.base import TowerParams
    from polytask.weighting import WEIGHTINGS

    def walk(name: str, model: type[BaseModel]) -> Iterator[tuple[str, dict[str, FieldInfo]]]:
        yield name, dict(model.model_fields)
        for key, field in model.model_fields.items():
            inner, suffix = _model_class(field.annotation)
            if inner is not None and inner.model_config.get("extra") == "forbid":
                yield from walk(f"{name}.{key}{suffix}", inner)

    yield "sections", dict(RunConfig.model_fields)
    for key, field in RunConfig.model_fields.items():
        inner, suffix = _model_class(field.annotation)
        if key == "model":
            yield (
                "model",
                {
                    "name": field_of(inner, "name"),
                    "max_parameters": field_of(inner, "max_parameters"),
                    **TowerParams.model_fields,
                },
            )
            for model_name, entry in MODELS.items():
                own = {
                    k: f
                    for k, f in entry.params.model_fields.items()
                    if k not in TowerParams.model_fields
                    or default_text(f) != default_text(TowerParams.model_fields[k])
                }
                yield f"model.{model_name}", own
        elif key == "loss":
            yield "loss", {"weighting": field_of(inner, "weighting")}
            for weighting, wentry in WEIGHTINGS.items():
                yield f"loss.{weighting}", dict(wentry.params.model_fields)
        elif inner is not None:
            yield from walk(key + suffix, inner)


def field_of(model: type[BaseModel] | None, key: str) -> FieldInfo:
    assert model is not None
    return model.model_fields[key]


def _meanings(body: str) -> dict[str, str]:
    """``{key: meaning}`` from a block's table rows."""
    out = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) >= 4 and cells[0].startswith("`"):
            out[cells[0].strip("`")] = " | ".join(cells[3:])
    return out


def render_block(fields: dict[str, FieldInfo], meanings: dict[str, str]) -> str:
    if not fields:
        return "No parameters.\n"
    rows = []
    for key, field in fields.items():
        meaning = meanings.get(key) or (field.description or "").replace("\n", " ")
        rows.append(
            f"| `{key}` | {type_name(field.annotation)} | {default_text(field)} | {meaning} |"
        )
    return HEADER + "\n".join(rows) + "\n"


def model_doc_meanings(models_md: str) -> dict[str, dict[str, str]]:
    """``{model name: {parameter: meaning}}`` from the parameter tables of docs/models.md: a
    ``## Heading`` names the model (``Cross-stitch`` is ``cross_stitch``), its table rows
    ``| `key` | default | meaning |``. The fallback meaning of a model's new parameter."""
    out: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in models_md.splitlines():
        if line.startswith("## "):
            current = out.setdefault(re.sub(r"[^a-z0-9]", "", line[3:].lower()), {})
        match = re.fullmatch(r"\| `(\w+)` \| [^|]* \| (.+) \|", line.strip())
        if match and match[2].strip():
            current.setdefault(match[1], match[2].strip())
    return out


def render(text: str, models_md: str = "") -> tuple[str, list[str]]:
    """``text`` (docs/config.md) with every keys block regenerated, a block added after the
    last of its kind for a new model or weighting, and the problems: blocks naming no section
    of the schema, sections without a block, keys without a meaning. A key's meaning is the
    file's, else its field's ``description``, else (model parameters) docs/models.md's."""
    schema = dict(sections())
    from_models = model_doc_meanings(models_md)
    problems: list[str] = []
    seen = {m["name"] for m in BLOCK.finditer(text)}
    for name in schema:  # a new top-level section: at the end, under its own heading
        if name not in seen and "." not in name:
            text = f"{text.rstrip()}\n\n## {name}\n\n<!-- keys: {name} -->\n<!-- /keys -->\n"
            seen.add(name)
    for name in schema:  # new sections: an empty block after the last block of its kind
        if name in seen or "." not in name:
            continue
        parent = name.rsplit(".", 1)[0]
        kin = [m for m in BLOCK.finditer(text) if m["name"].startswith(parent + ".")]
        if parent in ("model", "loss") and kin:
            label = "model.name" if parent == "model" else "weighting"
            title = f"\n\n`{label}: {name.rsplit('.', 1)[1]}`:\n\n"
        else:
            kin = [m for m in BLOCK.finditer(text) if m["name"] == parent] + kin
            title = f"\n\n`{name}`:\n\n"
        if not kin:
            continue
        end = kin[-1].end()
        text = f"{text[:end]}{title}<!-- keys: {name} -->\n<!-- /keys -->{text[end:]}"
        seen.add(name)

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in schema:
            problems.append(f"block {name!r} names no section of the schema")
            return match.group(0)
        fields = schema[name]
        meanings = _meanings(match["body"])
        fallback = from_models.get(name.removeprefix("model.").replace("_", ""), {})
        for key in fields:
            if not (meanings.get(key) or fields[key].description):
                if name.startswith("model.") and key in fallback:
                    meanings[key] = fallback[key]
                else:
                    problems.append(f"{name}: key {key!r} has no meaning: write one in {DOC.name}")
        return match.group(1) + render_block(fields, meanings) + match.group(4)

    new = BLOCK.sub(fill, text)
    for name in schema:
        if name not in seen:
            problems.append(
                f"section {name!r} has no block: add '<!-- keys: {name} -->' and "
                "'<!-- /keys -->' lines to docs/config.md"
            )
    return new, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m polytask.configdoc",
        description="Regenerate the key tables of docs/config.md from the run-file schema.",
    )
    parser.add_argument("--doc", type=Path, default=DOC, help=f"the file (default: {DOC})")
    parser.add_argument(
        "--check", action="store_true", help="only check; exit 1 if out of date (default: write)"
    )
    args = parser.parse_args(argv)
    text = args.doc.read_text(encoding="utf-8")
    models_md = args.doc.with_name("models.md")
    new, problems = render(
        text, models_md.read_text(encoding="utf-8") if models_md.is_file() else ""
    )
    if args.check:
        if new != text:
            problems.insert(0, f"{args.doc} is out of date: run python -m polytask.configdoc")
    elif new != text:
        args.doc.write_text(new, encoding="utf-8")
        print(f"rewrote {args.doc}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
