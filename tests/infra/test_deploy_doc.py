"""docs/deploy-aws.md names only things that exist: template parameters and
outputs, task definitions, tools, make targets (its AWS side needs an account)."""

from __future__ import annotations

import re

from tools.cfn import INFRA, ROOT, load_template

DOC = (ROOT / "docs" / "deploy-aws.md").read_text()
STACKS = {
    "modeldeck": "base.yaml",
    "modeldeck-dashboard": "dashboard.yaml",
    "modeldeck-$MODEL-staging": "environment.yaml",
}


def commands() -> list[str]:
    """Shell commands of the doc's code blocks, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", DOC, re.S)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def test_deploy_commands_pass_only_parameters_the_templates_have() -> None:
    deploys = [c for c in commands() if "aws cloudformation deploy" in c]
    assert len(deploys) >= 4
    for command in deploys:
        template = load_template(ROOT / re.search(r"--template-file (\S+)", command)[1])
        overrides = (
            command.split("--parameter-overrides", 1)[1]
            if "--parameter-overrides" in command
            else ""
        )
        for name in re.findall(r'(?:^|\s)"?([A-Za-z]+)=', overrides):
            assert name in template["Parameters"], f"{name} in: {command}"
        required = {n for n, p in template["Parameters"].items() if "Default" not in p}
        given = set(re.findall(r'(?:^|\s)"?([A-Za-z]+)=', overrides))
        if "base.yaml" not in command:
            assert required <= given, f"missing {required - given} in: {command}"


def test_outputs_read_by_the_doc_exist() -> None:
    used = re.findall(r'\$\(out "?([\w$-]+)"? (\w+)\)', DOC)
    used += [
        (s, k)
        for s in ["modeldeck-$MODEL-staging"]
        for k in re.search(r"for key in ([\w ]+); do", DOC)[1].split()
    ]
    assert len(used) >= 8
    for stack, key in used:
        outputs = load_template(INFRA / STACKS[stack])["Outputs"]
        assert key in outputs, f"{stack} has no output {key}"


def test_the_manage_task_and_tools_named_exist() -> None:
    dashboard = load_template(INFRA / "dashboard.yaml")["Resources"]
    manage = dashboard["ManageTaskDefinition"]["Properties"]
    assert manage["Family"] == "modeldeck-manage" and "--task-definition modeldeck-manage" in DOC
    assert (
        manage["ContainerDefinitions"][0]["Name"] == "manage" and '\\"name\\":\\"manage\\"' in DOC
    )
    for module in re.findall(r"-m (tools\.\w+|devstack\.\w+)", DOC):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
    for script in re.findall(r"(tools/\w+\.py)", DOC):
        assert (ROOT / script).is_file(), script
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"`make ([\w-]+)", DOC) + re.findall(r"^make ([\w-]+)", DOC, re.M):
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_it_says_where_new_accounts_go() -> None:
    prose = " ".join(re.sub(r"[>*]", " ", DOC).split())
    assert "App Runner is closed to new customers since 2026-04-30" in prose
    assert "new accounts use Amazon ECS Express Mode" in prose
    assert "docs/deploy-aws.md" in (ROOT / "README.md").read_text()
