"""Is the dashboard's IAM policy exactly what its code calls?

    python -m tools.dashboard_iam                 # report; exit 1 when they differ
    python -m tools.dashboard_iam --write-readme  # regenerate the README's IAM list

The calls are found two ways: a static scan of ``dashboard/`` for boto3
client calls (complete, whatever tests ran), and the record the test suite
writes of every call really made (``MODELDECK_AWS_CALL_LOG``). Each call is
looked up in :mod:`dashboard.aws.permissions` for the IAM actions it needs and
on what; the policy is ``DashboardRole``'s in ``infra/base.yaml``.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
from botocore import xform_name

from dashboard.aws.permissions import FROM_PARAMS, OPERATIONS, RESOURCES, Need, needs_for
from tools.cfn import (
    INFRA,
    ROOT,
    Context,
    Statement,
    allowed,
    default_context,
    load_template,
    resolve,
    sample_arn,
    statements,
)

BASE_TEMPLATE = INFRA / "base.yaml"
ROLE = "DashboardRole"
README = ROOT / "README.md"
README_BEGIN = "<!-- dashboard-iam:begin"
README_END = "<!-- dashboard-iam:end -->"

# Client methods that are not operations but name one in their first argument.
_OPERATION_IN_ARGUMENT = {"get_paginator", "generate_presigned_url"}
_NOT_OPERATIONS = {"meta", "exceptions", "can_paginate", "close"}


@dataclass(frozen=True)
class Call:
    """One boto3 call site in the dashboard's code."""

    service: str
    operation: str
    path: str
    line: int
    keywords: frozenset[str]
    any_keywords: bool  # **kwargs, a paginator, a non-literal Params: could pass anything

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def applies(self, need: Need) -> bool:
        return need.when is None or self.any_keywords or need.when in self.keywords


# --- the static scan ----------------------------------------------------------------


@cache
def _operations(service: str) -> dict[str, str]:
    """snake_case method name -> operation name, from botocore's own model."""
    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


class _Scanner:
    def __init__(self, factories: Mapping[str, str]) -> None:
        self.factories = dict(factories)

    def service_of(self, node: ast.expr, variables: Mapping[str, str]) -> str | None:
        """The AWS service of a client expression, or None when it is not one."""
        if isinstance(node, ast.Name):
            return variables.get(node.id)
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            return None
        name = node.func.id
        if name == "client" and node.args and isinstance(node.args[0], ast.Constant):
            value = node.args[0].value
            return value if isinstance(value, str) else None
        if name == "cast" and len(node.args) == 2:
            return self.service_of(node.args[1], variables)
        if name in self.factories and not node.args:
            return self.factories[name]
        return None


