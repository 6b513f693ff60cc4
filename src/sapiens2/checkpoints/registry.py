"""The published Sapiens2 checkpoints: name -> Hugging Face repo, file, task, arch, tokenizer, input size.

Published weights are data, not code paths (the idea of timm's pretrained configs): loading code looks an
entry up here and never branches on a model name.

Evidence for the names:
- Repos ``facebook/sapiens2-<task>-<size>``: the official ``docs/MODEL_ZOO.md`` (github
  facebookresearch/sapiens2) links exactly these repos: pretrain 0.1b/0.4b/0.8b/1b/1b-4k/5b and
  pose/seg/normal/pointmap at 0.4b/0.8b/1b/5b; matting (1b only) was added upstream in commit ebfe95a
  (docs/official-facts.md §1).
- Files ``sapiens2_<size>_<task>.safetensors``: the official README's checkpoint tree lists
  ``pretrain/sapiens2_{0.1b,0.4b,0.8b,1b,5b}_pretrain.safetensors``, ``sapiens2_1b_4k_pretrain.safetensors``,
  ``<task>/sapiens2_{0.4b,0.8b,1b,5b}_<task>.safetensors`` for pose, seg, normal, pointmap and
  ``matting/sapiens2_1b_matting.safetensors``; the Hugging Face model cards say the same ("File:
  sapiens2_1b_pretrain.safetensors" on facebook/sapiens2-pretrain-1b, "sapiens2_1b_pose.safetensors" on
  facebook/sapiens2-pose-1b, ``hf_hub_download(repo_id="facebook/sapiens2-pretrain-5b",
  filename="sapiens2_5b_pretrain.safetensors")`` on the 5b card).
- Input sizes: every model is trained at 1024x768 (H x W) except Sapiens2-1B (4K), trained at 4096x3072
  with ``use_tokenizer=True`` (official README, model card section).
- Albedo: the official repo has albedo configs but no released checkpoint (docs/official-facts.md §1).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import CheckpointError, ModelNotAvailableError
from ..models.heads.task_table import TASK_TABLE, task_aliases

HF_ORG = "facebook"
# "pretrain" (the bare backbone) is a checkpoint kind, not a head task, so it is named here and not in the task table.
TASKS = ("pretrain",) + tuple(spec.name for spec in TASK_TABLE if spec.published)
UNPUBLISHED_TASKS = tuple(spec.name for spec in TASK_TABLE if not spec.published)
SIZES = ("0.1b", "0.4b", "0.8b", "1b", "5b")
STANDARD_INPUT_SIZE = (1024, 768)  # (H, W)
INPUT_SIZE_4K = (4096, 3072)

_TASK_ALIASES = {**task_aliases(), "pretrained": "pretrain", "backbone": "pretrain"}


@dataclass(frozen=True)
class PublishedModel:
    """One released checkpoint. ``input_size`` is (H, W), the size the model was trained at."""

    name: str
    task: str
    size: str
    repo_id: str
    filename: str
    arch: str
    use_tokenizer: bool = False
    input_size: tuple[int, int] = STANDARD_INPUT_SIZE

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"

    @property
    def download_command(self) -> str:
        return f"hf download {self.repo_id} {self.filename}"


def _entry(task: str, size: str) -> PublishedModel:
    four_k = size.endswith("-4k")
    base_size = size.removesuffix("-4k")
    return PublishedModel(
        name=f"sapiens2-{task}-{size}",
        task=task,
        size=size,
        repo_id=f"{HF_ORG}/sapiens2-{task}-{size}",
        filename=f"sapiens2_{size.replace('-', '_')}_{task}.safetensors",
        arch=f"sapiens2_{base_size}",
        use_tokenizer=four_k,
        input_size=INPUT_SIZE_4K if four_k else STANDARD_INPUT_SIZE,
    )


_PUBLISHED_SIZES = {
    "pretrain": ("0.1b", "0.4b", "0.8b", "1b", "1b-4k", "5b"),
    "pose": ("0.4b", "0.8b", "1b", "5b"),
    "seg": ("0.4b", "0.8b", "1b", "5b"),
    "normal": ("0.4b", "0.8b", "1b", "5b"),
    "pointmap": ("0.4b", "0.8b", "1b", "5b"),
    "matting": ("1b",),
}

PUBLISHED_MODELS: dict[str, PublishedModel] = {
    e.name: e for e in (_entry(task, size) for task, sizes in _PUBLISHED_SIZES.items() for size in sizes)
}


def list_models(task: str | None = None) -> list[str]:
    """Canonical names of the published models, optionally of one task."""
    return [n for n, e in PUBLISHED_MODELS.items() if task is None or e.task == task]


def resolve_model_name(name: str, task: str | None = None, default_task: str | None = None) -> PublishedModel:
    """Find the published model a name refers to.

    Accepts the canonical name (``sapiens2-pose-1b``), the repo id (``facebook/sapiens2-pose-1b``), the
    official file stem (``sapiens2_1b_pose``) and short forms (``pose-1b``, ``1b-pose``, ``1b-4k``, or
    ``0.4b`` together with ``task``). A name without a task takes ``task``, else ``default_task``.
    Raises :class:`ModelNotAvailableError` for a task or size that exists but was never published (albedo,
    pose-0.1b) and :class:`CheckpointError` for a name that means nothing.
    """
    task_hint = _normalise_task(task) if task else None
    text = str(name).strip().lower()
    text = text.removeprefix(f"{HF_ORG}/").removesuffix(".safetensors")
    tokens = [t for t in re.split(r"[\s/_-]+", text) if t]
    if tokens and tokens[0] in ("sapiens2", "sapiens"):
        tokens = tokens[1:]
    found_task, size, four_k, rest = None, None, False, []
    for tok in tokens:
        t = _TASK_ALIASES.get(tok, tok)
        if t in TASKS or t in UNPUBLISHED_TASKS:
            if found_task is not None:
                rest.append(tok)
            found_task = t
        elif t in SIZES and size is None:
            size = t
        elif t == "4k":
            four_k = True
        else:
            rest.append(tok)
    if not rest and (found_task or task_hint) in UNPUBLISHED_TASKS:
        raise ModelNotAvailableError(
            f"Sapiens2 {found_task or task_hint} has no public checkpoint (the official repo ships configs "
            "only). Train one, or pass a local checkpoint file."
        )
    if rest or size is None:
        raise CheckpointError(
            f"{name!r} is neither an existing file nor a published model name. Published models: "
            f"{', '.join(PUBLISHED_MODELS)} (short forms like 'pose-1b' or '0.4b' with a task also work)"
        )
    if task_hint and found_task and task_hint != found_task:
        raise CheckpointError(f"model name {name!r} is a {found_task} model, but task {task_hint!r} was asked for")
    found_task = found_task or task_hint or (_normalise_task(default_task) if default_task else None)
    if found_task is None:
        raise CheckpointError(f"model name {name!r} has no task; say which, e.g. 'pose-{size}' or "
                              f"'pretrain-{size}'")
    if found_task in UNPUBLISHED_TASKS:
        raise ModelNotAvailableError(f"Sapiens2 {found_task} has no public checkpoint; pass a local checkpoint file")
    key = f"sapiens2-{found_task}-{size}{'-4k' if four_k else ''}"
    if key not in PUBLISHED_MODELS:
        raise ModelNotAvailableError(
            f"there is no published {key} checkpoint; published {found_task} models: "
            f"{', '.join(list_models(found_task))}"
        )
    return PUBLISHED_MODELS[key]


def _normalise_task(task: str) -> str:
    t = str(task).strip().lower()
    t = _TASK_ALIASES.get(t, t)
    if t not in TASKS and t not in UNPUBLISHED_TASKS:
        raise CheckpointError(f"unknown task {task!r}; known: {', '.join(TASKS + UNPUBLISHED_TASKS)}")
    return t
