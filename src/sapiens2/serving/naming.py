"""Where each input's outputs go: the input's path below its root, without extension, inside the output folder.

Two inputs can map to the same base: ``a/x.jpg`` and ``b/x.jpg`` given as files (both ``x``), or ``x.jpg`` and
``x.png`` in one folder. The first keeps the plain base; a later one gets its extension appended (``x_png``),
then a counter (``x_2``) if that is taken too. The order of inputs is deterministic, so a re-run maps every input
to the same base. Comparison ignores case, so outputs do not clash on case-insensitive file systems either.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sapiens2.io import InputItem

logger = logging.getLogger(__name__)


def output_bases(items: Sequence[InputItem], output_dir: Path) -> list[Path]:
    """One output base path per input, unique across all inputs (see the module doc)."""
    used: set[str] = set()
    bases: list[Path] = []
    for item in items:
        relative = item.relative
        plain = output_dir / relative.parent / relative.stem
        candidates = [plain, plain.with_name(f"{relative.stem}_{relative.suffix.lstrip('.').lower()}")]
        base = next((c for c in candidates if str(c).casefold() not in used), None)
        counter = 2
        while base is None:
            candidate = plain.with_name(f"{relative.stem}_{counter}")
            if str(candidate).casefold() not in used:
                base = candidate
            counter += 1
        if base != plain:
            logger.info("output name clash: %s writes to %s.*", item.path, base)
        used.add(str(base).casefold())
        bases.append(base)
    return bases
