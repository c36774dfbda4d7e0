"""The planner: resolve a pipeline under a policy into a priced execution plan.

Public API (what ``llmflow plan`` and the executor use):

* :func:`make_plan` / :func:`build_plan` / :func:`build_plan_async` — the plan, and
  with ``build_plan*`` the per-step :class:`RequestTemplate` the executor renders.
* :class:`Plan` — the plan JSON.
* :func:`build_params`, :class:`RequestTemplate`, :func:`inputs_namespace`,
  :func:`steps_namespace` — the exact Messages API request of a step.
* :func:`request_max_cost` — a request's true upper-bound cost (budget reservations).
* :class:`TokenCounter` — exact counts for ``--exact-tokens``.
"""

from llmflow.planner.costing import request_max_cost, tier_model
from llmflow.planner.plan import Plan, StepPlan, plan_json_schema
from llmflow.planner.planner import (
    PlanResult,
    build_plan,
    build_plan_async,
    make_plan,
)
from llmflow.planner.requests import (
    CacheMarks,
    RequestOptions,
    RequestTemplate,
    build_params,
    inputs_namespace,
    retarget,
    split_sdk_params,
    steps_namespace,
)
from llmflow.planner.tokens import TokenCounter, params_size

__all__ = [
    "CacheMarks",
    "Plan",
    "PlanResult",
    "RequestOptions",
    "RequestTemplate",
    "StepPlan",
    "TokenCounter",
    "build_params",
    "build_plan",
    "build_plan_async",
    "inputs_namespace",
    "make_plan",
    "params_size",
    "plan_json_schema",
    "request_max_cost",
    "retarget",
    "split_sdk_params",
    "steps_namespace",
    "tier_model",
]
