"""Read the CloudFormation templates in infra/ and evaluate their IAM policies.

Enough of CloudFormation to answer "what does this policy allow, in this
account": YAML with the intrinsic-function tags, the functions that build
names (Ref, Sub, GetAtt, Join, Select, Split, ImportValue), and IAM's
wildcard matching of actions and resources. Conditions of policy statements
are not evaluated (the dashboard's policy has none).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"

_FUNCTIONS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "Sub",
            "GetAtt",
            "Join",
            "Select",
            "Split",
            "ImportValue",
            "If",
            "Equals",
            "Not",
            "And",
            "Or",
            "Base64",
            "FindInMap",
            "GetAZs",
            "Cidr",
            "Length",
            "ToJsonString",
        )
    },
}


class _Loader(yaml.SafeLoader):
    """SafeLoader that turns ``!Sub x`` into ``{"Fn::Sub": x}`` (and so on)."""


def _constructor(name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return construct


for _tag, _name in _FUNCTIONS.items():
    _Loader.add_constructor(f"!{_tag}", _constructor(_name))


def load_template(path: Path | str) -> dict[str, Any]:
    """The template as plain data (intrinsic functions as their JSON form)."""
    data = yaml.load(Path(path).read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a CloudFormation template")
    return data


class Unresolvable(ValueError):
    """A value the resolver cannot compute (a condition, an unknown name)."""


@dataclass(frozen=True)
class Context:
    """What names resolve to: parameters, pseudo parameters, resources
    (``Ref`` of a resource gives its name) and ``Res.Attr`` attributes."""

    values: Mapping[str, str]
    imports: Mapping[str, str] | None = None
    conditions: Mapping[str, bool] | None = None

    def lookup(self, name: str) -> str:
        if name in self.values:
            return self.values[name]
        raise Unresolvable(f"no value for {name}")


def default_context(template: Mapping[str, Any], **values: str) -> Context:
    """Parameters at their defaults, a made-up account, plus ``values``."""
    merged: dict[str, str] = {
        "AWS::Partition": "aws",
        "AWS::Region": "us-east-1",
        "AWS::AccountId": "123456789012",
        "AWS::StackName": "modeldeck",
        "AWS::URLSuffix": "amazonaws.com",
    }
    for name, spec in (template.get("Parameters") or {}).items():
        if isinstance(spec, dict) and "Default" in spec:
            merged[name] = str(spec["Default"])
    merged.update(values)
    return Context(merged)


class _NoValue:
    """``Ref: AWS::NoValue``: the property or list item is dropped."""


NO_VALUE = _NoValue()


def resolve(node: Any, context: Context) -> Any:
    """Evaluate the name-building intrinsic functions in ``node`` (and Fn::If,
    when the context knows the template's conditions)."""
    if isinstance(node, list):
        items = [resolve(item, context) for item in node]
        return [item for item in items if item is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, arg),) = node.items()
        if key == "Ref" and arg == "AWS::NoValue":
            return NO_VALUE
        if key == "Ref":
            return context.lookup(str(arg))
        if key == "Fn::If" and context.conditions is not None:
            name, when_true, when_false = arg
            if name not in context.conditions:
                raise Unresolvable(f"no value for condition {name}")
            return resolve(when_true if context.conditions[name] else when_false, context)
        if key == "Fn::Sub":
            return _sub(arg, context)
        if key == "Fn::GetAtt":
            parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return context.lookup(".".join(str(p) for p in parts))
        if key == "Fn::Join":
            separator, items = arg
            return str(separator).join(str(v) for v in resolve(items, context))
        if key == "Fn::Select":
            index, items = arg
            return resolve(items, context)[int(resolve(index, context))]
        if key == "Fn::Split":
            separator, value = arg
            return str(resolve(value, context)).split(str(separator))
        if key == "Fn::GetAZs":
            region = str(resolve(arg, context)) or context.lookup("AWS::Region")
            return [f"{region}{letter}" for letter in "abc"]
        if key == "Fn::ImportValue":
            name = str(resolve(arg, context))
            if context.imports is None or name not in context.imports:
                raise Unresolvable(f"no export named {name}")
            return context.imports[name]
        if key.startswith("Fn::") or key == "Condition":
            raise Unresolvable(f"{key} is not evaluated here")
    resolved = {key: resolve(value, context) for key, value in node.items()}
    return {key: value for key, value in resolved.items() if value is not NO_VALUE}


def _sub(arg: Any, context: Context) -> str:
    if isinstance(arg, list):
        text, variables = arg
        local = {k: str(resolve(v, context)) for k, v in variables.items()}
    else:
        text, local = arg, {}
    out: list[str] = []
    i = 0
    while i < len(text):
        start = text.find("${", i)
        if start < 0:
            out.append(text[i:])
            break
        out.append(text[i:start])
        end = text.index("}", start)
        name = text[start + 2 : end]
        if name.startswith("!"):  # ${!Literal} stays ${Literal}
            out.append("${" + name[1:] + "}")
        else:
            out.append(local[name] if name in local else context.lookup(name))
        i = end + 1
    return "".join(out)


# --- IAM -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    sid: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    has_condition: bool

    def matches(self, action: str, resource: str) -> bool:
        return any(_action_match(pattern, action) for pattern in self.actions) and any(
            fnmatch.fnmatchcase(resource, pattern) for pattern in self.resources
        )


def _action_match(pattern: str, action: str) -> bool:
    # IAM action names are case-insensitive; resources are not.
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def _as_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def statements(document: Mapping[str, Any]) -> list[Statement]:
    """The statements of a resolved policy document. NotAction/NotResource and
    principals are refused: no policy here needs them."""
    result = []
    for index, raw in enumerate(_as_list(document.get("Statement"))):
        for refused in ("NotAction", "NotResource", "NotPrincipal"):
            if refused in raw:
                raise ValueError(f"statement {index} uses {refused}")
        result.append(
            Statement(
                sid=str(raw.get("Sid", f"#{index}")),
                effect=str(raw["Effect"]),
                actions=_as_tuple(raw["Action"]),
                resources=_as_tuple(raw["Resource"]),
                has_condition="Condition" in raw,
            )
        )
    return result


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def allowed(policy: Iterable[Statement], action: str, resource: str) -> bool:
    """IAM's verdict for one identity policy: an explicit deny wins, else any allow."""
    found = False
    for statement in policy:
        if statement.matches(action, resource):
            if statement.effect == "Deny":
                return False
            found = True
    return found


def sample_arn(pattern: str, filler: str = "modeldeck-sample") -> str:
    """A concrete resource that ``pattern`` (an IAM resource with wildcards) matches;
    "*" stays "*" (an action IAM does not scope to a resource)."""
    if pattern == "*":
        return pattern
    return pattern.replace("*", filler).replace("?", "x")
