"""`make package STAGE=dev`: the zip `make deploy` uploads, with bytecode, built exactly as the deploy builds it.

    python -m deploy.package --stage dev    # its last line: the zip's path

Chalice never compiles: it unpacks the dependencies' wheels (no `__pycache__`) and ships `app.py` and its
own `chalice/app.py` as source. `/var/task` is read-only, so a cold Lambda would compile every module it
imports and throw the result away. So the deploy:
  1. builds the stage's project (deploy/stage.py) and runs `chalice package` in it, which writes
     `deployment.zip` and also leaves it in chalice's package cache (`.chalice/deployments/<hash>-<runtime>.zip`);
  2. refuses unless this interpreter is the minor version of the template's Lambda runtime (a pyc is only
     ever read by the version that wrote it);
  3. rewrites the zip, in memory: every `__pycache__` removed (nothing from a test run or another Python),
     every module compiled, entries sorted with a fixed date, the zip's comment saying so. When nothing
     changed, chalice's cache hands back the zip this step wrote last time, which it leaves as it is;
  4. puts the result back into chalice's cache, so that `chalice deploy` ("Reusing existing deployment
     package") uploads it. The deploy then checks that Lambda's CodeSha256 is this zip's: if a chalice
     version stopped reusing its cache, the deploy fails instead of silently shipping source only.

The pycs are unchecked-hash (PEP 552): valid whatever mtimes the zip round-trip leaves, and used without
reading the source to hash it. That is right for this package because source and bytecode are written in
the same step and nothing changes the zip afterwards (step 4 verifies the upload byte for byte), and
/var/task is read-only; checked-hash would only guard against an edit that cannot happen.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import marshal
import os
import shutil
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from deploy import stage

# The zip's comment once compile_zip rewrote it, naming the bytecode's format and Python.
COMPILED = b"deploy/package.py: unchecked-hash bytecode, magic " + importlib.util.MAGIC_NUMBER.hex().encode()
TASK_ROOT = "/var/task"  # where Lambda unpacks the zip
ENTRY_DATE = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: entries do not depend on when the build ran
REGULAR_FILE = 0o100644 << 16  # external_attr of a new entry: a regular file, rw-r--r--
NO_ACCOUNT = "000000000000"  # for the functions' role ARNs in the project: the zip holds no account


class PackageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Package:
    project: Path  # the project `chalice deploy` runs in; its cache holds `zip`
    zip: Path
    runtime: str  # the template's Lambda runtime, e.g. "python3.11"

    @property
    def code_sha256(self) -> str:
        return sha256_of(self.zip)


def sha256_of(zip_path: Path) -> str:
    """What Lambda reports as a function's CodeSha256 once it holds this zip."""
    return base64.b64encode(hashlib.sha256(zip_path.read_bytes()).digest()).decode()


def zip_of(project: Path) -> Path:
    """Where `build` left the zip of the project it built."""
    return project.parent / "package" / "deployment.zip"


def template_of(project: Path) -> Path:
    return project.parent / "package" / "sam.json"


def build(
    stage_name: str, env: Mapping[str, str], build_dir: Path, environ: Mapping[str, str], account: str
) -> Package:
    """The stage's project under `build_dir` for `account` and its deployment zip, compiled (see the module's
    docstring)."""
    project = stage.build_project(stage_name, env, build_dir, account)
    shipped = zip_of(project)
    shutil.rmtree(shipped.parent, ignore_errors=True)
    stage.run_chalice(project, "package", stage_name, environ, str(shipped.parent))
    runtime = template_runtime(json.loads(template_of(project).read_text()))
    require_interpreter(runtime)
    cached = _cache_entry(project, shipped)
    compile_zip(shipped)
    shutil.copyfile(shipped, cached)
    return Package(project, shipped, runtime)


def template_runtime(template: Mapping[str, Any]) -> str:
    """The one Python runtime of the packaged template's functions."""
    runtimes = {
        str(resource["Properties"]["Runtime"])
        for resource in template.get("Resources", {}).values()
        if resource.get("Type") == "AWS::Serverless::Function"
    }
    if len(runtimes) != 1:
        raise PackageError(f"the packaged template names {len(runtimes)} Lambda runtimes ({sorted(runtimes)})")
    return runtimes.pop()