def _factories(tree: ast.Module, scanner: _Scanner) -> dict[str, str]:
    """Functions that return a client (``def _s3(): return cast(..., client("s3"))``)."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and inner.value is not None:
                    service = scanner.service_of(inner.value, {})
                    if service:
                        found[node.name] = service
    return found


def _variables(function: ast.AST, scanner: _Scanner) -> dict[str, str]:
    variables: dict[str, str] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                service = scanner.service_of(node.value, variables)
                if service:
                    variables[target.id] = service
    return variables


def scan(root: Path | None = None) -> tuple[list[Call], list[str]]:
    """Every boto3 call in ``root`` (default: dashboard/), and the problems met
    (a method that is no operation, an operation named by a non-literal)."""
    root = root or ROOT / "dashboard"
    files = sorted(p for p in root.rglob("*.py") if "migrations" not in p.parts)
    trees = {path: ast.parse(path.read_text(), filename=str(path)) for path in files}
    scanner = _Scanner({})
    shared: dict[str, str] = {}
    for tree in trees.values():
        shared.update(_factories(tree, scanner))
    calls: list[Call] = []
    problems: list[str] = []
    for path, tree in trees.items():
        scanner = _Scanner({**shared, **_factories(tree, _Scanner(shared))})
        relative = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        scopes: list[ast.AST] = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        seen: set[int] = set()
        for scope in [*scopes, tree]:
            variables = _variables(scope, scanner) if scope is not tree else {}
            for node in ast.walk(scope):
                if id(node) in seen or not isinstance(node, ast.Call):
                    continue
                if not isinstance(node.func, ast.Attribute):
                    continue
                service = scanner.service_of(node.func.value, variables)
                if service is None:
                    continue
                seen.add(id(node))
                call, problem = _call(service, node, relative)
                if call:
                    calls.append(call)
                if problem:
                    problems.append(problem)
    return calls, problems


def _call(service: str, node: ast.Call, path: str) -> tuple[Call | None, str | None]:
    assert isinstance(node.func, ast.Attribute)
    method = node.func.attr
    where = f"{path}:{node.lineno}"
    operations = _operations(service)
    keywords = frozenset(k.arg for k in node.keywords if k.arg)
    any_keywords = any(k.arg is None for k in node.keywords)
    if method in _NOT_OPERATIONS:
        return None, None
    if method in _OPERATION_IN_ARGUMENT:
        first = node.args[0] if node.args else None
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            return None, f"{where}: {service}.{method} with an operation that is not a literal"
        method_name = first.value
        if method == "get_paginator":
            keywords, any_keywords = frozenset(), True
        else:
            params = next((k.value for k in node.keywords if k.arg == "Params"), None)
            if isinstance(params, ast.Dict) and all(
                isinstance(k, ast.Constant) for k in params.keys
            ):
                keywords = frozenset(
                    str(k.value) for k in params.keys if isinstance(k, ast.Constant)
                )
                any_keywords = False
            else:
                keywords, any_keywords = frozenset(), True
    else:
        method_name = method
    operation = operations.get(method_name)
    if operation is None:
        return None, f"{where}: {service}.{method_name} is not an operation of {service}"
    return Call(service, operation, path, node.lineno, keywords, any_keywords), None


# --- the policy --------------------------------------------------------------------


def dashboard_policy(template: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dashboard role's policy documents, unresolved. Refuses a role whose
    rights come from anywhere else (managed policies, separate policy resources)."""
    resources = template["Resources"]
    role = resources[ROLE]["Properties"]
    if role.get("ManagedPolicyArns") or role.get("PermissionsBoundary"):
        raise ValueError(f"{ROLE} must get its rights from its inline policy only")
    for name, resource in resources.items():
        if resource.get("Type") in {
            "AWS::IAM::Policy",
            "AWS::IAM::ManagedPolicy",
            "AWS::IAM::RolePolicy",
        } and ROLE in json.dumps(resource.get("Properties", {})):
            raise ValueError(f"{name} adds rights to {ROLE}: keep them in its inline policy")
    return [policy["PolicyDocument"] for policy in role.get("Policies", [])]


def policy_statements(template: Mapping[str, Any], context: Context) -> list[Statement]:
    found: list[Statement] = []
    for document in dashboard_policy(template):
        found.extend(statements(resolve(document, context)))
    return found


def pattern(kind: str, context: Context) -> str:
    return str(resolve({"Fn::Sub": RESOURCES[kind]}, context))


def suggestion(operation: str, need: Need) -> str:
    """A policy statement to paste into infra/base.yaml's DashboardRole."""
    sid = re.sub(r"[^A-Za-z0-9]", "", operation.title())
    resource = '"*"' if need.resource == "*" else f'!Sub "{RESOURCES[need.resource]}"'
    return (
        f"              - Sid: {sid}\n"
        f"                Effect: Allow\n"
        f"                Action: {need.action}\n"
        f"                Resource: {resource}"
    )


def _missing_operation(operation: str, where: str) -> str:
    return (
        f"{where} calls {operation}, which dashboard/aws/permissions.py does not know: add "
        f'OPERATIONS["{operation}"] = (Need("<iam action>", "<resource kind>"),) '
        f"(the IAM action and resource are in AWS's Service Authorization Reference)"
    )


def check_static(template: Mapping[str, Any], calls: Iterable[Call], context: Context) -> list[str]:
    """Both directions: every call allowed on its resources; nothing else allowed."""
    policy = policy_statements(template, context)
    problems: list[str] = []
    needed: set[tuple[str, str]] = set()
    for call in calls:
        key = f"{call.service}:{call.operation}"
        needs = needs_for(call.service, call.operation)
        if needs is None:
            problems.append(_missing_operation(key, call.where))
            continue
        for need in needs:
            if not call.applies(need):
                continue
            resource = pattern(need.resource, context)
            needed.add((need.action.lower(), resource))
            if not allowed(policy, need.action, sample_arn(resource)):
                problems.append(
                    f"{call.where} calls {key}: the dashboard role does not allow "
                    f"{need.action} on {resource}; add to {ROLE} in infra/base.yaml:\n"
                    + suggestion(key, need)
                )
    for statement in policy:
        if statement.effect != "Allow":
            continue
        if statement.has_condition:
            problems.append(f"statement {statement.sid} has a Condition, which is not checked here")
        for action in statement.actions:
            for resource in statement.resources:
                if (action.lower(), resource) not in needed:
                    problems.append(
                        f"statement {statement.sid} allows {action} on {resource}, "
                        f"which no call in dashboard/ needs: remove it"
                    )
    return sorted(set(problems))


