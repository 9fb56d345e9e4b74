"""`make bootstrap STAGE=dev REPOSITORY=owner/name`: one stage's CI bootstrap (infra/deploy-role.json), made or
updated by an administrator of the account, never by CI.

The stack `vod-upload-bootstrap-<stage>` holds the stage's deploy role, which only GitHub deploy jobs of the
environment named after the stage can assume, and the Lambda execution roles of the stage's functions with
their policy, which .chalice/config.json names (`manage_iam_role: false`) and the deploy role may only pass to
Lambda. Whatever the functions may do is therefore changed here, by an administrator, and not by a deploy.

An account has one OIDC provider for GitHub: the stack of the first stage bootstrapped in an account makes it,
every later one names it (and keeps naming the one it was made with).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from deploy import stack
from deploy import stage as stage_module
from deploy.deploy import FAILURES, aws_factory, region_problem

TEMPLATE = stack.ROOT / "infra" / "deploy-role.json"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
PROVIDER_PARAMETER = "GitHubOidcProviderArn"


def stack_name(stage: str) -> str:
    return f"{stack.APP_NAME}-bootstrap-{stage}"


def bootstrapped_stages() -> list[str]:
    """The stages of .chalice/config.json whose functions run with the bootstrap's roles."""
    stages: dict[str, Any] = json.loads(stage_module.CONFIG.read_text())["stages"]
    return sorted(
        name
        for name, settings in stages.items()
        if any("iam_role_arn" in function for function in settings.get("lambda_functions", {}).values())
    )


def existing_github_provider(iam: Any) -> str:
    """The ARN of the account's GitHub OIDC provider; empty when there is none."""
    for provider in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
        if provider["Arn"].endswith(f"/{GITHUB_OIDC_HOST}"):
            return str(provider["Arn"])
    return ""


def apply(cloudformation: Any, iam: Any, stage: str, repository: str) -> tuple[str, dict[str, str]]:
    """Creates or updates the stage's bootstrap stack; what happened, and its outputs."""
    name = stack_name(stage)
    existing = stack.describe(cloudformation, name)
    if existing is None:
        provider = existing_github_provider(iam)
    else:
        # A stack that made the provider keeps it: naming it now would make CloudFormation delete it.
        [provider] = [p["ParameterValue"] for p in existing["Parameters"] if p["ParameterKey"] == PROVIDER_PARAMETER]
    parameters = {"Stage": stage, "GitHubRepository": repository, PROVIDER_PARAMETER: provider}
    action = stack.create_or_update(
        cloudformation,
        name,
        TEMPLATE.read_text(),
        [{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        [{"Key": "app", "Value": stack.APP_NAME}, {"Key": "stage", "Value": stage}],
        capabilities=("CAPABILITY_NAMED_IAM",),
    )
    made = stack.describe(cloudformation, name)
    if made is None:
        raise stack.StackError(f"stack {name} vanished after {action}")
    return action, {output["OutputKey"]: output["OutputValue"] for output in made.get("Outputs", [])}


def bootstrap_all(environ: Mapping[str, str], repository: str) -> None:
    """Every bootstrapped stage, in the account `environ` names (the rehearsal's emulated one)."""
    aws = aws_factory(environ)
    for name in bootstrapped_stages():
        apply(aws("cloudformation"), aws("iam"), name, repository)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True, choices=bootstrapped_stages())
    parser.add_argument(
        "--repository",
        required=True,
        help="owner/name as GitHub writes it in the token's sub claim (owner@id/name@id with immutable claims)",
    )
    args = parser.parse_args(argv)
    problem = region_problem(os.environ)
    if problem:
        print(f"bootstrap: {problem}", file=sys.stderr)
        return 2
    aws = aws_factory(os.environ)
    try:
        action, outputs = apply(aws("cloudformation"), aws("iam"), args.stage, args.repository)
    except FAILURES as error:
        print(f"bootstrap: FAILED: {error}", file=sys.stderr)
        return 1
    print(f"bootstrap: stack {stack_name(args.stage)}: {action}")
    print(f"bootstrap: set AWS_DEPLOY_ROLE_ARN={outputs['RoleArn']} in the GitHub environment {args.stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