def require_interpreter(runtime: str) -> None:
    here = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if here != runtime:
        raise PackageError(
            f"package: the stage's Lambda runtime is {runtime} but this is {here}; its bytecode would never be "
            f"read there: build with {runtime}"
        )


def _cache_entry(project: Path, shipped: Path) -> Path:
    """The file of chalice's package cache that `chalice deploy` will reuse: the one `chalice package` copied."""
    content = shipped.read_bytes()
    for candidate in sorted((project / ".chalice" / "deployments").glob("*.zip")):
        if candidate.read_bytes() == content:
            return candidate
    raise PackageError(f"package: no file of {project}/.chalice/deployments is the zip chalice packaged")


def compile_zip(path: Path) -> None:
    """Rewrites the zip at `path` with an unchecked-hash pyc beside every module and no other bytecode. In memory:
    extracting some 5,000 files to compile them costs more than compiling them. A zip this function wrote (chalice
    reuses its cache when nothing changed) is left as it is."""
    with zipfile.ZipFile(path) as source:
        if source.comment == COMPILED:
            return
        files = {
            info.filename: (source.read(info), info.external_attr)
            for info in source.infolist()
            if not info.is_dir() and "__pycache__" not in PurePosixPath(info.filename).parts
        }
    uncompiled = []
    for name, (content, _) in list(files.items()):
        if name.endswith(".py"):
            try:
                files[importlib.util.cache_from_source(name)] = (_unchecked_hash_pyc(name, content), REGULAR_FILE)
            except (SyntaxError, ValueError):
                uncompiled.append(name)
    if uncompiled:
        raise PackageError(f"package: {len(uncompiled)} modules do not compile, e.g. {uncompiled[:3]}")
    temporary = path.with_suffix(".tmp")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as rewritten:
        for name in sorted(files, key=lambda name: PurePosixPath(name).parts):
            content, mode = files[name]
            entry = zipfile.ZipInfo(name, date_time=ENTRY_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = mode
            rewritten.writestr(entry, content)
        rewritten.comment = COMPILED
    os.replace(temporary, path)


def _unchecked_hash_pyc(name: str, source: bytes) -> bytes:
    """What `py_compile` writes for an unchecked-hash pyc (PEP 552: magic, flags, source hash, code), the module
    named as Lambda unpacks it rather than after where it was built, so that the zip is the same wherever it was."""
    code = compile(source, f"{TASK_ROOT}/{name}", "exec", dont_inherit=True)
    flags = 0b01  # hash-based; bit 1 unset: unchecked
    return (
        importlib.util.MAGIC_NUMBER
        + flags.to_bytes(4, "little")
        + importlib.util.source_hash(source)
        + marshal.dumps(code)
    )


def build_offline(stage_name: str, build_dir: Path, environ: Mapping[str, str]) -> Package:
    """The stage's zip as the deploy builds it, with no stack and no AWS access. The zip holds no environment,
    no account and no region (Lambda and the deploy hold those), so placeholders for what the stack outputs
    build the same zip. No AWS credential reaches chalice, whose pip runs third-party code: CI builds the
    package before it assumes the deploy role. Chalice only wants a region for its template."""
    offline = {name: value for name, value in environ.items() if not name.startswith("AWS_")}
    offline["AWS_DEFAULT_REGION"] = environ.get("AWS_DEFAULT_REGION", "us-east-1")
    committed = stage.stage_config(stage_name)["environment_variables"]
    env = stage.fed_environment(committed, stage.PLACEHOLDER_OUTPUTS, stage.PLACEHOLDER_JWKS_URL)
    return build(stage_name, env, build_dir, offline, NO_ACCOUNT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--build-dir", type=Path, default=stage.BUILD_ROOT, help="where projects are built [.deploy]")
    args = parser.parse_args(argv)
    try:
        built = build_offline(args.stage, args.build_dir / args.stage, os.environ)
    except (KeyError, PackageError, RuntimeError) as error:
        print(error, file=sys.stderr)
        return 2
    size = built.zip.stat().st_size
    print(f"package: {built.runtime}, {size / 1e6:.1f} MB, CodeSha256 {built.code_sha256}", flush=True)
    print(built.zip)
    return 0


if __name__ == "__main__":
    sys.exit(main())
