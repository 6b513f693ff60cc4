"""Option spellings and error reporting shared by the sub-commands, so that each option reads and fails alike
everywhere (``--input-size HxW``, ``--dtype``, ``--progress``, ``sapiens2 <command>: error: ...``)."""
from __future__ import annotations

import argparse
import sys

from sapiens2.errors import UsageError

PATCH = 16  # every Sapiens2 backbone cuts its input into 16x16 patches
DTYPES = ("float32", "bfloat16", "float16")
# train/eval/pretrain configs speak in short precision names; --dtype is the one spelling on the command line
PRECISION_OF_DTYPE = {"auto": "auto", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def error(command: str, message: str) -> None:
    """One error line, the same prefix as argparse's own errors for the sub-command."""
    print(f"sapiens2 {command}: error: {message}", file=sys.stderr)


def parse_hw(text: str | None, option: str = "--input-size") -> tuple[int, int] | None:
    """``HxW`` (e.g. 1024x768) -> (H, W), both positive multiples of the 16-pixel patch."""
    if text is None:
        return None
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        height, width = (int(v) for v in parts)
    except ValueError:
        raise UsageError(f"{option} must look like HxW, e.g. 1024x768; got {text!r}") from None
    if height < PATCH or width < PATCH or height % PATCH or width % PATCH:
        near = "x".join(str(max(PATCH, round(v / PATCH) * PATCH)) for v in (height, width))
        raise UsageError(f"{option} {text!r}: height and width must be multiples of {PATCH} (the patch size), "
                         f"e.g. {near}")
    return height, width


class _InputSize(argparse.Action):
    """``--input-size HxW``; where the sub-command allows it (no positional inputs), also the older ``H W``."""

    def __call__(self, parser, namespace, values, option_string=None):
        values = values if isinstance(values, list) else [values]
        if len(values) == 2 and all(v.isdigit() for v in values):
            print(f"{parser.prog}: warning: {option_string} H W is deprecated; write "
                  f"{option_string} {values[0]}x{values[1]}", file=sys.stderr)
            text = "x".join(values)
        elif len(values) == 1:
            text = values[0]
        else:
            parser.error(f"{option_string} takes HxW, e.g. 1024x768; got {' '.join(values)!r}")
        try:
            setattr(namespace, self.dest, parse_hw(text, option_string))
        except UsageError as exc:
            parser.error(str(exc))


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows ``--input-size HxW`` as such, also where the deprecated two-number form makes it take 1-2 values."""

    def _format_args(self, action, default_metavar):
        if isinstance(action, _InputSize):
            return action.metavar
        return super()._format_args(action, default_metavar)


def add_input_size(p, *names: str, default=None, help: str, two_numbers: bool = False, dest: str = "input_size"):
    """The input-size option, parsed to (H, W) (or None). ``two_numbers``: also accept the deprecated ``H W``
    (only for sub-commands without positional arguments, which a two-value option could swallow)."""
    p.add_argument(*(names or ("--input-size",)), dest=dest, action=_InputSize, nargs="+" if two_numbers else None,
                   default=parse_hw(default), metavar="HxW", help=help)


def add_dtype(p, default: str, allow_auto: bool = False, precision_alias: bool = False, help: str = ""):
    """``--dtype`` (float32|bfloat16|float16[|auto]); ``--precision`` (fp32|bf16|fp16|auto) kept as an alias."""
    choices = (("auto",) if allow_auto else ()) + DTYPES
    p.add_argument("--dtype", choices=choices, default=default, help=help or f"compute dtype (default {default})")
    if precision_alias:
        inverse = {v: k for k, v in PRECISION_OF_DTYPE.items()}
        p.add_argument("--precision", dest="dtype", type=lambda s: inverse.get(s, s),
                       choices=[c for c in choices], help=argparse.SUPPRESS)


def add_progress(p) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")


def progress_enabled(flag: bool | None) -> bool:
    """Progress bars only on a terminal unless asked: in logs and pipes they are noise."""
    return sys.stderr.isatty() if flag is None else bool(flag)
