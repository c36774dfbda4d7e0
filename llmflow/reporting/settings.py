"""What a report takes from the run's policy: warning threshold, baseline, batch hit rate.

A run stores them when it starts (:class:`llmflow.tracker.records.PricedWith`), so its
report prices with what the run ran under, whatever the policy file has become since.
A run made by an older llmflow has only the policy's path: when that file still exists
and loads, its values are used, otherwise the documented defaults (with a note).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from llmflow.catalog import Catalog, ModelInfo
from llmflow.errors import LlmflowError
from llmflow.spec.loader import load_policy
from llmflow.spec.policy import Policy
from llmflow.tracker.records import PricedWith

DEFAULT_MIN_HIT_RATIO = Decimal("0.30")
DEFAULT_BATCH_HIT_RATE = Decimal("0.5")
DEFAULT_BASELINE_MODEL = "claude-sonnet-4-6"


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """Thresholds and the baseline model a report uses; ``notes`` say where they came from."""

    min_hit_ratio: Decimal
    batch_hit_rate: Decimal
    baseline: ModelInfo | None
    notes: tuple[str, ...] = ()


def tier_model(policy: Policy, tier: str, catalog: Catalog) -> ModelInfo | None:
    """The catalog model of a policy tier with the tier's overrides; None if unknown."""
    spec = policy.tiers.get(tier)
    return catalog.resolve(spec.model, spec.model_dump()) if spec is not None else None


def load_settings(
    policy_path: str | None,
    catalog: Catalog,
    *,
    min_hit_ratio: Decimal | None = None,
    stored: str | None = None,
) -> ReportSettings:
    """The settings the run stored (``stored``), else those of the policy at
    ``policy_path`` if it loads, else defaults.

    An explicit ``min_hit_ratio`` (``--min-hit-ratio``) wins over the policy's value.
    """
    if stored is not None:
        priced = PricedWith.from_json(stored)
        return ReportSettings(
            min_hit_ratio=priced.min_hit_ratio if min_hit_ratio is None else min_hit_ratio,
            batch_hit_rate=priced.batch_hit_rate,
            baseline=priced.baseline,
        )
    notes: list[str] = []
    policy: Policy | None = None
    if policy_path is None:
        notes.append("the run recorded no policy file; using default report settings")
    elif not Path(policy_path).is_file():
        notes.append(f"policy file {policy_path} not found; using default report settings")
    else:
        try:
            policy = load_policy(policy_path).policy
        except (LlmflowError, OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            notes.append(f"policy file {policy_path} does not load ({first}); using defaults")
    baseline = catalog.get(DEFAULT_BASELINE_MODEL)
    ratio, rate = DEFAULT_MIN_HIT_RATIO, DEFAULT_BATCH_HIT_RATE
    if policy is not None:
        ratio, rate = policy.cache.min_hit_ratio_warning, policy.cache.batch_hit_rate
        found = tier_model(policy, policy.baseline_tier, catalog)
        if found is not None:
            baseline = found
        else:
            notes.append(
                f"baseline tier {policy.baseline_tier!r} has no known model;"
                f" baseline priced on {DEFAULT_BASELINE_MODEL}"
            )
    if min_hit_ratio is not None:
        ratio = min_hit_ratio
    return ReportSettings(
        min_hit_ratio=ratio, batch_hit_rate=rate, baseline=baseline, notes=tuple(notes)
    )
