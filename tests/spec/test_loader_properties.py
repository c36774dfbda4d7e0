"""The loader never raises anything but llmflow's own errors, whatever the YAML says."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from llmflow.errors import LlmflowError
from llmflow.spec.loader import load_pair

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VALID_PIPELINE = FIXTURES / "pipelines" / "valid" / "triage.yaml"
VALID_POLICY = FIXTURES / "policies" / "basic.yaml"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["{{ item.id }}", "{{ steps.classify.outputs }}", "{% for", "inputs.tickets"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _load(pipeline: Path, policy: Path) -> None:
    with contextlib.suppress(LlmflowError):
        load_pair(pipeline, policy, inputs={})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=300))
def test_arbitrary_text_raises_only_llmflow_errors(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        path.write_text(text, encoding="utf-8")
        _load(path, VALID_POLICY)
        _load(VALID_PIPELINE, path)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(document: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    if not path:
        return value
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "rename" and isinstance(parent, dict):
        parent[f"{last}_x" if not isinstance(value, str) or not value else value] = parent.pop(last)
    else:
        parent[last] = value
    return document


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), which=st.sampled_from(["pipeline", "policy"]))
def test_mutated_valid_files_raise_only_llmflow_errors(data: st.DataObject, which: str) -> None:
    source = VALID_PIPELINE if which == "pipeline" else VALID_POLICY
    yaml = YAML(typ="safe")
    document = yaml.load(source.read_text(encoding="utf-8"))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(document)
        path = data.draw(st.sampled_from(paths))
        action = data.draw(st.sampled_from(["delete", "replace", "rename"]))
        if not path and action != "replace":
            continue
        document = _mutate(document, path, action, data.draw(values))
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(VALID_PIPELINE.parent / "data", Path(tmp) / "data")
        target = Path(tmp) / f"{which}.yaml"
        with target.open("w", encoding="utf-8") as handle:
            YAML(typ="safe").dump(document, handle)
        if which == "pipeline":
            _load(target, VALID_POLICY)
        else:
            _load(VALID_PIPELINE, target)
