"""The ``vodup`` command: ``vodup upload FILE …``, ``vodup cancel FILE``, ``vodup videos`` and ``vodup delete
FILEID``. Every failure is one line on stderr and a non-zero exit status, never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from tqdm import tqdm

from vodup.api import DEFAULT_DEADLINE, ApiClient, ApiSigner
from vodup.errors import UploadInterrupted, VodupError, one_line
from vodup.ugc import Network
from vodup.uploader import MiB, Progress, Uploader

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"vodup: {message} (see vodup --help)\n")


def seconds(text: str) -> float:
    seconds = float(text)
    if not 0 < seconds < math.inf:
        raise ValueError(text)
    return seconds


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = _Parser(prog="vodup", description="Upload videos to Tencent Cloud VOD through our signing API.")
    common = _Parser(add_help=False)
    common.add_argument("--api", default=env.get("VODUP_API"), help="the signing API's base URL [VODUP_API]")
    common.add_argument("--token", default=env.get("VODUP_TOKEN"), help="your bearer token [VODUP_TOKEN]")
    common.add_argument("--json", action="store_true", help="print the result as one JSON line")
    common.add_argument(
        "--deadline",
        type=seconds,
        default=env.get("VODUP_DEADLINE", str(DEFAULT_DEADLINE)),
        metavar="SECONDS",
        help=f"the most one call to the API may take, retries included (default {DEFAULT_DEADLINE:g}) [VODUP_DEADLINE]",
    )
    # What the commands that talk to VOD and COS, and keep resume state, share.
    transfer = _Parser(add_help=False)
    transfer.add_argument(
        "--state-dir", type=Path, default=env.get("VODUP_STATE_DIR"), help="where resume state lives [VODUP_STATE_DIR]"
    )
    transfer.add_argument(
        "--emulator",
        default=env.get("VODUP_EMULATOR"),
        help="send VOD and COS traffic over HTTP through this local emulator (vodlocal) [VODUP_EMULATOR]",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    upload = commands.add_parser(
        "upload", parents=[common, transfer], help="upload a video, resuming an interrupted upload"
    )
    upload.add_argument("file", type=Path, help="the video file")
    upload.add_argument("--cover", type=Path, help="a cover image")
    upload.add_argument("--title", help="the video's title")
    upload.add_argument("--procedure", help="a VOD task flow your plan allows")
    upload.add_argument("--part-size", type=int, default=8, metavar="MIB", help="COS part size in MiB (default 8)")
    upload.add_argument("--parallel", type=int, default=6, help="parts in flight (default 6)")

    cancel = commands.add_parser(
        "cancel", parents=[common, transfer], help="cancel an interrupted upload of a file, or an upload by its id"
    )
    which = cancel.add_mutually_exclusive_group(required=True)
    which.add_argument("file", type=Path, nargs="?", help="the video file whose interrupted upload to cancel")
    which.add_argument(
        "--upload-id",
        help="the upload to cancel (the uploadId that `upload --json` printed), as --upload-id=ID: an id may begin "
        "with '-'",
    )
    cancel.add_argument("--cover", type=Path, help="the cover image the upload was started with")

    commands.add_parser("videos", parents=[common], help="list your videos, newest first")
    delete = commands.add_parser("delete", parents=[common], help="delete one of your videos, from VOD too")
    delete.add_argument("file_id", metavar="FILEID", help="the video's fileId")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.api or not args.token:
        parser.error("--api and --token (or VODUP_API and VODUP_TOKEN) are required")
    try:
        api = ApiClient(args.api, args.token, deadline=args.deadline)
        if args.command == "videos":
            return list_videos(api, args.json)
        if args.command == "cancel":
            return cancel_upload(api, args)
        if args.command == "delete":
            api.delete_video(args.file_id)
            print(json.dumps({"fileId": args.file_id, "deleted": True}) if args.json else f"deleted {args.file_id}")
            return 0
        return upload(api, args)
    except UploadInterrupted as paused:
        percent = 100 * paused.sent // paused.total if paused.total else 0
        print(
            f"vodup: paused at {percent}%; run the same command again within 24 h to resume "
            "(or `vodup cancel` with the same files to cancel it)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("vodup: interrupted; run the same command again within 24 h to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (VodupError, ValueError) as exc:
        print(f"vodup: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a failure no one foresaw is still one line (and a bug to report)
        print(f"vodup: unexpected {type(exc).__name__}: {one_line(str(exc), 200)}", file=sys.stderr)
        return EXIT_ERROR


def upload(api: ApiClient, args: argparse.Namespace) -> int:
    intent: dict[str, Any] = {"fileName": args.file.name, "withCover": args.cover is not None}
    if args.title:
        intent["title"] = args.title
    if args.procedure:
        intent["procedure"] = args.procedure
    if args.file.is_file():
        intent["fileSize"] = args.file.stat().st_size
    signer = ApiSigner(api, intent)
    uploader = Uploader(
        signer,
        part_size=args.part_size * MiB,
        parallel=args.parallel,
        state_dir=args.state_dir,
        network=Network(emulator=args.emulator),
    )
    bar: tqdm[Any] | None = None

    def on_progress(progress: Progress) -> None:
        nonlocal bar
        if bar is None:
            if progress.resumed:
                print(
                    f"vodup: resuming upload {signer.context()}: {progress.sent / MiB:.1f} MiB of "
                    f"{progress.total / MiB:.1f} MiB already stored",
                    file=sys.stderr,
                )
            bar = tqdm(
                total=progress.total,
                initial=progress.sent,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=args.file.name,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        else:
            bar.update(progress.sent - bar.n)

    try:
        result = uploader.upload(args.file, args.cover, on_progress)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        line = {
            "fileId": result.file_id,
            "mediaUrl": result.media_url,
            "coverUrl": result.cover_url,
            "uploadId": result.upload_id,
            "attribution": result.attribution,
        }
        print(json.dumps(line))
    else:
        print(f"uploaded {args.file.name}: fileId {result.file_id}\n  media {result.media_url}")
        if result.cover_url:
            print(f"  cover {result.cover_url}")
    if result.attribution_error:
        print(
            f"vodup: the API was not told the upload is done ({one_line(result.attribution_error)}); "
            "VOD's event will attribute it",
            file=sys.stderr,
        )
    return 0


def cancel_upload(api: ApiClient, args: argparse.Namespace) -> int:
    """The interrupted upload of FILE (its COS parts aborted, its resume state forgotten) or the one of
    ``--upload-id``: the API is told, so it frees the intent's slot and attributes no file to it any more."""
    if args.upload_id is not None:
        upload_id: str | None = args.upload_id
        api.cancel_upload(args.upload_id)
    else:
        signer = ApiSigner(api)
        uploader = Uploader(signer, state_dir=args.state_dir, network=Network(emulator=args.emulator))
        upload_id = uploader.discard(args.file, args.cover)
    if args.json:
        print(json.dumps({"uploadId": upload_id, "status": "cancelled"}))
    elif upload_id is None:
        print(f"forgot the interrupted upload of {args.file.name} (it was signed for no upload of the API)")
    else:
        print(f"cancelled upload {upload_id}" + (f" of {args.file.name}" if args.file else ""))
    return 0


def list_videos(api: ApiClient, as_json: bool) -> int:
    """Prints each page as it arrives, so memory holds one page however many there are; a failure on a later
    page leaves the earlier ones printed (and the JSON list unclosed) and exits non-zero."""
    count = 0
    for video in api.videos():
        if as_json:
            print("[" if count == 0 else ",", json.dumps(video), end="", sep="")
        else:
            print(f"{video['fileId']}\t{video.get('title') or '-'}\t{video.get('size')} B\t{video.get('mediaUrl')}")
        count += 1
    if as_json:
        print("]" if count else "[]")
    elif not count:
        print("no videos yet", file=sys.stderr)
    return 0