def read_call_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_recorded(
    template: Mapping[str, Any],
    records: Iterable[Mapping[str, Any]],
    calls: Iterable[Call],
    context: Context,
) -> list[str]:
    """Every call the dashboard's code really made: known to the scan and allowed;
    one that reached AWS is checked on the exact bucket, key or parameter it
    named. Calls a test made itself through the dashboard's client (playing
    someone else: an object deleted behind the dashboard's back) are not the
    dashboard's and are left out."""
    scanned = {(c.service, c.operation) for c in calls}
    problems: set[str] = set()
    for record in records:
        if not str(record.get("caller", "dashboard/")).startswith("dashboard/"):
            continue
        service, operation = record["service"], record["operation"]
        params: Mapping[str, Any] = record.get("params", {})
        key = f"{service}:{operation}"
        if (service, operation) not in scanned:
            problems.add(
                f"{key} was called at run time but the static scan did not find it: "
                f"teach tools/dashboard_iam.py that way of calling boto3"
            )
        needs = needs_for(service, operation)
        if needs is None:
            problems.add(_missing_operation(key, "a test"))
            continue
        local = context
        bucket = params.get("Bucket")
        if isinstance(bucket, str):
            local = Context({**context.values, "ModelsBucket": bucket}, context.imports)
        policy = policy_statements(template, local)
        for need in needs:
            if need.when is not None and need.when not in params:
                continue
            exact = FROM_PARAMS.get(need.resource)
            named = exact(params) if exact and record.get("sent") else None
            resource = (
                str(resolve({"Fn::Sub": named}, local))
                if named
                else sample_arn(pattern(need.resource, local))
            )
            if not allowed(policy, need.action, resource):
                problems.add(
                    f"{key} was called at run time on {resource}: the dashboard role "
                    f"does not allow {need.action} there"
                )
    return sorted(problems)


# --- the README's list -------------------------------------------------------------


def readme_block(template: Mapping[str, Any]) -> str:
    """The README's table of the dashboard role's rights, from the template."""
    context = default_context(
        template,
        **{"AWS::Region": "REGION", "AWS::AccountId": "ACCOUNT", "ModelsBucket": "BUCKET"},
    )
    lines = [
        f"{README_BEGIN} (generated from infra/base.yaml: python -m tools.dashboard_iam "
        "--write-readme) -->",
        "| statement | actions | resource |",
        "|---|---|---|",
    ]
    for statement in policy_statements(template, context):
        actions = ", ".join(f"`{a}`" for a in statement.actions)
        resources = ", ".join(f"`{r}`" for r in statement.resources)
        lines.append(f"| {statement.sid} | {actions} | {resources} |")
    lines.append(README_END)
    return "\n".join(lines)


def readme_current(text: str) -> str | None:
    start = text.find(README_BEGIN)
    end = text.find(README_END)
    if start < 0 or end < 0:
        return None
    return text[start : end + len(README_END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--call-log", type=Path, help="also check this run-time record")
    args = parser.parse_args(argv)
    template = load_template(BASE_TEMPLATE)
    if args.write_readme:
        text = README.read_text()
        current = readme_current(text)
        if current is None:
            print(f"README.md has no {README_BEGIN} ... {README_END} block", file=sys.stderr)
            return 1
        README.write_text(text.replace(current, readme_block(template)))
        return 0
    calls, problems = scan()
    context = default_context(template, ModelsBucket="modeldeck-models")
    problems += check_static(template, calls, context)
    if args.call_log:
        problems += check_recorded(template, read_call_log(args.call_log), calls, context)
    for call in sorted({(c.service, c.operation) for c in calls}):
        print(f"calls {call[0]}:{call[1]}")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(OPERATIONS)} operations known, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
